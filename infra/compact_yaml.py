"""The template as compact, reviewable YAML: the deploy file.

`aws cloudformation deploy` sends at most 51,200 bytes of template without an S3 bucket. YAML with
short-form intrinsic functions (`!Ref X`, `!GetAtt X.Arn`, `!Sub '...'`) is the smallest text
CloudFormation reads, so the deploy file is written like this:

- block mappings down to each resource's properties (one property per line, one space of
  indentation per level), so a pull-request diff shows which property changed;
- each property's value in flow style (`{Key: a,Value: b}`), scalars plain where YAML 1.1 reads
  them back unchanged and quoted otherwise;
- multi-line strings (the handlers' code) as double-quoted scalars with `\\n` escapes.

`tests/test_compact_yaml.py` loads the output with cfn-lint's and cfn-flip's YAML loaders and
checks it is the same template as the JSON.
"""

from __future__ import annotations

import json
import re

INDENT = " "
BLOCK_LEVELS = 4  # sections, their entries (a resource), its attributes, its properties

# YAML 1.1 reads these plain scalars as booleans or null, so strings spelled like them are quoted.
_SPECIAL = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}
_INDICATORS = set("-?:,[]{}#&*!|>'\"%@`")
_NUMBER_LIKE = re.compile(r"[-+.]?[0-9]|\.(inf|nan)", re.IGNORECASE)


def dumps(template: dict) -> str:
    lines: list[str] = []
    _block(template, 0, BLOCK_LEVELS, lines)
    return "\n".join(lines) + "\n"


def _block(mapping: dict, level: int, levels_left: int, lines: list[str]) -> None:
    pad = INDENT * level
    for key, value in mapping.items():
        if isinstance(value, dict) and value and levels_left > 1 and not _is_intrinsic(value):
            lines.append(f"{pad}{_scalar(key, flow=False)}:")
            _block(value, level + 1, levels_left - 1, lines)
        elif isinstance(value, (dict, list)):
            lines.append(f"{pad}{_scalar(key, flow=False)}: {_flow(value)}")
        else:
            lines.append(f"{pad}{_scalar(key, flow=False)}: {_scalar(value, flow=False)}")


def _is_intrinsic(value: dict) -> bool:
    if len(value) != 1:
        return False
    (key,) = value
    return key == "Ref" or key.startswith("Fn::")


def _flow(value) -> str:
    if isinstance(value, dict):
        if _is_intrinsic(value):
            ((key, inner),) = value.items()
            if key == "Ref":
                return f"!Ref {_scalar(inner, flow=True)}"
            if key == "Fn::GetAtt" and isinstance(inner, list):
                return f"!GetAtt {_scalar('.'.join(inner), flow=True)}"
            return f"!{key[4:]} {_flow(inner)}"
        return "{" + ",".join(f"{_scalar(k, flow=True)}: {_flow(v)}"
                              for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_flow(v) for v in value) + "]"
    return _scalar(value, flow=True)


def _scalar(value, *, flow: bool) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if not isinstance(value, str):
        raise TypeError(f"cannot write {type(value).__name__} {value!r} as YAML")
    if _plain_ok(value, flow):
        return value
    if value.isprintable() and "\\" not in value:
        return "'" + value.replace("'", "''") + "'"
    # Line breaks, tabs, control characters, backslashes: a JSON string is a valid YAML
    # double-quoted scalar with the same escapes.
    return json.dumps(value, ensure_ascii=False)


def _plain_ok(text: str, flow: bool) -> bool:
    """Whether `text` can be written unquoted and be read back as this very string."""
    if not text or not text.isprintable() or text != text.strip():
        return False
    if text[0] in _INDICATORS or text.lower() in _SPECIAL or _NUMBER_LIKE.match(text):
        return False
    if ": " in text or " #" in text or text.endswith(":"):
        return False
    if flow and any(c in text for c in ",[]{}:#?"):
        return False
    return True
