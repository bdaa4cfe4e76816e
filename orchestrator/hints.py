"""The next-step commands the ``sotalign`` command prints, written so that the user can run them as
printed from where they are.

``sotalign`` itself only where that name finds this command on the user's PATH; else the path of
the running console script (relative to the current folder when under it: ``.venv/bin/sotalign``
after ``uv run sotalign demo`` in a checkout, whose venv is not on the shell's PATH). And
``--tracking-uri`` only where the run logged to a store other than the one the printed command
would pick by default from this folder (tracking.py's ``tracking_uri``).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

PROG = "sotalign"
UNSAFE_IN_DOUBLE_QUOTES = set('"$`\\!')


def me() -> str:
    """The words that call this command from the current folder, quoted for a POSIX shell:
    ``sotalign``, ``.venv/bin/sotalign``, ``/opt/env/bin/sotalign``, or ``PYTHON -m sotalign`` where
    the environment has no ``sotalign`` script."""
    script = running_script()
    if script is None:
        return f"{shown(Path(sys.executable))} -m {PROG}"
    found = shutil.which(PROG, path=user_path())
    return PROG if found and _same_file(found, script) else shown(script)


def command(*words: str, uri: str | None = None) -> str:
    """The command line that runs ``sotalign WORDS`` from here, plus ``--tracking-uri URI`` where ``uri``
    is not the store that the command picks by default from this folder (MLFLOW_TRACKING_URI or
    ./mlflow.db). A secret in it (a URI's password) is shown as ``***``: the line is printed."""
    from orchestrator.redaction import redact
    from orchestrator.tracking import tracking_uri

    if uri is not None and uri != tracking_uri():
        words = (*words, "--tracking-uri", uri)
    return redact(" ".join([me(), *map(quote, words)]))


def running_script() -> Path | None:
    """The ``sotalign`` console script this process runs (``sys.argv[0]``), else the one installed in
    this interpreter's environment (under ``python -m sotalign``, a Ray worker, a test); None where neither
    is a file."""
    candidates = [Path(sys.argv[0])] if sys.argv and sys.argv[0] else []
    for candidate in [*candidates, Path(sys.executable).parent / PROG]:
        if candidate.name == PROG and candidate.is_file() and os.access(candidate, os.X_OK):
            return Path(os.path.abspath(candidate))
    return None


def user_path() -> str:
    """PATH as the user's shell has it: ``uv run`` (which sets ``UV_RUN_RECURSION_DEPTH``) puts its
    environment's bin folder first on the PATH of the command it runs; the shell it returns to lacks it."""
    entries = os.environ.get("PATH", os.defpath).split(os.pathsep)
    venv = os.environ.get("VIRTUAL_ENV")
    if os.environ.get("UV_RUN_RECURSION_DEPTH") and venv and entries and _same_file(entries[0], Path(venv, "bin")):
        entries = entries[1:]
    return os.pathsep.join(entries)


def shown(path: Path) -> str:
    """``path`` as a command word: relative to the current folder when under it (``./x`` for a file right
    here, which the shell would otherwise look up on PATH), else absolute; quoted for the shell."""
    try:
        relative = Path(os.path.realpath(path)).relative_to(Path.cwd().resolve())
    except ValueError:
        return quote(os.path.abspath(path))
    return quote(str(relative) if len(relative.parts) > 1 else f"./{relative}")


def quote(word: str) -> str:
    """``word`` for a POSIX shell: as it is where it needs no quoting, in double quotes where those keep it
    whole (``"tags.method = 'sotalign'"`` reads better than shlex's ``'tags.method = '"'"'sotalign'"'"''``)."""
    if shlex.quote(word) == word:
        return word
    return f'"{word}"' if not UNSAFE_IN_DOUBLE_QUOTES & set(word) else shlex.quote(word)


def _same_file(a: str | Path, b: str | Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
