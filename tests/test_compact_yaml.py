"""The deploy file is the same template as the JSON, as CloudFormation's YAML readers see it."""

from __future__ import annotations

import json

import pytest
from cfn_tools import load_yaml
from cfnlint.decode import cfn_yaml

import build_template
from infra import compact_yaml


@pytest.fixture(scope="module")
def files() -> dict[str, str]:
    return build_template.render()


def _plain(value):
    return json.loads(json.dumps(value))


def test_deploy_yaml_reads_back_as_the_json_template(files):
    assert _plain(load_yaml(files[build_template.DEPLOY_FILE])) == json.loads(
        files[build_template.JSON_FILE])


def test_cfn_lint_reads_the_deploy_yaml_as_the_same_template(files):
    assert _plain(cfn_yaml.loads(files[build_template.DEPLOY_FILE])) == json.loads(
        files[build_template.JSON_FILE])


def test_one_property_per_line_so_a_diff_shows_which_property_changed(files):
    lines = files[build_template.DEPLOY_FILE].splitlines()
    assert "  Type: AWS::SQS::Queue" in lines
    assert "   VisibilityTimeout: 180" in lines


@pytest.mark.parametrize("value", [
    "true", "False", "yes", "No", "on", "OFF", "null", "~", "y", "N",  # YAML 1.1 booleans, null
    "2010-09-09", "12", "1.5", "-3", ".5", ".inf", "0x1F", "1e3", "1_000",  # numbers, dates
    "", " lead", "trail ", "a: b", "a #b", "key:", "- item", "*alias", "&anchor", "!tag",
    "%x", "@x", "`x", "'quoted'", '"double"', "a,b", "{x}", "[x]", "what?", "it's",
    "line\nbreak", "tab\there", "back\\slash", "unicode é →", "${AWS::Region}",
    "arn:${AWS::Partition}:sqs:*", "Order email alarms", "/aws/lambda/x",
])
def test_every_tricky_string_reads_back_unchanged(value):
    template = {"Outputs": {"X": {"Value": value, "List": [value, {"k": value}]}},
                "Resources": {"R": {"Properties": {value or "empty": value}}}}
    assert _plain(load_yaml(compact_yaml.dumps(template))) == template


def test_intrinsic_functions_use_the_short_forms():
    text = compact_yaml.dumps({"A": {"B": {"C": {"D": {"Ref": "X"}, "E": {
        "Fn::GetAtt": ["Y", "Arn"]}, "F": {"Fn::Sub": "${X}-y"}}}}})
    assert "D: !Ref X" in text
    assert "E: !GetAtt Y.Arn" in text
    assert "F: !Sub '${X}-y'" in text
