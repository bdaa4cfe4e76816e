"""The ``sotalign`` command. Bad input (an ``InputError``) prints one ``error:`` line and exits with code 2;
any other exception is a bug: Python prints its traceback and the command exits with code 1.
``--quiet`` / ``--verbose`` (before or after the subcommand) set the level of the command's logging."""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import version

from orchestrator import compare, credentials, demo, embed, logs, report, search, sweep, train, ui
from orchestrator.redaction import redact
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
    credentials.add_parser(commands)
    add_verbosity(parser, logs.DEFAULT)
    for command in commands.choices.values():  # a subcommand's copy sets the level only when given
        add_verbosity(command, argparse.SUPPRESS)
    return parser


def add_verbosity(parser: argparse.ArgumentParser, default) -> None:
    """``--quiet`` (no progress, warnings and errors only) and ``--verbose`` (debug lines too)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--quiet",
        dest="log_level",
        action="store_const",
        const=logs.QUIET,
        default=default,
        help="no progress; warnings and errors only (results still print)",
    )
    group.add_argument(
        "--verbose", dest="log_level", action="store_const", const=logs.VERBOSE, default=default, help="debug lines too"
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.configure(args.log_level)
    try:
        return args.run(args) or 0
    except InputError as error:
        print(f"error: {redact(str(error))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
