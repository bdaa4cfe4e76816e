"""Several Ray nodes on this machine, each a `ray start --block` process tree as on a real cluster:
a head that offers only the trial drivers' resource, and one-CPU worker nodes. Every run logs to
one MLflow server over HTTP.

- a run whose storage_path some node does not see (a node in its own mount namespace), or that
  logs to a sqlite file, is refused before any training;
- a sweep's trials run on different nodes, all in one MLflow server, with the Optuna study and
  the Tune state on the head as on one node;
- 2 Train workers on two nodes, one of which is lost mid-run (every process of it killed, as a
  preempted spot instance): the run goes on from its latest checkpoint on the remaining nodes
  and ends where the uninterrupted one-process run ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import optuna
import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient

from orchestrator.cluster import LOCAL_TRAIN_SETTINGS
from orchestrator.experiment_file import split_tree

RAY = str(Path(sys.executable).parent / "ray")
TREE = {  # adamw: Lion's sign update would turn float round-off into different steps
    "name": "multinode",
    "method": "sotalign",
    "seed": 5,
    "data": {"dataset": "synthetic", "n_pairs": 48, "n_unpaired": 600, "n_val": 80},
    "align": {
        "head_dim": 24,
        "steps": 60,
        "batch_unpaired": 97,
        "optimizer": "adamw",
        "lr": 3e-3,
        "eps_teacher": 0.05,
        "alpha": 10.0,
        "log_every": 10,
        "eval_every": 20,
    },
    "run": {"workers": 2, "checkpoint_every": 30},
}
NODE_START_S = 300  # a node joins in ~10 s on an idle 2-core machine; generous for a busy one
RUN_S = 900  # one run or sweep here takes 1-3 minutes


class LocalNodes:
    """Ray nodes as `ray start --block` process trees on this machine, with their own ports, temp
    dir and worker-port ranges; ``lose`` kills every process of one node at once."""

    def __init__(self, folder: Path, free_port) -> None:
        self.folder, self.free_port = folder, free_port
        # Ray's session folder holds AF_UNIX sockets (107-byte paths at most): a short path, not pytest's
        # (under pytest-xdist, /tmp/pytest-of-root/pytest-N/popen-gw1/... is too long)
        self.ray_temp = Path(tempfile.mkdtemp(prefix="ray-nodes-"))
        self.port, self.dashboard = free_port(), free_port()
        self.env = {
            **os.environ,
            **LOCAL_TRAIN_SETTINGS,
            "RAY_AUTH_MODE": "disabled",  # as the cluster files: `ray start --address` sends no token (docs/stack.md)
            "RAY_health_check_period_ms": "1000",  # the GCS declares a lost node dead in ~3 s, not Ray's ~15 s
            "RAY_health_check_failure_threshold": "3",
        }
        self.processes: dict[str, subprocess.Popen] = {}
        self.lost: set[str] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, name: str, *flags: str, wrap: tuple[str, ...] = ()) -> None:
        index = len(self.processes)
        ports = [
            f"--dashboard-agent-listen-port={self.free_port()}",
            f"--min-worker-port={31000 + 200 * index}",
            f"--max-worker-port={31199 + 200 * index}",
        ]
        log = open(self.folder / f"{name}.log", "w")
        self.processes[name] = subprocess.Popen(
            [*wrap, RAY, "start", "--block", *flags, *ports],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start_head(self) -> None:
        self.start(
            "head",
            "--head",
            f"--port={self.port}",
            "--num-cpus=0",
            '--resources={"TRAIN_DRIVER_RESOURCE":4}',
            f"--temp-dir={self.ray_temp}",
            f"--dashboard-port={self.dashboard}",
            f"--ray-client-server-port={self.free_port()}",
        )
        self.wait_for(1)

    def add(self, name: str, wrap: tuple[str, ...] = ()) -> None:
        """A one-CPU worker node, marked by a custom resource of its name."""
        self.start(name, f"--address={self.address}", "--num-cpus=1", f"--resources={json.dumps({name: 1})}", wrap=wrap)

    def nodes(self) -> list[dict]:
        """The State API's node list (the head's dashboard), [] while it does not answer."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.dashboard}/api/v0/nodes?limit=100", timeout=10
            ) as answer:
                return json.load(answer)["data"]["result"]["result"]
        except OSError:
            return []

    def alive(self) -> list[dict]:
        return [n for n in self.nodes() if n["state"] == "ALIVE"]

    def wait_for(self, count: int) -> None:
        deadline = time.monotonic() + NODE_START_S
        while len(self.alive()) != count:
            dead = [name for name, p in self.processes.items() if p.poll() is not None and name not in self.lost]
            assert not dead and time.monotonic() < deadline, (
                f"{count} nodes not alive (exited: {dead}): "
                + (self.folder / f"{(dead or ['head'])[0]}.log").read_text()[-3000:]
            )
            time.sleep(1)

    def node_id(self, name: str) -> str:
        return next(n["node_id"] for n in self.alive() if name in n["resources_total"])

    def lose(self, name: str) -> None:
        """Every process of node ``name`` killed at once (SIGKILL): a preempted machine."""
        self.lost.add(name)
        root = psutil.Process(self.processes[name].pid)
        for process in [*root.children(recursive=True), root]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        self.processes[name].wait(timeout=30)

    def stop(self) -> None:
        for process in reversed(self.processes.values()):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)  # `ray start --block` stops its node's processes
        for name, process in self.processes.items():
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.lose(name)
        shutil.rmtree(self.ray_temp, ignore_errors=True)


