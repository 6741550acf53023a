"""Handler source as it is embedded in the template (`Code.ZipFile`).

`aws cloudformation deploy` sends at most 51,200 bytes of template inline, and the two handlers
are most of it. So the embedded code is the handler file re-emitted token by token: the same
tokens in the same order (so the same program), without comments, docstrings, blank lines and
optional spaces, continuation lines joined, consecutive simple statements of a block on one line
(`a=1;b=2`), one space per indentation level, and simple string literals in single quotes (a
JSON template escapes every double quote).

Nothing is renamed or rewritten: `tests/test_code.py` proves the embedded code parses to the
syntax tree of the source minus its docstrings. The output depends only on the token stream, not
on `ast.unparse` (whose formatting changes between Python versions and would break `--check`).
"""

from __future__ import annotations

import ast
import io
import re
import sys
import tokenize
import types
from pathlib import Path

HANDLERS_DIR = Path(__file__).resolve().parent.parent / "handlers"

# Tokens that carry no code.
_SKIPPED = {tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER}
# Python 3.12+ tokenizes f-strings into parts; they are copied from the source as one unit.
_FSTRING_START = getattr(tokenize, "FSTRING_START", None)
_FSTRING_END = getattr(tokenize, "FSTRING_END", None)


def handler_path(name: str) -> Path:
    """`handlers/<name>.py`, the readable source that tests and reviewers read."""
    return HANDLERS_DIR / f"{name}.py"


def embedded_code(name: str) -> str:
    """The code that goes into the Lambda function's `ZipFile` for `handlers/<name>.py`."""
    return compact_source(handler_path(name).read_text(encoding="utf-8"))


def load_as_index(code: str, filename: str) -> types.ModuleType:
    """Execute `code` as a fresh module named `index`, as Lambda runs ZipFile code (tests and
    simulate.py run the handlers this way)."""
    module = types.ModuleType("index")
    module.__file__ = filename
    compiled = compile(code, filename, "exec")
    sys.modules["index"] = module  # dataclasses and pickling look the module up while it runs
    try:
        exec(compiled, module.__dict__)
    finally:
        sys.modules.pop("index", None)
    return module


def compact_source(source: str) -> str:
    """`source` as the shortest text made of the same tokens (see the module docstring)."""
    docstrings = _docstring_starts(ast.parse(source))
    lines = source.splitlines(keepends=True)
    statements: list[tuple[int, str]] = []  # (indentation depth, one logical line)
    line: list[str] = []
    depth = 0
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if token.type == tokenize.INDENT:
            depth += 1
        elif token.type == tokenize.DEDENT:
            depth -= 1
        elif token.type == tokenize.NEWLINE:
            if line:
                statements.append((depth, "".join(line)))
            line = []
        elif token.type in _SKIPPED:
            continue
        elif token.type == tokenize.STRING and not line and token.start in docstrings:
            # A docstring statement: skip it up to its NEWLINE.
            while tokens[index].type != tokenize.NEWLINE:
                index += 1
            index += 1
        else:
            text = token.string
            if token.type == tokenize.STRING:
                text = _single_quoted(text)
            elif token.type == _FSTRING_START:
                end, index = _fstring_end(tokens, index)
                text = _slice(lines, token.start, end)
            _append(line, text)
    return "".join(" " * depth + text + "\n" for depth, text in _join_simple(statements))


# A logical line starting with one of these is a compound statement (or part of one), which
# cannot share a line with another statement. `match` and `case` are soft keywords: their
# headers end with ':' and are caught by that rule instead.
_COMPOUND = {"if", "elif", "else", "for", "while", "try", "except", "finally", "with", "def",
             "class", "async", "@"}


def _join_simple(statements: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Consecutive simple statements of one block on one line, separated by `;` (each line break
    and its indentation cost bytes in the template)."""
    joined: list[tuple[int, str]] = []
    for depth, text in statements:
        if joined and joined[-1][0] == depth and _simple(joined[-1][1]) and _simple(text):
            joined[-1] = (depth, joined[-1][1] + ";" + text)
        else:
            joined.append((depth, text))
    return joined


def _simple(text: str) -> bool:
    first = re.match(r"@|\w+", text)
    return not text.endswith(":") and (first is None or first.group() not in _COMPOUND)


def _single_quoted(literal: str) -> str:
    """`"abc"` as `'abc'`: the same value, and a JSON template escapes every `"` (one byte each).

    Only simple literals change: no f-string (Python 3.12+ tokenizes those differently, so they
    stay as written on every version), no triple quotes, no quote or backslash inside.
    """
    prefix = literal[:len(literal) - len(literal.lstrip("rRbBuUfF"))]
    body = literal[len(prefix):]
    if "f" in prefix.lower() or body[:3] in ('"""', "'''") or not body.startswith('"'):
        return literal
    inner = body[1:-1]
    if "'" in inner or "\\" in inner:
        return literal
    return f"{prefix}'{inner}'"


def _append(line: list[str], text: str) -> None:
    """Add a token, with a space only where two tokens would otherwise merge (`if x`, `1 if`)."""
    if line and _word_char(line[-1][-1]) and _word_char(text[0]):
        line.append(" ")
    line.append(text)


def _word_char(char: str) -> bool:
    return char.isalnum() or char == "_"


def _fstring_end(tokens: list, index: int) -> tuple[tuple[int, int], int]:
    """Position after the FSTRING_END that closes the f-string opened just before `index`."""
    nesting = 1
    while True:
        token = tokens[index]
        index += 1
        if token.type == _FSTRING_START:
            nesting += 1
        elif token.type == _FSTRING_END:
            nesting -= 1
            if not nesting:
                return token.end, index


def _slice(lines: list[str], start: tuple[int, int], end: tuple[int, int]) -> str:
    (row, col), (end_row, end_col) = start, end
    if row == end_row:
        return lines[row - 1][col:end_col]
    return lines[row - 1][col:] + "".join(lines[row:end_row - 1]) + lines[end_row - 1][:end_col]


def _docstring_starts(tree: ast.AST) -> set[tuple[int, int]]:
    """(row, column) where each module, class and function docstring starts; a body that is only
    a docstring keeps it (the code must stay valid)."""
    starts = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if len(body) > 1 and _is_docstring(body[0]):
                starts.add((body[0].lineno, body[0].col_offset))
    return starts


def strip_docstrings(tree: ast.AST) -> ast.AST:
    """`tree` without docstrings (bodies that are only a docstring keep it): the reference the
    embedded code is compared against."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and len(body) > 1 and _is_docstring(body[0]):
            del body[0]
    return tree


def _is_docstring(stmt: ast.stmt) -> bool:
    return (
        isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Constant)
        and isinstance(stmt.value.value, str)
    )
