#!/usr/bin/env python3
"""Generate the order-confirmation email stack's CloudFormation template and the docs derived
from it.

    python build_template.py            write dist/ and the generated sections of README.md
    python build_template.py --check    exit 1 if any of them differs from what the source generates
    python build_template.py --cost     print the monthly cost estimate of dist/template.json

The output is byte-identical on every run (sorted keys, no timestamps), so `dist/` is reviewed in
pull requests and CI guards it with `--check`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# cfn-flip reads its line width from this variable when it is imported; the deploy file must not
# depend on the environment of whoever builds it.
os.environ.pop("CFN_MAX_COL_WIDTH", None)

import cfn_flip  # noqa: E402  (after the line above, on purpose)

import infra  # noqa: E402
from infra import cost, docs  # noqa: E402
from simulation import capacity  # noqa: E402  (the capacity model: standard library only)

ROOT = Path(__file__).resolve().parent
DEPLOY_FILE = "dist/template.yaml"
JSON_FILE = "dist/template.json"
# CloudFormation's limit for a template it reads from S3: `aws cloudformation deploy --s3-bucket`
# uploads it there, and the README always deploys through a bucket.
DEPLOY_LIMIT_BYTES = 1_048_576
README = "README.md"
DIAGRAM = "dist/architecture.mmd"
README_COST_VOLUMES = (2_000, 20_000)


def render() -> dict[str, str]:
    """Every generated file, by path relative to the repository root.

    `template.yaml` is the deploy file: CloudFormation YAML as cfn-flip writes it (block style,
    short-form intrinsic functions, the handlers' code as literal blocks). `template.json` is the
    same template as indented JSON, for tools that read JSON.
    """
    as_json = infra.build().to_json(indent=1, sort_keys=True) + "\n"
    template = json.loads(as_json)
    diagram = docs.architecture_mermaid(template)
    return {
        JSON_FILE: as_json,
        DEPLOY_FILE: cfn_flip.to_yaml(as_json),
        DIAGRAM: diagram,
        README: render_readme((ROOT / README).read_text(encoding="utf-8"), template, diagram),
    }


def render_readme(text: str, template: dict, diagram: str) -> str:
    """README.md with its generated sections rebuilt from `template`."""
    sections = {
        "parameters": docs.parameters_table(template),
        "outputs": docs.outputs_table(template),
        "architecture": f"```mermaid\n{diagram}```",
        "capacity": capacity.markdown_table(template),
    }
    for volume in README_COST_VOLUMES:
        estimate = cost.estimate(template, cost.Assumptions(emails_per_day=volume))
        sections[f"cost-{volume}"] = cost.markdown_table(estimate)
    for name, body in sections.items():
        text = docs.replace_section(text, name, body)
    return text


class TooLarge(ValueError):
    """The deploy file is larger than CloudFormation accepts."""


def check_size(files: dict[str, str]) -> int:
    """The deploy file's size in bytes; TooLarge above CloudFormation's limit."""
    size = len(files[DEPLOY_FILE].encode("utf-8"))
    if size > DEPLOY_LIMIT_BYTES:
        raise TooLarge(
            f"{DEPLOY_FILE} is {size:,} bytes, over the {DEPLOY_LIMIT_BYTES:,} bytes CloudFormation "
            "accepts for a template, even through an S3 bucket: move code or data out of the "
            "template before deploying")
    return size


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
    return len(json.loads(files[JSON_FILE])["Resources"])


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Generate dist/template.yaml (the deploy file), dist/template.json (the same "
                    "as indented JSON), dist/architecture.mmd and the generated sections of "
                    "README.md.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--check", action="store_true",
        help="write nothing; exit 1 and name each generated file that is out of date",
    )
    mode.add_argument(
        "--cost", action="store_true",
        help=f"print the monthly cost estimate of {JSON_FILE} (free tier excluded)",
    )
    parser.add_argument(
        "--emails-per-day", type=positive_int, default=cost.Assumptions.emails_per_day,
        metavar="N", help="volume for --cost (default %(default)s)",
    )
    return parser.parse_args(argv)


def print_cost(emails_per_day: int) -> int:
    path = ROOT / JSON_FILE
    if not path.exists():
        print(f"error: {JSON_FILE} does not exist; run `python build_template.py` first",
              file=sys.stderr)
        return 2
    template = json.loads(path.read_text(encoding="utf-8"))
    print(cost.report(cost.estimate(template, cost.Assumptions(emails_per_day=emails_per_day))),
          end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cost:
        return print_cost(args.emails_per_day)
    started = time.perf_counter()
    try:
        files = render()
        check_size(files)
    except (docs.MissingMarker, TooLarge) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        stale = stale_files(files)
        for relative in stale:
            print(f"stale: {relative} differs from what build_template.py generates",
                  file=sys.stderr)
        if stale:
            print("run `python build_template.py` and commit the result", file=sys.stderr)
            return 1
        print(f"ok: {len(files)} generated files are up to date")
        return 0

    write(files)
    for relative, content in files.items():
        size = len(content.encode("utf-8"))
        note = ""
        if relative == DEPLOY_FILE:
            note = (f"  (deploy file: {size / DEPLOY_LIMIT_BYTES:.1%} of the "
                    f"{DEPLOY_LIMIT_BYTES:,} bytes CloudFormation accepts through an S3 bucket)")
        print(f"wrote {relative}: {size:,} bytes{note}")
    print(f"{resource_count(files)} resources, built in {time.perf_counter() - started:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
