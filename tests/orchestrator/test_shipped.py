"""The shipped search spaces (orchestrator/shipped.py): found in a checkout and in an installed package,
named without a path (``sotalign sweep smoke``, ``sotalign train openmoji``), listed by ``sweep --list``;
and the next-step commands the command prints (orchestrator/hints.py), runnable as printed from where
the user is."""

import os
import shlex
import sys
from pathlib import Path

import pytest

from orchestrator import hints, shipped
from orchestrator.cli import main
from sotalign.checks import InputError

ROOT = Path(__file__).resolve().parents[2]


def test_a_checkout_ships_its_top_level_folder_and_an_install_its_packaged_copy(tmp_path, monkeypatch):
    assert shipped.folder() == ROOT / "search_spaces"  # no orchestrator/search_spaces/ in the repository
    assert not shipped.PACKAGED.exists()
    assert "smoke" in shipped.names() and shipped.names(shipped.EXPERIMENTS) == ["iconify", "openmoji"]
    (tmp_path / "experiments").mkdir()
    (tmp_path / "only.yaml").write_text("# Question: one?\n")
    (tmp_path / "experiments" / "exp.yaml").write_text("name: x\n")
    monkeypatch.setattr(shipped, "PACKAGED", tmp_path)  # as in a wheel: orchestrator/search_spaces/
    assert shipped.folder() == tmp_path and shipped.names() == ["only"]
    assert shipped.resolve("only") == tmp_path / "only.yaml"
    assert shipped.resolve("exp", shipped.EXPERIMENTS) == tmp_path / "experiments" / "exp.yaml"


def test_a_bare_name_is_a_shipped_file_unless_the_current_folder_has_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert shipped.resolve("smoke") == ROOT / "search_spaces" / "smoke.yaml"
    assert shipped.resolve("openmoji", shipped.EXPERIMENTS) == ROOT / "search_spaces" / "experiments" / "openmoji.yaml"
    (tmp_path / "smoke").write_text("name: mine\n")  # a file of that name here wins
    (tmp_path / "spaces").mkdir()
    (tmp_path / "spaces" / "mine.yaml").write_text("name: mine\n")
    assert shipped.resolve("smoke") == Path("smoke")
    assert shipped.resolve("spaces/mine.yaml") == Path("spaces/mine.yaml")  # an existing path, as given
    assert shipped.resolve(tmp_path / "spaces" / "mine.yaml") == tmp_path / "spaces" / "mine.yaml"


