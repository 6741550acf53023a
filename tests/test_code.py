"""The ZipFile code in the template is the handler source re-emitted token by token: no comments,
docstrings or optional whitespace, and nothing else changed (same syntax tree)."""

from __future__ import annotations

import ast
import json

import pytest
from cfn_tools import load_yaml

import build_template
from infra.code import compact_source, embedded_code, handler_path, strip_docstrings

FUNCTIONS = {"LambdaSendOrderEmail": "send_order_email",
             "LambdaSesFeedbackProcessor": "ses_feedback_processor"}


@pytest.fixture(scope="module")
def deployed() -> dict:
    """The deploy file (compact YAML) as CloudFormation reads it."""
    return json.loads(json.dumps(load_yaml(build_template.render()[build_template.DEPLOY_FILE])))


@pytest.mark.parametrize("function, handler", FUNCTIONS.items())
def test_zipfile_is_the_stripped_handler_file(deployed, function, handler):
    code = deployed["Resources"][function]["Properties"]["Code"]["ZipFile"]
    assert code == embedded_code(handler)


@pytest.mark.parametrize("handler", FUNCTIONS.values())
def test_stripped_code_has_the_same_syntax_tree_as_the_source_minus_docstrings(handler):
    source = handler_path(handler).read_text(encoding="utf-8")
    expected = ast.dump(strip_docstrings(ast.parse(source)))
    assert ast.dump(ast.parse(embedded_code(handler))) == expected


@pytest.mark.parametrize("handler", FUNCTIONS.values())
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


def test_compaction_keeps_every_token_and_the_strings_comments_cannot_reach():
    source = (
        '"""Module docstring."""\n'
        "import os  # a comment\n"
        "\n"
        "def f(x, *, sep='-'):\n"
        '    """Docstring."""\n'
        "    # only a comment\n"
        '    text = """line one\n'
        "\n"
        '    # not a comment\n"""\n'
        "    parts = [\n"
        '        "a",  # trailing\n'
        "        f\"{x!r}\",\n"
        "    ]\n"
        "    return text + '#' + sep.join(parts) if x else None\n"
    )
    compacted = compact_source(source)
    assert compacted == (
        "import os\n"
        "def f(x,*,sep='-'):\n"
        ' text="""line one\n'
        "\n"
        '    # not a comment\n""";'
        "parts=['a',f\"{x!r}\",];"
        "return text+'#'+sep.join(parts)if x else None\n"
    )
    namespace: dict = {}
    exec(compacted, namespace)
    assert namespace["f"]("y") == "line one\n\n    # not a comment\n#a-'y'"
    assert ast.dump(ast.parse(compacted)) == ast.dump(strip_docstrings(ast.parse(source)))


@pytest.mark.parametrize("literal, expected", [
    ('"plain"', "'plain'"),
    ('b"bytes"', "b'bytes'"),
    ('"it\'s"', '"it\'s"'),          # a quote inside: unchanged
    ('"a\\nb"', '"a\\nb"'),        # an escape inside: unchanged
    ('f"{x}"', 'f"{x}"'),             # f-strings: unchanged on every Python version
    ('"""doc"""', '"""doc"""'),       # triple quotes: unchanged
])
def test_simple_literals_become_single_quoted_because_json_escapes_double_quotes(literal, expected):
    assert compact_source(f"x = {literal}\n") == f"x={expected}\n"


def test_a_body_that_is_only_a_docstring_keeps_it_so_the_code_stays_valid():
    source = 'class Empty:\n    """Nothing else here."""\n'
    assert ast.dump(ast.parse(compact_source(source))) == ast.dump(
        strip_docstrings(ast.parse(source)))


def test_words_stay_apart_and_operators_close_up():
    assert compact_source("y = not x in (1, 2) or 3 if a else -b\n") == (
        "y=not x in(1,2)or 3 if a else-b\n")


def test_only_simple_statements_of_one_block_share_a_line():
    source = (
        "import os\n"
        "x = 1\n"
        "if x: y = 2\n"
        "z = 3\n"
        "for i in ():\n"
        "    a = i\n"
        "    b = i\n"
        "else:\n"
        "    c = 0\n"
        "@staticmethod\n"
        "def g(): pass\n"
        "match = 4\n"
    )
    compacted = compact_source(source)
    assert compacted == (
        "import os;x=1\n"
        "if x:y=2\n"
        "z=3\n"
        "for i in():\n"
        " a=i;b=i\n"
        "else:\n"
        " c=0\n"
        "@staticmethod\n"
        "def g():pass\n"
        "match=4\n"
    )
    assert ast.dump(ast.parse(compacted)) == ast.dump(ast.parse(source))
