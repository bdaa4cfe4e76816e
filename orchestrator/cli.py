"""The ``sotalign`` command. Bad input (an ``InputError``) prints one ``error:`` line and exits with code 2;
any other exception is a bug: Python prints its traceback and the command exits with code 1."""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import version

from orchestrator import compare, demo, embed, report, search, sweep, train, ui
from sotalign.checks import InputError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sotalign",
        description="Semi-supervised alignment of frozen vision and language encoders via optimal transport.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('sotalign')}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo.add_parser(commands)
    embed.add_parser(commands)
    train.add_parser(commands)
    sweep.add_parser(commands)
    ui.add_parser(commands)
    compare.add_parser(commands)
    report.add_parser(commands)
    search.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args) or 0
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