PRIVATE_VIEW = os.geteuid() == 0 and shutil.which("unshare") is not None  # a mount namespace for node_c


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, free_port):
    folder = tmp_path_factory.mktemp("nodes")
    nodes = LocalNodes(folder, free_port)
    unshared = folder / "unshared"  # node_c mounts an empty tmpfs here: it sees nothing the others write there
    unshared.mkdir()
    private = (
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        f'mount -t tmpfs tmpfs "{unshared}" && exec "$0" "$@"',
    )
    try:
        nodes.start_head()
        for count, name in enumerate(("node_a", "node_b", "node_c"), start=2):
            nodes.add(name, wrap=private if name == "node_c" and PRIVATE_VIEW else ())
            nodes.wait_for(
                count
            )  # one at a time: a raylet that has not registered within 30 s aborts (Ray's own limit)
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory, free_port):
    """A real MLflow server over HTTP (what the cluster files start on the head)."""
    folder = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "ui",
            "--tracking-uri",
            f"sqlite:///{folder / 'mlflow.db'}",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None and time.monotonic() < deadline, "the MLflow server did not start"
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    yield uri
    process.terminate()
    process.wait(timeout=60)


def cli(cluster: LocalNodes, folder: Path, *args: str) -> subprocess.Popen:
    """``sotalign ARGS`` as a driver of the multi-node cluster (a user's shell on the head)."""
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", *args],
        cwd=folder,
        env={**cluster.env, "RAY_ADDRESS": cluster.address},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finished(process: subprocess.Popen, timeout: float = RUN_S) -> str:
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, out[-4000:]
    return out


def experiment_file(folder: Path, **align) -> Path:
    tree = {
        **TREE,
        "align": {**TREE["align"], **align},
        "run": {**TREE["run"], "storage_path": str(folder / "checkpoints")},
    }
    path = folder / "experiment.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def run_of(output: str, uri: str):
    run_id = output.split("MLflow run ")[1].split()[0]
    return MlflowClient(uri).get_run(run_id)


