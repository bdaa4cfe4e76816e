"""The search spaces that ship with the package: ``search_spaces/*.yaml`` and the experiment files of
``search_spaces/experiments/`` that their ``base: {file: ...}`` names.

An installed wheel carries them as ``orchestrator/search_spaces/`` (pyproject.toml maps the folder
there); a checkout, editable install included, reads the repository's top-level ``search_spaces/``,
their one copy. A command's file argument may name a shipped file without its path:
``sotalign sweep smoke`` runs the shipped ``smoke.yaml`` where the current folder holds no file
``smoke``, and ``sotalign train openmoji`` the shipped ``experiments/openmoji.yaml``.
"""

from __future__ import annotations

from pathlib import Path

from sotalign.checks import InputError

PACKAGED = Path(__file__).resolve().parent / "search_spaces"  # in an installed wheel
CHECKOUT = Path(__file__).resolve().parents[1] / "search_spaces"  # in the repository
SPACES, EXPERIMENTS = "search space", "experiment file"
QUESTION = "# Question:"


def folder() -> Path:
    """The shipped ``search_spaces/`` folder: the packaged one when installed, else the checkout's."""
    return PACKAGED if PACKAGED.is_dir() else CHECKOUT


def _home(kind: str) -> Path:
    return folder() / "experiments" if kind == EXPERIMENTS else folder()


def names(kind: str = SPACES) -> list[str]:
    """The shipped files of ``kind`` (``SPACES`` or ``EXPERIMENTS``) by name (file name without ``.yaml``)."""
    return sorted(path.stem for path in _home(kind).glob("*.yaml"))


def resolve(argument: str | Path, kind: str = SPACES) -> Path:
    """The file a command's argument names: a file that exists, as given; else, for a bare name (no
    folder, no ``.yaml``), the shipped ``<name>.yaml`` of ``kind``. InputError listing the shipped
    names otherwise."""
    path = Path(argument)
    if path.is_file():
        return path
    text = str(argument)
    bare = "/" not in text and not text.endswith((".yaml", ".yml"))
    if bare and (_home(kind) / f"{text}.yaml").is_file():
        return _home(kind) / f"{text}.yaml"
    shipped = ", ".join(names(kind))
    if bare:
        raise InputError(
            f"no file {text!r} here and no shipped {kind} of that name; the shipped {kind}s, named without "
            f"folder or .yaml: {shipped}"
        )
    guess = f"did you mean the shipped {path.stem!r}? " if path.stem in names(kind) else ""
    raise InputError(f"no such file: {text} ({guess}the shipped {kind}s, named without folder or .yaml: {shipped})")


def question(path: Path) -> str:
    """The first line of the file's leading ``# Question:`` comment (the question it asks), ``…`` where it
    goes on; empty where it has none."""
    lines = path.read_text().splitlines()
    for index, line in enumerate(lines):
        if not line.startswith("#"):
            return ""
        if line.startswith(QUESTION):
            more = index + 1 < len(lines) and lines[index + 1].startswith("#") and not line.rstrip().endswith("?")
            return line.removeprefix(QUESTION).strip() + (" …" if more else "")
    return ""


def listing(kind: str = SPACES) -> str:
    """The shipped files of ``kind``, one a line: the name and the question it asks."""
    shipped = names(kind)
    width = max(map(len, shipped), default=0)
    return "\n".join(f"{name:<{width}}  {question(_home(kind) / f'{name}.yaml')}".rstrip() for name in shipped)
