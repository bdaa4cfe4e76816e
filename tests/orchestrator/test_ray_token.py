"""Ray token authentication as the cluster files set it up, on nodes of this machine: the head refuses a
driver and a worker node without the cluster's token (or with another one) and accepts them with it; the
dashboard answers only with the token (its health check stays open). Every client is a process of its own
with an explicit environment and an empty home, so that no token of this machine is found by accident."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.orchestrator.test_multinode import LocalNodes

REFUSED_S = 120  # a refused node gives up after Ray's 30 s registration limit; generous for a busy machine
DRIVER = """
import ray, sys
from orchestrator.cluster import connect_ray
from sotalign.checks import InputError
try:
    connect_ray()
except InputError as error:
    print("InputError:", error)
    sys.exit(2)
print("nodes", len([n for n in ray.nodes() if n["Alive"]]))
print("task", ray.get(ray.remote(lambda: 6 * 7).options(num_cpus=0).remote()))
"""


@pytest.fixture(scope="module")
def head(tmp_path_factory, free_port):
    nodes = LocalNodes(tmp_path_factory.mktemp("token-nodes"), free_port)
    try:
        nodes.start_head()
        yield nodes
    finally:
        nodes.stop()


def client_env(head: LocalNodes, tmp_path, **auth: str) -> dict[str, str]:
    """The head's environment without its token settings, in an empty home, plus ``auth``."""
    env = {k: v for k, v in head.env.items() if not k.startswith("RAY_AUTH")}
    (tmp_path / "home").mkdir(exist_ok=True)
    # a refused driver retries the GCS 20 times, 1 s apart, by default: 2 tries keep the test short
    return env | {"HOME": str(tmp_path / "home"), "RAY_gcs_server_port_wait_time_s": "2"} | auth


def driver(head: LocalNodes, env: dict[str, str], tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", DRIVER],
        env={**env, "RAY_ADDRESS": head.address},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )


def dashboard(head: LocalNodes, path: str, token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"http://127.0.0.1:{head.dashboard}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.parametrize(
    "auth",
    [{"RAY_AUTH_MODE": "disabled"}, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}],
    ids=["no token", "another token"],
)
def test_a_driver_without_the_token_is_refused_with_a_clear_error(head, tmp_path, auth):
    done = driver(head, client_env(head, tmp_path, **auth), tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr[-3000:]
    error = done.stdout.strip().splitlines()[-1]
    assert error.startswith("InputError:") and f"RAY_ADDRESS={head.address}" in error and "token" in error, error


def test_a_driver_with_the_token_runs_tasks(head, tmp_path):
    env = client_env(head, tmp_path, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(head.token_file))
    done = driver(head, env, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "task 42" in done.stdout


def test_the_dashboard_answers_only_with_the_token(head):
    token = head.token_file.read_text()
    assert dashboard(head, "/api/v0/nodes") == 401
    assert dashboard(head, "/api/v0/nodes", "f" * 64) == 403
    assert dashboard(head, "/api/v0/nodes", token) == 200
    assert dashboard(head, "/api/gcs_healthz") == 200  # open: a health check needs no token


def test_a_worker_node_joins_with_the_token_and_not_without(head, tmp_path):
    head.add("tokenless", env=client_env(head, tmp_path, RAY_AUTH_MODE="disabled"))  # the old cluster files' worker
    deadline = time.monotonic() + REFUSED_S
    while head.processes["tokenless"].poll() is None and time.monotonic() < deadline:
        time.sleep(1)
    assert head.processes["tokenless"].poll() not in (None, 0)  # gave up
    assert len(head.alive()) == 1
    log = (head.folder / "tokenless.log").read_text()
    assert "InvalidAuthToken" in log, log[-3000:]
    head.lost.add("tokenless")  # gone, as expected: not a failure of the cluster

    head.add("tokened", env=client_env(head, tmp_path, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(head.token_file)))
    head.wait_for(2)
    nodes = json.dumps(head.alive())
    assert "tokened" in nodes and "tokenless" not in nodes
