"""MLflow conventions and `sotalign ui` against a real MLflow server on loopback."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from orchestrator.tracking import ensure_reachable, metric_key, tracking_uri


def test_tracking_uri_defaults_and_fails_fast(tmp_path, monkeypatch, free_port):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert tracking_uri("http://x:1") == "http://x:1"
    with pytest.raises(ValueError, match=r"http://127.0.0.1:\d+ is unreachable"):
        ensure_reachable(f"http://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(ValueError, match="unsupported tracking URI"):
        ensure_reachable("./mlruns")
    ensure_reachable(f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}")
    assert (tmp_path / "new").is_dir()
    assert metric_key("t2i_r@1") == "t2i_r_at_1"


def test_ui_serves_the_store_and_stops_cleanly(tmp_path, monkeypatch, free_port, serving_ui):
    import mlflow

    monkeypatch.chdir(tmp_path)  # the plain mlflow client puts artifacts under ./mlruns
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(db)
    mlflow.set_experiment("openmoji")
    with mlflow.start_run(tags={"encoder_pair": "a + b"}):
        mlflow.log_metric("mean_recall_at_1", 12.5)
    port = free_port()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc, lines = serving_ui(["--tracking-uri", db, "--port", str(port)], tmp_path, env)
    try:
        link = next(line.split(": ", 1)[1].strip() for line in lines if line.strip().startswith("openmoji:"))
        assert link.startswith(f"http://127.0.0.1:{port}/#/experiments/") and link.endswith("/runs")
        exp_id = link.split("/experiments/")[1].split("/")[0]
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/search",
            method="POST",
            data=json.dumps({"experiment_ids": [exp_id]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        runs = json.load(urllib.request.urlopen(request, timeout=10))["runs"]
        assert len(runs) == 1 and {t["key"]: t["value"] for t in runs[0]["data"]["tags"]}["encoder_pair"] == "a + b"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    time.sleep(1)
    with pytest.raises(OSError):  # the server went away with the command
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)


def test_compare_groups_runs_by_tag(tmp_path, monkeypatch, capsys):
    import mlflow

    from orchestrator.cli import main

    monkeypatch.chdir(tmp_path)
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(db)
    mlflow.set_experiment("openmoji")
    values = {
        "lite0 + minilm": [(10.0, 30.0), (12.0, 25.0), (14.0, 20.0)],
        "lite2 + minilm": [(20.0, 5.0), (22.0, 6.0)],
    }
    for pair, scores in values.items():
        for test, validation in scores:  # the best by validation is not the best by test
            with mlflow.start_run(tags={"encoder_pair": pair, "n_pairs": "300"}):
                mlflow.log_metrics({"mean_recall_at_1": test, "val/mean_recall_at_1": validation})
    with mlflow.start_run(tags={"encoder_pair": "other", "n_pairs": "100"}):
        mlflow.log_metric("mean_recall_at_1", 99.0)
    code = main(
        [
            "compare",
            "--experiment",
            "openmoji",
            "--tracking-uri",
            db,
            "--filter",
            "tags.n_pairs = '300'",
            "--out",
            str(tmp_path / "c.png"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    lines = [line for line in out.splitlines() if line.startswith("| lite")]
    assert lines == [
        "| lite2 + minilm | 2 | 22.00 | 6.00 | 21.00 ± 1.41 |",
        "| lite0 + minilm | 3 | 10.00 | 30.00 | 12.00 ± 2.00 |",  # picked by validation, not its test 14
    ]
    assert "other" not in out and (tmp_path / "c.png").stat().st_size > 5000
    json_args = ["compare", "--experiment", "openmoji", "--tracking-uri", db, "--filter", "tags.n_pairs = '300'"]
    assert main([*json_args, "--out", str(tmp_path / "j.png"), "--json"]) == 0
    captured = capsys.readouterr()
    rows = json.loads(captured.out)  # the rows alone on stdout, the "wrote" line on stderr
    assert [(r["encoder_pair"], r["runs"], r["mean_recall_at_1"], r["val/mean_recall_at_1"]) for r in rows] == [
        ("lite2 + minilm", 2, 22.0, 6.0),
        ("lite0 + minilm", 3, 10.0, 30.0),
    ]
    assert rows[1]["mean"] == 12.0 and rows[1]["std"] == 2.0 and len(rows[1]["best_run_id"]) == 32
    assert f"wrote {tmp_path / 'j.png'}" in captured.err
    assert main(["compare", "--experiment", "nope", "--tracking-uri", db]) == 2
    assert "no MLflow experiment 'nope'" in capsys.readouterr().err
    assert main(["compare", "--experiment", "openmoji", "--tracking-uri", db, "--metric", "digits_top1"]) == 2
    assert "has the metric 'digits_top1'" in capsys.readouterr().err


def test_runs_end_with_the_status_of_what_happened(tmp_path):
    from orchestrator.tracking import client, ending_run, start_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ids = [start_run(uri, "openmoji", f"run{i}", {"method": "sail"}, {"alpha": 1.0}) for i in range(4)]
    with ending_run(uri, ids[0]):
        pass
    with pytest.raises(ValueError), ending_run(uri, ids[1]):
        raise ValueError("bad")
    with pytest.raises(KeyboardInterrupt), ending_run(uri, ids[2]):
        raise KeyboardInterrupt
    with ending_run(uri, ids[3]) as outcome:
        outcome["status"] = "KILLED"
    assert [client(uri).get_run(i).info.status for i in ids] == ["FINISHED", "FAILED", "KILLED", "KILLED"]
    exp = client(uri).get_experiment_by_name("openmoji")
    assert "encoder_pair" in exp.tags["mlflow.sharedViewState.encoder_pairs"]  # the grouped view comes with it


_START_RUN_AT_ONCE = """
import sys, time
from orchestrator.tracking import start_run
while time.time() < float(sys.argv[2]):
    time.sleep(0.005)
print(start_run(sys.argv[1], "iconify", "run", {"method": "sail"}, {}))
"""


def test_runs_started_at_once_share_a_new_sqlite_store(tmp_path):
    """Two `sotalign train` started together on a new mlflow.db: both log, into one experiment
    (without the store lock one died on "duplicate column name: step" while creating the schema)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    go = time.time() + 8  # after every process has imported mlflow
    processes = [
        subprocess.Popen([sys.executable, "-c", _START_RUN_AT_ONCE, uri, str(go)], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    run_ids = [p.communicate(timeout=120)[0].strip() for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0]
    from orchestrator.tracking import client

    experiments = [e for e in client(uri).search_experiments() if e.name == "iconify"]
    assert len(experiments) == 1
    assert {client(uri).get_run(i).info.experiment_id for i in run_ids} == {experiments[0].experiment_id}
