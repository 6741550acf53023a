#!/usr/bin/env python3
"""Run the order-confirmation pipeline end to end, locally, from the generated template.

    python simulate.py [--scenario NAME] [--orders 2000] [--seed 1] [--faults 0.1] [--json]

It checks three claims that a template alone cannot show: no email sent twice, no order lost,
every email tracked to its final status. This file only parses the arguments and prints the
report; the simulation itself is the `simulation` package (its docstring tells the story).

Exit codes: 0 all invariants hold, 1 an invariant broke (named on stderr), 2 bad arguments or a
template that cannot be simulated.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import types
from pathlib import Path
from typing import Callable

from simulation import DEFAULT_TEMPLATE, INVARIANTS, Progress, TemplateError, format_report, run
from simulation.scenarios import DEFAULT_SCENARIO, SCENARIOS


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, not {text!r}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a fraction from 0 to 1, not {text!r}")
    return value


def _parameter(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"must look like Name=Value, not {text!r}")
    return name, value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    scenarios = "\n".join(f"  {name:16} {scenario.summary}"
                           for name, scenario in SCENARIOS.items())
    parser = argparse.ArgumentParser(
        prog="simulate.py",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"scenarios (--scenario NAME):\n{scenarios}",
        description="Run the order-confirmation pipeline end to end, locally under moto, from the "
                    "generated template, with faults; exit 1 if an email is sent twice, an order "
                    "is lost or an email is not tracked to its final status.",
    )
    parser.add_argument("--scenario", choices=list(SCENARIOS), default=DEFAULT_SCENARIO,
                        metavar="NAME",
                        help=f"what happens to the stack during the run, listed below "
                             f"({DEFAULT_SCENARIO})")
    parser.add_argument("--orders", type=_count, default=200, help="orders to publish (200)")
    parser.add_argument("--seed", type=int, default=None,
                        help="random seed: the same seed repeats the run (default: a random one, "
                             "printed in the report)")
    parser.add_argument("--faults", type=_fraction, default=0.0, metavar="RATE",
                        help="probability of SES throttling and of a DynamoDB error per call; "
                             "the send function crashes after an accepted send at RATE/2 (0)")
    parser.add_argument("--duplicates", type=_fraction, default=0.1, metavar="FRACTION",
                        help="share of valid orders published 2-3 times (0.1)")
    parser.add_argument("--invalid", type=_fraction, default=0.05, metavar="FRACTION",
                        help="share of orders that break the order contract (0.05)")
    parser.add_argument("--feedback-duplicates", type=_fraction, default=0.1, metavar="FRACTION",
                        help="share of SES events published twice, the copy up to 10 min late "
                             "(0.1)")
    parser.add_argument("--no-redrive", dest="redrive", action="store_false",
                        help="do not play the runbook's redrive of the DLQs once the run settles "
                             "(the report then shows what waits in them)")
    parser.add_argument("--workers", type=_count, default=2,
                        help="split the orders over this many copies of the stack, one process "
                             "each (moto is single-threaded; 2 uses both cores of a small "
                             "machine). A run repeats with the same --seed and --workers (2)")
    parser.add_argument("--template", type=Path, default=DEFAULT_TEMPLATE, metavar="PATH",
                        help="template to simulate (dist/template.json)")
    parser.add_argument("--param", type=_parameter, action="append", default=[],
                        metavar="NAME=VALUE", help="override a template parameter (repeatable)")
    parser.add_argument("--json", action="store_true",
                        help="print the report as one JSON object instead of a table")
    return parser.parse_args(argv)


def _display_path(path: Path) -> str:
    """`path` relative to the working directory when it is below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None, *,
         on_load: Callable[[str, types.ModuleType], None] | None = None) -> int:
    args = parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 100000)
    try:
        report = run(args.template, orders=args.orders, seed=seed, scenario=args.scenario,
                     faults=args.faults,
                     duplicates=args.duplicates, invalid=args.invalid,
                     feedback_duplicates=args.feedback_duplicates, parameters=dict(args.param),
                     redrive=args.redrive, workers=args.workers, progress=Progress(sys.stderr),
                     on_load=on_load)
    except TemplateError as exc:
        print(f"simulate.py: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report))
    else:
        print(format_report(report, _display_path(args.template)))
    for name, _, meaning in INVARIANTS:
        if name in report["invariants_broken"]:
            print(f"simulate.py: FAIL: invariant {name} broken: {name} = {report[name]} "
                  f"({meaning})", file=sys.stderr)
    return 1 if report["invariants_broken"] else 0


if __name__ == "__main__":
    sys.exit(main())
