"""The code deployed is the code reviewed: each function's ZipFile is its handler file, byte for
byte, in both generated templates. And the handlers read like prose, not like a puzzle."""

from __future__ import annotations

import ast
import io
import json
import tokenize

import pytest
from cfn_tools import load_yaml

import build_template
from infra.code import handler_path
from infra.functions import HANDLER_FILES

HANDLERS = sorted(set(HANDLER_FILES.values()))


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict]:
    """Both generated templates as CloudFormation reads them."""
    files = build_template.render()
    return {
        "yaml": json.loads(json.dumps(load_yaml(files[build_template.DEPLOY_FILE]))),
        "json": json.loads(files[build_template.JSON_FILE]),
    }


@pytest.mark.parametrize("form", ["yaml", "json"])
@pytest.mark.parametrize("function, handler", sorted(HANDLER_FILES.items()))
def test_zipfile_is_the_handler_file_byte_for_byte(rendered, form, function, handler):
    # GIVEN the template as CloudFormation reads it WHEN we take the function's ZipFile
    code = rendered[form]["Resources"][function]["Properties"]["Code"]["ZipFile"]
    # THEN it is exactly the file in handlers/, comments and docstrings included
    assert code.encode("utf-8") == handler_path(handler).read_bytes()


def test_every_function_embeds_a_handler_file(rendered):
    functions = {name for name, resource in rendered["json"]["Resources"].items()
                 if resource["Type"] == "AWS::Lambda::Function"}
    assert functions == set(HANDLER_FILES)


def test_handler_code_is_a_readable_literal_block_in_the_deploy_file():
    # A reviewer reads the code in the pull request's YAML diff as it stands in handlers/.
    deploy = build_template.render()[build_template.DEPLOY_FILE]
    for handler in HANDLERS:
        first_line = handler_path(handler).read_text(encoding="utf-8").splitlines()[0]
        assert f"ZipFile: |\n          {first_line}\n" in deploy, handler


def _tokens(handler: str) -> list[tokenize.TokenInfo]:
    source = handler_path(handler).read_text(encoding="utf-8")
    return list(tokenize.generate_tokens(io.StringIO(source).readline))


@pytest.mark.parametrize("handler", HANDLERS)
def test_no_handler_line_joins_statements_with_a_semicolon(handler):
    joined = [token.start[0] for token in _tokens(handler)
              if token.type == tokenize.OP and token.string == ";"]
    assert joined == [], f"{handler}.py lines {joined}"


@pytest.mark.parametrize("handler", HANDLERS)
def test_no_handler_multiplies_a_sequence_by_a_boolean_or_splits_a_string_into_a_table(handler):
    # The code-golf idioms the first version used: `'text' * flag`, `[x] * flag`, and tables
    # encoded in strings then taken apart with `.split()` / `.partition()`.
    tree = ast.parse(handler_path(handler).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
            operands = (node.left, node.right)
            assert not any(isinstance(o, (ast.Constant, ast.List)) and not isinstance(
                getattr(o, "value", None), (int, float)) for o in operands), ast.unparse(node)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            receiver = node.func.value
            if node.func.attr in ("split", "partition") and isinstance(receiver, (
                    ast.Constant, ast.BinOp, ast.Subscript)):
                pytest.fail(f"{handler}.py line {node.lineno}: a table encoded in a string: "
                            f"{ast.unparse(node)}")


@pytest.mark.parametrize("handler", HANDLERS)
def test_every_function_of_a_handler_has_a_docstring(handler):
    tree = ast.parse(handler_path(handler).read_text(encoding="utf-8"))
    assert ast.get_docstring(tree), f"{handler}.py has no module docstring"
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("__"):
            assert ast.get_docstring(node), f"{handler}.py: {node.name} has no docstring"


@pytest.mark.parametrize("handler", HANDLERS)
def test_handlers_are_plain_stdlib_and_boto3_modules(handler):
    tree = ast.parse(handler_path(handler).read_text(encoding="utf-8"))
    allowed = {"base64", "binascii", "decimal", "datetime", "hashlib", "html", "json", "math",
               "os", "re", "time", "uuid", "boto3", "botocore", "email", "itertools",
               "functools", "typing", "dataclasses", "collections", "traceback", "unicodedata",
               "__future__", "string", "secrets", "random", "logging", "sys"}
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        for name in names:
            assert name.split(".")[0] in allowed, name


@pytest.mark.parametrize("handler", HANDLERS)
def test_handler_files_render_cleanly_as_yaml_literal_blocks(handler):
    # No tab, no trailing whitespace, one final newline: otherwise YAML cannot keep the code as a
    # literal block and falls back to one long quoted string.
    source = handler_path(handler).read_text(encoding="utf-8")
    for number, line in enumerate(source.splitlines(), start=1):
        assert "\t" not in line and line == line.rstrip(), f"{handler}.py line {number}"
    assert source.endswith("\n") and not source.endswith("\n\n")
