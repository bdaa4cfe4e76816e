"""The README's Python example runs as written (in a temporary folder: it saves a model to ``aligned/``)."""

import ast
import re
from pathlib import Path

from sotalign import AlignConfig

ROOT = Path(__file__).resolve().parents[1]


def python_api_example() -> str:
    section = ROOT.joinpath("README.md").read_text().split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_python_api_example_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(python_api_example(), "README.md (Python API)", "exec"), {})
    assert (tmp_path / "aligned").is_dir()
    *klot_losses, scores = capsys.readouterr().out.strip().splitlines()
    defaults = AlignConfig()  # one line per log_every steps of the default run
    assert len(klot_losses) == defaults.steps // defaults.log_every
    assert all(float(line.split()[1]) >= 0 for line in klot_losses)  # step, loss/klot
    scores = ast.literal_eval(scores)
    assert 0 < scores["mean_recall_at_1"] <= 100  # the printed retrieval scores of the trained model
