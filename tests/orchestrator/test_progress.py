"""What a run shows while it trains: the ``Progress`` lines (step / total, losses, validation R@1,
steps/s, ETA) or bar, ``--quiet`` / ``--verbose`` / ``--json`` of the ``sotalign`` command, and a
real ``sotalign train`` in its own process, in-process and on Ray Train (rank 0's lines reach the
driver through Ray's log forwarding)."""

import io
import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from orchestrator import logs
from orchestrator.cli import build_parser
from orchestrator.progress import LINE_PATTERN, Progress
from tests.orchestrator.test_train import TREE as TRAIN_TREE

RECORDS = [  # what the stage-2 loop hands its callback: log_every 10, eval_every 20
    (10, {"loss/total": 1.5, "loss/siglip": 1.25, "loss/klot": 0.25, "lr": 1e-3, "step": 10}),
    (20, {"loss/total": 1.0, "loss/siglip": 0.75, "loss/klot": 0.25, "val/mean_recall_at_1": 12.5, "step": 20}),
    (30, {"loss/total": 0.875, "loss/siglip": 0.625, "loss/klot": 0.25, "step": 30}),
]
# test_train.py's run, shorter and in this process: 4 records, 2 of them evaluated
TREE = {**TRAIN_TREE, "align": {**TRAIN_TREE["align"], "steps": 40}, "run": {"workers": 0}}
STEP = re.compile(r"\[(.+?)\] step (\d+)/40 ")


def feed(progress: Progress) -> None:
    with progress:
        for step, record in RECORDS:
            progress.update(step, record)


def test_lines_hold_step_losses_validation_rate_and_eta(capsys):
    logs.configure(logs.DEFAULT)
    times = iter([100.0, 105.0, 110.0])  # the rate is measured from the first record: 2 steps/s
    feed(Progress(40, "run-a", clock=lambda: next(times)))
    assert capsys.readouterr().err.splitlines() == [
        "[run-a] step 10/40  loss/total=1.5  loss/siglip=1.25  loss/klot=0.25",
        "[run-a] step 20/40  loss/total=1  loss/siglip=0.75  loss/klot=0.25  val/R@1=12.50  2.00 steps/s  ETA 00:10",
        "[run-a] step 30/40  loss/total=0.875  loss/siglip=0.625  loss/klot=0.25  val/R@1=12.50  2.00 steps/s  ETA 00:05",
    ]


def test_ray_prints_the_lines_of_concurrent_trials_apart():
    """Ray's driver merges like lines of several processes (digits aside) into "[repeated 2x across
    cluster]"; the orchestrator exempts progress lines (its LINE_PATTERN, set when it is imported)."""
    from ray._private.ray_logging import LogDeduplicator

    assert os.environ["RAY_DEDUP_LOGS_ALLOW_REGEX"] == LINE_PATTERN
    trials = [(1, "[tiny-a1 lr=0.01] step 20/40  loss/total=1.5"), (2, "[tiny-b2 lr=0.02] step 20/40  loss/total=1.6")]
    for allow, printed in ((None, 1), (LINE_PATTERN, 2)):  # without the exemption, the second trial's is held
        merger = LogDeduplicator(5, allow, None, _timesource=lambda: 0.0)
        batches = [merger.deduplicate({"ip": "x", "pid": pid, "lines": [line]}) for pid, line in trials]
        assert sum(len(b["lines"]) for out in batches for b in out) == printed


def test_quiet_and_other_ranks_show_nothing(capsys):
    logs.configure(logs.QUIET)
    feed(Progress(40, "run-a"))
    logs.configure(logs.DEFAULT)
    feed(Progress(40, "rank-1", show=False))
    assert capsys.readouterr().err == ""


def test_a_terminal_gets_a_live_bar_not_lines(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    logs.configure(logs.DEFAULT)
    feed(Progress(40, "run-a"))
    shown = terminal.getvalue()
    assert "\r" in shown and "run-a" in shown and "30/40" in shown and "step/s" in shown
    assert "loss/total=0.875" in shown and "val/R@1=12.50" in shown and "[run-a] step" not in shown


def test_verbosity_goes_before_or_after_the_command_and_json_is_per_command():
    parse = build_parser().parse_args
    assert parse(["train", "x.yaml"]).log_level == logs.DEFAULT
    assert parse(["--quiet", "train", "x.yaml"]).log_level == logs.QUIET
    assert parse(["train", "x.yaml", "--verbose"]).log_level == logs.VERBOSE
    assert parse(["--quiet", "compare", "--experiment", "e", "--json"]).json
    with pytest.raises(SystemExit):
        parse(["--quiet", "--verbose", "train", "x.yaml"])


def sotalign(tmp_path, *args, env=None):
    """``sotalign ARGS`` in its own process (stderr not a terminal: progress as lines)."""
    command = [sys.executable, "-m", "orchestrator.cli", *args]
    environment = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", **(env or {})}
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900, env=environment)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def progress_steps(err: str) -> list[tuple[str, int]]:
    return [(m[1], int(m[2])) for m in map(STEP.search, err.splitlines()) if m]


