"""A tracking server that asks who you are, and secrets that never reach a stored file or a printed line.

The server is ``sotalign ui --auth`` (MLflow's basic-auth app) on loopback, its admin the login that
``sotalign cluster-secrets`` wrote into a home of the test's own, as on a cluster's head. A train and a
sweep (its own local Ray cluster, whose processes read the same home) log to it with planted secrets: an
object-store key in the environment, the MLflow password and the Ray token in their files; a location with
a password in it, given with ``--set``, is refused and named without it. Then every file left (the
server's database and artifacts, the sweeps' folders) and every line printed is searched for each secret.
"""

from __future__ import annotations

import base64
import os
import signal
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from orchestrator.credentials import MIN_PASSWORD_CHARS

URI_SECRET = "uRiSeCrEt0123456789"  # the password of a URI given with --set
ENV_SECRET = "eNvSeCrEt0123456789"  # an object-store key in the environment
TINY = {
    "data": {"dataset": "synthetic", "n_pairs": 32, "n_unpaired": 200, "n_val": 40},
    "align": {"head_dim": 16, "steps": 20, "batch_unpaired": 64, "log_every": 10, "eval_every": 10},
    "run": {"workers": 0},
}


def cli(args: list[str], env: dict, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def status(url: str, login: tuple[str, str] | None = None) -> int:
    request = urllib.request.Request(url)
    if login:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(login).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture(scope="module")
def head(tmp_path_factory, free_port, serving_ui):
    """A home with the cluster's secrets and an authenticating server on it: (env, folder, server URL, login)."""
    folder = tmp_path_factory.mktemp("head")
    home = folder / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_", "AWS_"))}
    env |= {"HOME": str(home), "MLFLOW_DISABLE_TELEMETRY": "true"}
    made = cli(["cluster-secrets"], env, folder)
    assert made.returncode == 0, made.stderr
    token, login_file = home / ".ray" / "auth_token", home / ".mlflow" / "credentials"
    assert made.stdout.split() == ["made", str(token), "made", str(login_file)]
    again = cli(["cluster-secrets"], env, folder)
    assert again.stdout.split() == ["kept", str(token), "kept", str(login_file)]  # never overwritten
    for secret_file in (token, login_file):
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    password = login_file.read_text().split("mlflow_tracking_password = ")[1].strip()
    assert len(password) >= MIN_PASSWORD_CHARS and password not in made.stdout + made.stderr
    port = free_port()
    server, _ = serving_ui(
        ["--auth", "--tracking-uri", f"sqlite:///{folder / 'server' / 'mlflow.db'}", "--port", str(port)],
        folder,
        env,
    )
    try:
        yield env, folder, f"http://127.0.0.1:{port}", ("sotalign", password), token.read_text().strip()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


def test_the_server_refuses_a_request_without_the_login(head):
    _, _, url, login, _ = head
    api = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert status(api) == 401
    assert status(api, (login[0], "wrong-password-123")) == 401
    assert status(api, login) == 200
    assert status(f"{url}/health") == 200  # open: the project's reachability check needs no login


def test_runs_land_with_the_login_and_no_secret_is_stored_or_printed(head, tmp_path):
    from mlflow import MlflowClient

    env, folder, url, login, token = head
    env = {**env, "AWS_SECRET_ACCESS_KEY": ENV_SECRET, "AWS_ACCESS_KEY_ID": "AKIDPLANTED", "RAY_ADDRESS": "local"}
    store_uri = f"s3://AKIDPLANTED:{URI_SECRET}@bucket/store"
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump({"name": "leak", **TINY}))
    space = {
        "name": "leaky",
        "base": TINY | {"run": {"workers": 0, "storage_path": str(tmp_path / "ray")}},
        "metric": "val/mean_recall_at_1",
        "num_samples": 1,
        "sampler": {"type": "grid"},
        "parameters": {"teacher": {"type": "categorical", "choices": ["procrustes"]}},
    }
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    printed = []
    for args in (["train", "exp.yaml"], ["sweep", "space.yaml"]):
        done = cli([*args, "--tracking-uri", url], env, tmp_path)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        printed.append(done.stdout + done.stderr)
    # a location with a password in it is refused before anything is written, named without the password
    for args, key in (
        (["train", "exp.yaml"], "data.store"),
        (["sweep", "space.yaml"], "data.store"),
        (["train", "exp.yaml"], "run.storage_path"),
    ):
        bad = cli([*args, "--set", f"{key}={store_uri}", "--tracking-uri", url], env, tmp_path)
        assert bad.returncode == 2 and f"{key} s3://***@bucket/store: a location with credentials" in bad.stderr, (
            bad.stderr[-3000:]
        )
        printed.append(bad.stdout + bad.stderr)

    client = MlflowClient(url)  # this process: the login from the environment
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = login
    try:
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    finally:
        del os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]
    finished = [r for r in runs if r.info.status == "FINISHED" and "mean_recall_at_1" in r.data.metrics]
    assert len(finished) == 2, [(r.info.run_name, r.info.status) for r in runs]  # the train's run and the trial's
    assert len(runs) == 3  # the train's run, the sweep's and its trial's: none from the refused commands

    secrets = {
        "MLflow password": login[1],
        "Ray token": token,
        "object-store key": ENV_SECRET,
        "URI password": URI_SECRET,
    }
    stored = [p for root in (folder / "server", tmp_path) for p in root.rglob("*") if p.is_file()]
    assert any(p.name == "config.yaml" for p in stored) and any(p.name == "best_config.yaml" for p in stored)
    leaks = [f"{what} in {p}" for p in stored for what, secret in secrets.items() if secret.encode() in p.read_bytes()]
    leaks += [f"{what} printed" for text in printed for what, secret in secrets.items() if secret in text]
    assert not leaks