@pytest.mark.parametrize(
    "argument, message",
    [
        ("smok", "no file 'smok' here and no shipped search space of that name"),
        ("smoke.yaml", "no such file: smoke.yaml (did you mean the shipped 'smoke'?"),  # a path: never shipped
        ("search_spaces/smoke.yaml", "no such file: search_spaces/smoke.yaml (did you mean the shipped 'smoke'?"),
        ("elsewhere/nothing.yaml", "no such file: elsewhere/nothing.yaml (the shipped search spaces"),
    ],
)
def test_a_missing_file_lists_the_shipped_names(tmp_path, monkeypatch, argument, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as error:
        shipped.resolve(argument)
    assert str(error.value).startswith(message)
    assert f"named without folder or .yaml: {', '.join(shipped.names())}" in str(error.value)
    with pytest.raises(InputError, match="shipped experiment files, named without folder or .yaml: iconify, openmoji"):
        shipped.resolve("smoke", shipped.EXPERIMENTS)


def test_the_commands_take_shipped_names_and_list_them(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", "--list"]) == 0
    out = capsys.readouterr().out
    assert (
        "smoke " in out
        and "does a new cluster work end to end? Two tiny trials on synthetic data (no store, no …" in out
    )
    assert len(out.strip().splitlines()) == 2 + len(shipped.names())  # a header, a blank line, one line each
    assert main(["sweep", "smok"]) == 2
    assert "no shipped search space of that name" in capsys.readouterr().err
    assert main(["sweep"]) == 2
    err = capsys.readouterr().err
    assert "name a search space" in err and "sweep --list" in err
    # the shipped file is read (its base from experiments/, relative to it) and checked before any work
    assert main(["sweep", "demo", "--set", "steps=abc"]) == 2
    assert "steps must be an int, got 'abc'" in capsys.readouterr().err
    assert main(["train", "openmoji", "--set", "steps=abc"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {shipped.folder() / 'experiments' / 'openmoji.yaml'}: steps")
    assert main(["demo", "--space", "smoke", "--set", "data.n_pairs=abc"]) == 2
    assert "n_pairs must be an int" in capsys.readouterr().err


def test_the_shipped_questions_are_one_line_each():
    assert shipped.question(ROOT / "search_spaces" / "smoke.yaml").startswith("does a new cluster work end to end?")
    assert shipped.question(ROOT / "search_spaces" / "experiments" / "openmoji.yaml") == ""
    for line in shipped.listing().splitlines():
        assert len(line.split(None, 1)) == 2, line  # every shipped space asks its question


@pytest.fixture
def script(tmp_path, monkeypatch):
    """A function: an executable ``sotalign`` at ``folder`` (relative to tmp_path), run as this process's
    console script; the PATH as a shell has it without uv run."""
    for name in ("UV_RUN_RECURSION_DEPTH", "VIRTUAL_ENV", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")

    def install(folder: str) -> Path:
        path = tmp_path / folder / "sotalign"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
        monkeypatch.setattr(sys, "argv", [str(path), "demo"])
        return path

    return install


def test_the_printed_command_is_sotalign_only_where_the_path_finds_this_one(tmp_path, monkeypatch, script):
    path = script("env/bin")
    monkeypatch.chdir(tmp_path)
    assert hints.me() == "env/bin/sotalign"  # not on PATH: its path from here
    monkeypatch.chdir(path.parent)
    assert hints.me() == "./sotalign"  # right here: ./ or the shell would look it up on PATH
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    assert hints.me() == str(path)  # outside: absolute
    monkeypatch.setenv("PATH", f"{path.parent}:/usr/bin")
    assert hints.me() == "sotalign"
    other = script("other/bin")  # another install is the one on PATH: not this one
    assert hints.me() == str(other)


def test_uv_run_s_path_is_not_the_user_s(tmp_path, monkeypatch, script):
    """``uv run sotalign demo`` (``make demo``) runs the venv's script with the venv's bin first on PATH; the
    shell the user returns to has no such entry, so the hint is the script's path."""
    path = script(".venv/bin")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", f"{path.parent}:/usr/bin")
    monkeypatch.setenv("VIRTUAL_ENV", str(tmp_path / ".venv"))
    assert hints.me() == "sotalign"  # an activated venv
    monkeypatch.setenv("UV_RUN_RECURSION_DEPTH", "1")
    assert hints.me() == ".venv/bin/sotalign"
    monkeypatch.setenv("PATH", f"{path.parent}:/usr/bin:{path.parent}")  # uv run inside the activated venv
    assert hints.me() == "sotalign"


def test_python_m_sotalign_names_its_environment_s_script_or_itself(tmp_path, monkeypatch, script):
    path = script("env/bin")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(ROOT / "sotalign" / "__main__.py"), "demo"])
    monkeypatch.setattr(sys, "executable", str(path.parent / "python"))
    assert hints.me() == "env/bin/sotalign"
    path.unlink()
    assert hints.me() == "env/bin/python -m sotalign"


def test_a_hint_adds_the_tracking_uri_only_where_it_is_not_the_default_here(tmp_path, monkeypatch, script):
    script("env/bin")
    monkeypatch.chdir(tmp_path)
    here = f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert hints.command("ui", uri=here) == "env/bin/sotalign ui"
    assert (
        hints.command("ui", uri="sqlite:////elsewhere/m.db")
        == "env/bin/sotalign ui --tracking-uri sqlite:////elsewhere/m.db"
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")  # what the command would pick here
    assert hints.command("ui", uri="http://127.0.0.1:5000") == "env/bin/sotalign ui"
    assert hints.command("ui", uri=here) == f"env/bin/sotalign ui --tracking-uri {here}"
    line = hints.command("compare", "--filter", "tags.method = 'sotalign'", "--out", "a b.png", "--set", 'x="$y"')
    assert line == 'env/bin/sotalign compare --filter "tags.method = \'sotalign\'" --out "a b.png" --set \'x="$y"\''
    assert shlex.split(line)[1:] == [
        "compare",
        "--filter",
        "tags.method = 'sotalign'",
        "--out",
        "a b.png",
        "--set",
        'x="$y"',
    ]
    assert os.access(shlex.split(line)[0], os.X_OK)