def test_train_in_process_shows_progress_and_json_is_alone_on_stdout(tmp_path):
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(TREE))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = sotalign(tmp_path, "train", "exp.yaml", "--tracking-uri", uri, "--json")
    result = json.loads(done.stdout)  # the whole of stdout is one JSON object
    assert result["experiment"] == "synthetic" and result["tracking_uri"] == uri and result["checkpoint"] is None
    assert result["metrics"]["step"] == 40 and 0 <= result["metrics"]["mean_recall_at_1"] <= 100
    from mlflow.tracking import MlflowClient

    run = MlflowClient(uri).get_run(result["run_id"])
    assert run.data.metrics["mean_recall_at_1"] == result["metrics"]["mean_recall_at_1"]
    shown = progress_steps(done.stderr)
    assert [step for _, step in shown] == [10, 20, 30, 40] and len({label for label, _ in shown}) == 1
    lines = [line for line in done.stderr.splitlines() if STEP.search(line)]
    assert all("loss/total=" in line and "loss/klot=" in line for line in lines)
    assert "val/R@1=" not in lines[0] and "val/R@1=" in lines[1] and "steps/s" in lines[-1] and "ETA" in lines[-1]
    assert f"MLflow run {result['run_id']}" in done.stderr  # the start of the run, an info line

    quiet = sotalign(tmp_path, "--quiet", "train", "exp.yaml", "--tracking-uri", uri)
    assert not progress_steps(quiet.stderr) and "MLflow run" not in quiet.stderr
    assert "MLflow run " in quiet.stdout and '"mean_recall_at_1"' in quiet.stdout  # results still print


def test_a_real_terminal_shows_one_bar_redrawn_in_place(tmp_path):
    """``sotalign train`` with a pseudo-terminal as its stdout and stderr (what a shell gives it): the
    bar is redrawn in place (carriage returns, no plain lines) and ends at 40/40 with the losses and
    the last validation R@1."""
    import fcntl
    import pty
    import struct
    import termios

    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(TREE))
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))  # 40 rows x 200 columns
    command = [sys.executable, "-m", "orchestrator.cli", "train", "exp.yaml"]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    environment = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "TERM": "xterm-256color"}
    process = subprocess.Popen(
        [*command, "--tracking-uri", uri],
        cwd=tmp_path,
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=environment,
    )
    os.close(follower)
    screen = b""
    while True:  # read until the process closes the terminal (EIO on Linux)
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        screen += chunk
    os.close(leader)
    assert process.wait(timeout=60) == 0, screen.decode(errors="replace")[-3000:]
    text = screen.decode(errors="replace")
    assert not progress_steps(text), "plain progress lines on a terminal"
    drawn = [part for part in text.replace("\r\n", "\n").split("\r") if "/40 [" in part]  # the bar's redraws
    assert len(drawn) >= 4, text[-3000:]  # one per record (10, 20, 30, 40), each over the last
    last = drawn[-1].splitlines()[0]
    assert "40/40" in last and "loss/total=" in last and "val/R@1=" in last, last


def test_rank_0_progress_on_ray_train_reaches_the_driver(ray_cluster, tmp_path):
    tree = {**TREE, "run": {"workers": 2, "checkpoint_every": 0, "storage_path": str(tmp_path / "ray")}}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(tree))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = sotalign(tmp_path, "train", "exp.yaml", "--tracking-uri", uri, "--json", env={"RAY_ADDRESS": ray_cluster})
    assert json.loads(done.stdout)["metrics"]["step"] == 40
    lines = [line for line in done.stderr.splitlines() if STEP.search(line)]
    assert lines, done.stderr[-3000:]
    steps = [int(STEP.search(line)[2]) for line in lines]
    assert steps == sorted(steps) and set(steps) <= {10, 20, 30, 40}
    workers = {line.split(")")[0] for line in lines}  # Ray's "(RayTrainWorker pid=...)" prefix
    assert len(workers) == 1 and "pid=" in workers.pop()  # one rank of the two: rank 0
    assert "Reporting training result" not in done.stderr  # Ray Train's own info lines: --verbose only


def test_json_output_writes_nan_as_null(capsys):
    from orchestrator.output import json_output

    with json_output(True) as emit:
        print("chatter")
        emit({"metrics": {"r": float("nan"), "s": 1.5}, "rows": [float("inf")]})
    out, err = capsys.readouterr()
    assert json.loads(out) == {"metrics": {"r": None, "s": 1.5}, "rows": [None]} and "chatter" in err
