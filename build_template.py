#!/usr/bin/env python3
"""Generate the order-confirmation email stack's CloudFormation template.

    python build_template.py            write dist/template.json and dist/template.yaml
    python build_template.py --check    exit 1 if dist/ differs from what the source generates

The output is byte-identical on every run (sorted keys, no timestamps), so `dist/` is reviewed in
pull requests and CI guards it with `--check`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from cfn_flip import to_yaml

import infra

ROOT = Path(__file__).resolve().parent
DIST = ROOT / "dist"
DEPLOY_FILE = "dist/template.json"
DEPLOY_LIMIT_BYTES = 51_200  # what `aws cloudformation deploy` accepts without --s3-bucket


def render() -> dict[str, str]:
    """Every generated file, by path relative to the repository root.

    `template.json` is compact: it is the file `aws cloudformation deploy` sends (at most 51,200
    bytes without an S3 bucket). `template.yaml` is the same template laid out for review.
    """
    template = infra.build()
    as_json = template.to_json(indent=None, sort_keys=True, separators=(",", ":")) + "\n"
    return {
        DEPLOY_FILE: as_json,
        "dist/template.yaml": to_yaml(as_json, clean_up=False, long_form=False),
    }


def stale_files(files: dict[str, str]) -> list[str]:
    stale = []
    for relative, content in files.items():
        path = ROOT / relative
        if not path.exists() or path.read_text(encoding="utf-8") != content:
            stale.append(relative)
    return stale


def write(files: dict[str, str]) -> None:
    for relative, content in files.items():
        path = ROOT / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")


def resource_count(files: dict[str, str]) -> int:
    return len(json.loads(files[DEPLOY_FILE])["Resources"])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Generate dist/template.json and dist/template.yaml from infra/ and "
                    "handlers/.",
    )
    parser.add_argument(
        "--check", action="store_true",
        help="write nothing; exit 1 and name each file in dist/ that is out of date",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    files = render()
    if args.check:
        stale = stale_files(files)
        for relative in stale:
            print(f"stale: {relative} differs from what build_template.py generates",
                  file=sys.stderr)
        if stale:
            print("run `python build_template.py` and commit dist/", file=sys.stderr)
            return 1
        print(f"ok: dist/ is up to date ({len(files)} files)")
        return 0

    write(files)
    for relative, content in files.items():
        size = len(content.encode("utf-8"))
        note = ""
        if relative == DEPLOY_FILE:
            note = f"  (deploy file; limit {DEPLOY_LIMIT_BYTES:,})"
        print(f"wrote {relative}: {size:,} bytes{note}")
    print(f"{resource_count(files)} resources, built in {time.perf_counter() - started:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
