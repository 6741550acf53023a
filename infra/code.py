"""Handler source as it is embedded in the template, and as tests and the simulation run it.

Each function's `Code.ZipFile` is exactly the text of its file in `handlers/`, comments and
docstrings included: the code deployed is the code reviewed and tested, and the Lambda console
shows what the repository shows. Lambda runs ZipFile code as the module `index`
(`Handler: index.lambda_handler`); `load_as_index` runs a handler the same way.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

HANDLERS_DIR = Path(__file__).resolve().parent.parent / "handlers"


def handler_path(name: str) -> Path:
    """`handlers/<name>.py`."""
    return HANDLERS_DIR / f"{name}.py"


def embedded_code(name: str) -> str:
    """The ZipFile code of the function whose handler is `handlers/<name>.py`: the file itself."""
    return handler_path(name).read_text(encoding="utf-8")


def load_as_index(code: str, filename: str) -> types.ModuleType:
    """Execute `code` as a fresh module named `index`, as Lambda runs ZipFile code (no cached
    bytecode, a new module each time)."""
    module = types.ModuleType("index")
    module.__file__ = filename
    compiled = compile(code, filename, "exec")
    sys.modules["index"] = module  # dataclasses and typing look the module up while it runs
    try:
        exec(compiled, module.__dict__)
    finally:
        sys.modules.pop("index", None)
    return module
