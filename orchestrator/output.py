"""``--json``: a command's result as one JSON document, alone on stdout, for other tools to read;
whatever else it prints (chatter, Ray's forwarded worker output) goes to stderr meanwhile."""

from __future__ import annotations

import contextlib
import json
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
        print(json.dumps(value, indent=2), file=stdout)

    with contextlib.redirect_stdout(sys.stderr) if enabled else contextlib.nullcontext():
        yield emit
