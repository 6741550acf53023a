"""The generated files pass cfn-lint (errors, warnings and informational checks) and checkov.

cfn-lint runs twice: in us-east-1 with its informational checks, and in every commercial region
that has SES, where a resource type missing from a region is an error (E3006) unless a condition
on `AWS::Region` keeps it out there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import build_template
from conftest import commercial_regions_with

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MAX_CHECKOV_SKIPS = 4  # distinct checks, each justified in the resource's Metadata


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, Path]:
    """The files as the build renders them now (so a stale dist/ cannot hide a lint error)."""
    out = tmp_path_factory.mktemp("dist")
    paths = {}
    for relative, content in build_template.render().items():
        path = out / Path(relative).name
        path.write_text(content, encoding="utf-8")
        paths[path.name] = path
    return paths


@pytest.mark.slow
def test_cfn_lint_reports_nothing_including_informational_checks(rendered):
    result = subprocess.run(
        [str(BIN / "cfn-lint"), "--include-checks", "I", "--",
         str(rendered["template.json"]), str(rendered["template.yaml"])],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


@pytest.mark.slow
def test_cfn_lint_reports_nothing_in_any_commercial_region_that_has_ses(rendered):
    # The regions as cfn-lint's own data has them, so a cfn-lint upgrade that adds an SES region
    # lints it too. One invocation for all of them: about 6 s for both files.
    regions = commercial_regions_with("AWS::SES::ConfigurationSet")
    assert len(regions) >= 20 and "us-east-1" in regions, regions
    result = subprocess.run(
        [str(BIN / "cfn-lint"), "--regions", *regions, "--",
         str(rendered["template.json"]), str(rendered["template.yaml"])],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


@pytest.mark.slow
def test_checkov_finds_no_failed_check_and_every_skip_is_justified(rendered):
    result = subprocess.run(
        [str(BIN / "checkov"), "--framework", "cloudformation", "-f",
         str(rendered["template.json"]), "--skip-download", "--output", "json"],
        capture_output=True, text=True,
    )
    report = json.loads(result.stdout)
    assert report["summary"]["failed"] == 0, report["results"]["failed_checks"]
    assert report["summary"]["parsing_errors"] == 0
    skipped = report["results"].get("skipped_checks", [])
    assert len({check["check_id"] for check in skipped}) <= MAX_CHECKOV_SKIPS
    for check in skipped:
        assert check["check_result"].get("suppress_comment"), check["check_id"]
    assert report["summary"]["passed"] >= 40
