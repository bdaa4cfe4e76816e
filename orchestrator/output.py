"""``--json``: a command's result as one JSON document, alone on stdout, for other tools to read;
whatever else it prints (chatter, Ray's forwarded worker output) goes to stderr meanwhile."""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Callable, Iterator
from typing import Any


def add_json_argument(parser, what: str) -> None:
    """The command's ``--json`` flag; ``what`` names the document in its help."""
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON on stdout, and nothing else there")


@contextlib.contextmanager
def json_output(enabled: bool) -> Iterator[Callable[[Any], None]]:
    """Yield the function that prints the JSON document on stdout; with ``enabled``, what is printed
    inside the block goes to stderr instead (without, nothing changes)."""
    stdout = sys.stdout

    def emit(value: Any) -> None:
        print(json.dumps(_strict(value), indent=2, allow_nan=False), file=stdout)

    with contextlib.redirect_stdout(sys.stderr) if enabled else contextlib.nullcontext():
        yield emit


def _strict(value: Any) -> Any:
    """``value`` with every NaN or infinite float as null: strict JSON readers reject ``NaN``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    return value