def test_serving_beyond_loopback_takes_a_login_or_says_it_goes_without(tmp_path, monkeypatch, capsys):
    from orchestrator.cli import main

    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.mlflow/credentials
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    store = ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    assert main(["ui", *store, "--host", "0.0.0.0"]) == 2
    assert "--host 0.0.0.0 serves beyond this machine: add --auth" in capsys.readouterr().err
    assert main(["ui", *store, "--host", "0.0.0.0", "--auth"]) == 2
    assert "--auth needs an MLflow login" in capsys.readouterr().err
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "me")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "short")
    assert main(["ui", *store, "--auth"]) == 2
    assert "at least 12 characters" in capsys.readouterr().err
    assert not (tmp_path / "basic_auth.ini").exists()  # refused before anything was written


def test_cluster_secrets_makes_a_kept_file_private_and_replaces_an_unusable_one(tmp_path, monkeypatch, capsys):
    from orchestrator.cli import main

    monkeypatch.setenv("HOME", str(tmp_path))
    token, login = tmp_path / ".ray" / "auth_token", tmp_path / ".mlflow" / "credentials"
    token.parent.mkdir()
    token.write_text("a" * 64)  # as a local `ray.init()` leaves it: world-readable
    token.chmod(0o644)
    login.parent.mkdir()
    login.write_text("")  # unusable: no login in it
    assert main(["cluster-secrets"]) == 0
    assert capsys.readouterr().out.split() == ["kept", str(token), "made", str(login)]
    assert token.read_text() == "a" * 64 and "mlflow_tracking_password" in login.read_text()
    assert {stat.S_IMODE(p.stat().st_mode) for p in (token, login)} == {0o600}


def test_a_server_whose_admin_has_another_password_is_refused(tmp_path, free_port, serving_ui):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | {"HOME": str(tmp_path)}
    args = ["--auth", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--port", str(free_port())]
    first, _ = serving_ui(
        args, tmp_path, env | {"MLFLOW_TRACKING_USERNAME": "me", "MLFLOW_TRACKING_PASSWORD": "a" * 16}
    )
    first.send_signal(signal.SIGTERM)
    first.wait(timeout=60)
    again = cli(["ui", *args], env | {"MLFLOW_TRACKING_USERNAME": "me", "MLFLOW_TRACKING_PASSWORD": "b" * 16}, tmp_path)
    assert again.returncode == 2 and "the server refuses this MLflow login" in again.stderr, again.stderr[-2000:]