def test_unshared_storage_and_a_sqlite_store_are_refused_before_training(cluster, server, tmp_path):
    sqlite = cli(
        cluster,
        tmp_path,
        "train",
        str(experiment_file(tmp_path)),
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    out, _ = sqlite.communicate(timeout=RUN_S)
    assert sqlite.returncode == 2 and "is a file on this node" in out and "4 nodes" in out, out[-3000:]
    assert not (tmp_path / "checkpoints").exists()
    if not PRIVATE_VIEW:
        pytest.skip("a node with its own view of the disk needs root and unshare (mount namespace)")

    storage = cluster.folder / "unshared" / "checkpoints"
    refused = cli(
        cluster,
        tmp_path,
        "train",
        str(experiment_file(tmp_path)),
        "--tracking-uri",
        server,
        "--set",
        f"run.storage_path={storage}",
    )
    out, _ = refused.communicate(timeout=RUN_S)
    assert refused.returncode == 2 and "is not shared: 1 of the cluster's 4 nodes" in out, out[-3000:]
    assert cluster.node_id("node_c")[:8] in out  # the node that cannot see it is named
    assert list(storage.iterdir()) == []  # no checkpoint, no marker left behind
    assert not MlflowClient(server).search_experiments(filter_string="name = 'multinode'")  # no run started


def test_a_sweep_runs_its_trials_on_different_nodes_into_one_server(cluster, server, tmp_path):
    space = yaml.safe_load((Path(__file__).resolve().parents[2] / "search_spaces" / "smoke.yaml").read_text())
    space.update(name="spread", max_concurrent=2)  # two trials, each on the one CPU of a worker node
    space["base"] = {
        **space["base"],
        "name": "multinode-sweep",
        "run": {"workers": 0, "storage_path": str(tmp_path / "ray")},
    }
    (tmp_path / "spread.yaml").write_text(yaml.safe_dump(space))
    out = finished(cli(cluster, tmp_path, "sweep", str(tmp_path / "spread.yaml"), "--tracking-uri", server))
    client = MlflowClient(server)
    experiment = client.get_experiment_by_name("multinode-sweep")
    runs = client.search_runs([experiment.experiment_id])
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id]
    assert len(parent) == 1 and len(children) == 2 and all(r.info.status == "FINISHED" for r in runs), out[-3000:]
    nodes = {
        r.data.tags["ray.worker_nodes"] for r in children
    }  # the head offers no CPU: each trial took a worker node's
    assert len(nodes) == 2 and nodes <= {cluster.node_id(name) for name in ("node_a", "node_b", "node_c")}
    assert {a.path for a in client.list_artifacts(children[0].info.run_id)} >= {"config.yaml", "eval.json", "model"}
    folder = tmp_path / "ray" / "sweeps" / "spread"  # on the driver's disk: the Optuna study and Tune's state
    study = optuna.load_study(study_name="spread", storage=f"sqlite:///{folder / 'optuna.db'}")
    assert [t.state for t in study.trials].count(optuna.trial.TrialState.COMPLETE) == 2
    from ray import tune

    assert tune.Tuner.can_restore(str(folder / "tune"))


def test_two_workers_on_two_nodes_survive_losing_one_and_equal_one_process(
    cluster, server, tmp_path, uninterrupted, same_model
):
    path = experiment_file(tmp_path, steps=200, log_every=40, eval_every=40)
    tree = yaml.safe_load(path.read_text())
    tree["run"] = {**tree["run"], "checkpoint_every": 40, "max_failures": 2}
    path.write_text(yaml.safe_dump(tree))
    driver = cli(cluster, tmp_path, "train", str(path), "--tracking-uri", server)
    deadline = time.monotonic() + RUN_S
    while len(list((tmp_path / "checkpoints").glob("*/checkpoint_*"))) < 2:  # the first one is surely registered
        assert driver.poll() is None and time.monotonic() < deadline, (
            driver.communicate()[0][-3000:] if driver.poll() is not None else "no checkpoint"
        )
        time.sleep(0.1)
    client = MlflowClient(server)
    run = client.search_runs(
        [client.get_experiment_by_name("multinode").experiment_id], "attributes.status = 'RUNNING'"
    )[0]
    before = run.data.tags["ray.worker_nodes"].split(",")
    assert len(before) == 2 and len(set(before)) == 2  # two ranks, two machines
    lost = next(
        name for name in ("node_a", "node_b", "node_c") if cluster.node_id(name) == before[0]
    )  # rank 0's machine
    lost_id = cluster.node_id(lost)
    cluster.lose(lost)
    out = finished(driver)

    run = client.get_run(run.info.run_id)
    after = run.data.tags["ray.worker_nodes"].split(",")
    assert run.info.status == "FINISHED" and lost_id not in after and len(set(after)) == 2
    assert run.data.metrics["resumed_from_step"] >= 40  # the MLflow run records the resume point
    model, expected = uninterrupted(split_tree(tree)[0])
    for key in ("mean_recall_at_1", "t2i_recall_at_5", "i2t_recall_at_10"):
        assert run.data.metrics[key] == pytest.approx(expected[key], abs=1e-6), (key, out[-2000:])
    same_model(client.download_artifacts(run.info.run_id, "model", str(tmp_path / "artifacts")), model)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss/total")] == list(
        range(40, 201, 40)
    )  # none twice
