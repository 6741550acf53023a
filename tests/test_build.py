"""The build CLI: deterministic output, `--check` for CI, clear errors on bad arguments."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from cfn_tools import load_yaml
from cfnlint.decode import cfn_yaml

import build_template

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "build_template.py", *args], cwd=cwd,
                          capture_output=True, text=True)


def test_two_builds_give_the_same_bytes_so_dist_diffs_show_only_real_changes():
    assert build_template.render() == build_template.render()


def test_committed_dist_matches_the_source_as_ci_checks():
    result = run("--check")
    assert result.returncode == 0, result.stderr


def test_check_names_each_stale_file_and_exits_1(tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__",
                                                              ".pytest_cache"))
    (copy / "dist" / "template.yaml").write_text("stale\n", encoding="utf-8")
    result = run("--check", cwd=copy)
    assert result.returncode == 1
    assert "dist/template.yaml" in result.stderr
    assert "dist/template.json" not in result.stderr


def test_build_writes_both_files_and_reports_sizes_and_resource_count(tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__",
                                                              ".pytest_cache", "dist"))
    result = run(cwd=copy)
    assert result.returncode == 0, result.stderr
    for name in ("template.json", "template.yaml"):
        size = (copy / "dist" / name).stat().st_size
        assert f"dist/{name}: {size:,} bytes" in result.stdout
    assert " resources, built in " in result.stdout
    assert run("--check", cwd=copy).returncode == 0


def test_help_describes_the_options():
    result = run("--help")
    assert result.returncode == 0
    assert "--check" in result.stdout


def test_unknown_argument_is_a_clear_error_with_exit_code_2():
    result = run("--chekc")
    assert result.returncode == 2
    assert "unrecognized arguments: --chekc" in result.stderr


# --- the deploy file ---------------------------------------------------------------------------

def _plain(value):
    return json.loads(json.dumps(value))


def test_deploy_yaml_reads_back_as_the_json_template():
    # The YAML CloudFormation deploys and the JSON reviewers' tools read are one template, as
    # both cfn-flip's and cfn-lint's YAML readers see it.
    files = build_template.render()
    expected = json.loads(files[build_template.JSON_FILE])
    assert _plain(load_yaml(files[build_template.DEPLOY_FILE])) == expected
    assert _plain(cfn_yaml.loads(files[build_template.DEPLOY_FILE])) == expected


def test_deploy_file_is_ordinary_cloudformation_yaml_with_short_form_intrinsics():
    deploy = build_template.render()[build_template.DEPLOY_FILE]
    assert deploy.startswith("AWSTemplateFormatVersion: '2010-09-09'\n")
    assert "!Ref " in deploy and "!GetAtt " in deploy and "!Sub " in deploy
    assert '"Fn::' not in deploy and "Fn::" not in deploy  # no long-form intrinsics
    # Block style: one property per line, so a diff shows which property changed.
    lines = deploy.splitlines()
    assert "    Type: AWS::SQS::Queue" in lines
    assert "      VisibilityTimeout: 180" in lines


def test_deploy_file_fits_cloudformations_limit_and_the_build_says_so():
    files = build_template.render()
    assert build_template.check_size(files) <= build_template.DEPLOY_LIMIT_BYTES == 1_048_576


def test_a_deploy_file_over_the_limit_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setattr(build_template, "DEPLOY_LIMIT_BYTES", 1000)
    assert build_template.main(["--check"]) == 2
    err = capsys.readouterr().err
    assert "dist/template.yaml is" in err and "over the 1,000 bytes CloudFormation accepts" in err


def test_the_build_ignores_cfn_flips_line_width_variable():
    # cfn-flip reads CFN_MAX_COL_WIDTH at import: a builder's environment must not change bytes.
    result = subprocess.run([sys.executable, "build_template.py", "--check"], cwd=ROOT,
                            capture_output=True, text=True,
                            env={**os.environ, "CFN_MAX_COL_WIDTH": "40"})
    assert result.returncode == 0, result.stderr
