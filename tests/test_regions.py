"""Which regions the stack deploys in, recomputed from cfn-lint's own per-region resource types.

The facts change as AWS adds resource types to regions, and cfn-lint ships them: when an upgrade
changes them, these tests fail and say what to update (`settings.BUDGET_REGIONS`, the README).
"""

from __future__ import annotations

import re
from pathlib import Path

from conftest import commercial_regions_with
from infra import settings

ROOT = Path(__file__).resolve().parent.parent
REGIONS_PARAGRAPH = "**Regions.**"  # the README paragraph that names them


def _ses_regions_without_budgets() -> list[str]:
    return [region for region in commercial_regions_with("AWS::SES::ConfigurationSet")
            if region not in settings.BUDGET_REGIONS]


def test_budget_regions_are_the_commercial_regions_whose_cloudformation_has_budgets():
    expected = sorted(commercial_regions_with("AWS::Budgets::Budget"))
    assert sorted(settings.BUDGET_REGIONS) == expected, (
        "cfn-lint's region data changed: set infra/settings.py BUDGET_REGIONS to "
        f"{expected} and update the regions README.md names (Deploy)")


def test_readme_deploy_section_names_exactly_the_ses_regions_without_a_budget():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    deploy = readme.split("\n## Deploy\n", 1)[1].split("\n## ", 1)[0]
    paragraph = deploy[deploy.index(REGIONS_PARAGRAPH):].split("\n\n", 1)[0]
    named = re.findall(r"`([a-z]{2}-[a-z]+-\d)`", paragraph)
    assert sorted(named) == sorted(_ses_regions_without_budgets())
