"""The build CLI: deterministic output, `--check` for CI, clear errors on bad arguments."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

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
