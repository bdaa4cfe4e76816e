"""Several Ray nodes on this machine that share no disk, each a `ray start --block` process tree as
on a real cluster: a head that offers only the trial drivers' resource, and one-CPU worker nodes,
each with its own working folder and temp dirs and (as root, with unshare) its own view of the
folder ``unshared``, a tmpfs that nothing else sees. The embedding store, the Train checkpoints and
the MLflow artifacts live on an S3-compatible server (moto's, on loopback); every run logs to one
MLflow server over HTTP.

- a run whose storage_path, or a sweep whose store, the worker nodes do not see, or that logs to a
  sqlite file, is refused before any training; so is a sweep whose store was fine when it was
  submitted to a head alone, once its trial starts on a node that joined later (``min_workers: 0``);
- a sweep's trials (in their actors, and as Train runs) run on different nodes, read a real
  embedded dataset from S3 and log to one MLflow server, with the Optuna study and the Tune state
  on the head as on one node;
- 2 Train workers on two nodes, one of which is lost mid-run (every process of it killed, as a
  preempted spot instance): the run goes on from its latest checkpoint on S3 on the remaining
  nodes and ends where the uninterrupted one-process run ends.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import optuna
import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient

from orchestrator.cluster import LOCAL_TRAIN_SETTINGS
from orchestrator.experiment_file import split_tree
from sotalign.data.registry import load_dataset

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
    dir and worker-port ranges; ``lose`` kills every process of one node at once. Token authentication
    is on, as in the cluster files: every node and driver started with ``env`` reads the cluster's token
    from ``token_file`` (``RAY_AUTH_TOKEN_PATH``, so that nothing of this machine's ~/.ray is used)."""

    def __init__(self, folder: Path, free_port, env: dict[str, str] | None = None) -> None:
        self.folder, self.free_port = folder, free_port
        # Ray's session folder holds AF_UNIX sockets (107-byte paths at most): a short path, not pytest's
        # (under pytest-xdist, /tmp/pytest-of-root/pytest-N/popen-gw1/... is too long)
        self.ray_temp = Path(tempfile.mkdtemp(prefix="ray-nodes-"))  # the head's; worker nodes make their own
        self.temp_dirs = [self.ray_temp]
        self.port, self.dashboard = free_port(), free_port()
        self.token_file = folder / "ray_token"
        self.token_file.write_text(secrets.token_hex(32))  # what `sotalign cluster-secrets` makes
        self.token_file.chmod(0o600)
        self.env = {
            **os.environ,
            **LOCAL_TRAIN_SETTINGS,
            "RAY_AUTH_MODE": "token",  # for every node and driver, as the cluster files' ~/.bashrc
            "RAY_AUTH_TOKEN_PATH": str(self.token_file),
            "RAY_health_check_period_ms": "1000",  # the GCS declares a lost node dead in ~3 s, not Ray's ~15 s
            "RAY_health_check_failure_threshold": "3",
            **(env or {}),
        }
        self.processes: dict[str, subprocess.Popen] = {}
        self.lost: set[str] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, name: str, *flags: str, wrap: tuple[str, ...] = (), env: dict[str, str] | None = None) -> None:
        """A node in its own working folder (relative paths of its processes resolve there) with its
        own temp dirs, as on a machine of its own; in ``env`` where given, else the cluster's."""
        index = len(self.processes)
        ports = [
            f"--dashboard-agent-listen-port={self.free_port()}",
            f"--min-worker-port={31000 + 200 * index}",
            f"--max-worker-port={31199 + 200 * index}",
        ]
        home = self.folder / name
        (home / "tmp").mkdir(parents=True, exist_ok=True)
        if "--head" not in flags:
            self.temp_dirs.append(Path(tempfile.mkdtemp(prefix=f"ray-{name}-")))  # short: AF_UNIX paths
            ports.append(f"--temp-dir={self.temp_dirs[-1]}")
        log = open(self.folder / f"{name}.log", "w")
        self.processes[name] = subprocess.Popen(
            [*wrap, RAY, "start", "--block", *flags, *ports],
            env={**(env or self.env), "TMPDIR": str(home / "tmp")},
            cwd=home,
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

    def add(self, name: str, wrap: tuple[str, ...] = (), env: dict[str, str] | None = None) -> None:
        """A one-CPU worker node, marked by a custom resource of its name."""
        flags = (f"--address={self.address}", "--num-cpus=1", f"--resources={json.dumps({name: 1})}")
        self.start(name, *flags, wrap=wrap, env=env)

    def nodes(self) -> list[dict]:
        """The State API's node list (the head's dashboard, with the token), [] while it does not answer."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.dashboard}/api/v0/nodes?limit=100",
            headers={"Authorization": f"Bearer {self.token_file.read_text()}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
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
        for folder in self.temp_dirs:
            shutil.rmtree(folder, ignore_errors=True)


PRIVATE_VIEW = os.geteuid() == 0 and shutil.which("unshare") is not None  # mount namespaces for the workers
IMAGE, TEXT = "packaged:efficientnet-lite0?image_size=32", "packaged:all-minilm-l6-v2"  # the packaged weights
N_ITEMS = 120  # OpenMoji pairs in the WebDataset on S3: 30 pairs, 20 validation, 30 test, 40 unpaired


def private_view(folder: Path) -> tuple[str, ...]:
    """A command prefix: run in a mount namespace with an empty tmpfs over ``folder`` (a disk of its own)."""
    if not PRIVATE_VIEW:
        return ()
    return (
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        f'mount -t tmpfs tmpfs "{folder}" && exec "$0" "$@"',
    )


@pytest.fixture(scope="module")
def bucket(moto_endpoint):
    """A bucket on the session's S3 server, the AWS environment pointing at it (this process, the nodes,
    the MLflow server), and a real dataset there: OpenMoji pairs as WebDataset shards, embedded by
    `sotalign embed` into ``s3://BUCKET/store``."""
    import boto3

    from orchestrator.cli import main
    from sotalign.data import fs
    from tests.orchestrator.test_own_data import add, png

    env = {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",  # moto accepts any credentials
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    name = "multinode-store"
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        fs._remote.cache_clear()
        boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
        emoji = load_dataset("openmoji")
        for shard in range(2):
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as tar:
                for i in range(shard * N_ITEMS // 2, (shard + 1) * N_ITEMS // 2):
                    add(tar, f"{i:06d}.png", png(emoji.load_image(i)))
                    add(tar, f"{i:06d}.txt", emoji.captions[list(emoji.caption_image).index(i)].encode())
            fs.write_bytes(f"s3://{name}/raw/{shard:05d}.tar", buffer.getvalue())
        shards = f"s3://{name}/raw/{{00000..00001}}.tar"
        embed = ["embed", "--dataset", shards, "--name", "moji", "--encoder", IMAGE, "--encoder", TEXT]
        assert main([*embed, "--out", f"s3://{name}/store", "--device", "cpu"]) == 0
        yield SimpleNamespace(url=f"s3://{name}", env=env, shards=shards, embed=embed)
    fs._remote.cache_clear()


def moji(store: str) -> dict:
    """The data section of an experiment on the embedded WebDataset: its pairing hidden but for 30 pairs."""
    return {
        "dataset": "moji",
        "store": store,
        "image_encoder": IMAGE,
        "text_encoder": TEXT,
        "pool_split": "all",
        "test_split": None,
        "n_test": 30,
        "n_val": 20,
        "n_pairs": 30,
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, free_port, bucket):
    folder = tmp_path_factory.mktemp("nodes")
    nodes = LocalNodes(folder, free_port, bucket.env)
    unshared = folder / "unshared"  # every worker node mounts an empty tmpfs here: only the head sees its files
    unshared.mkdir()
    try:
        nodes.start_head()
        for count, name in enumerate(("node_a", "node_b", "node_c"), start=2):
            nodes.add(name, wrap=private_view(unshared))
            nodes.wait_for(
                count
            )  # one at a time: a raylet that has not registered within 30 s aborts (Ray's own limit)
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory, free_port, bucket):
    """A real MLflow server over HTTP (what the cluster files start on the head), its artifacts on S3."""
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
            "--artifacts-destination",
            f"{bucket.url}/mlflow",
        ],
        env={**os.environ, **bucket.env},
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


def s3_keys(location: str) -> list[str]:
    from sotalign.data import fs

    return fs.list_files(location, recursive=True)


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


def experiment_file(folder: Path, storage: str | None = None, **align) -> Path:
    tree = {
        **TREE,
        "align": {**TREE["align"], **align},
        "run": {**TREE["run"], "storage_path": storage or str(folder / "checkpoints")},
    }
    path = folder / "experiment.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def run_of(output: str, uri: str):
    run_id = output.split("MLflow run ")[1].split()[0]
    return MlflowClient(uri).get_run(run_id)


def sweep_space(folder: Path, name: str, base: dict, **changes) -> Path:
    """A two-trial grid (SAIL and SOTAlign) over ``base``, written to ``folder / NAME.yaml``."""
    space = {
        "name": name,
        "base": base,
        "metric": "val/mean_recall_at_1",
        "mode": "max",
        "max_concurrent": 2,
        "sampler": {"type": "grid"},
        "parameters": {"method": {"type": "categorical", "choices": ["sail", "sotalign"]}},
        **changes,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def embedded_here(bucket, store: Path) -> None:
    """The S3 dataset embedded again into a folder of this node (the head's disk)."""
    from orchestrator.cli import main

    assert main([*bucket.embed, "--out", str(store), "--device", "cpu"]) == 0


def finished_runs(server: str, experiment: str) -> tuple[list, list]:
    """(parent, children) runs of the sweep logged to ``experiment``."""
    client = MlflowClient(server)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id]
    return parent, children


def test_a_store_on_the_heads_disk_is_refused_where_a_trial_starts_on_a_node_that_joined_later(
    tmp_path, free_port, bucket, server
):
    """``min_workers: 0``: at submit the cluster is its head alone, so a store on its disk passes; the
    trial waits for a CPU, a worker node joins, and the trial, started there, refuses the store that
    node does not see: one error, no training."""
    if not PRIVATE_VIEW:
        pytest.skip("a node with its own view of the disk needs root and unshare (mount namespace)")
    (tmp_path / "unshared").mkdir()
    store = tmp_path / "unshared" / "store"
    embedded_here(bucket, store)
    nodes = LocalNodes(tmp_path, free_port, bucket.env)
    try:
        nodes.start_head()
        base = {"name": "joined", "data": moji(str(store)), "align": {"steps": 20, "head_dim": 16}}
        base["run"] = {"workers": 0, "storage_path": str(tmp_path / "ray")}
        driver = cli(nodes, tmp_path, "sweep", str(sweep_space(tmp_path, "joined", base)), "--tracking-uri", server)
        client, deadline = MlflowClient(server), time.monotonic() + RUN_S
        while not client.get_experiment_by_name("joined"):  # the sweep passed its checks at submit
            assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()[0][-3000:]
            time.sleep(0.5)
        nodes.add("late", wrap=private_view(tmp_path / "unshared"))
        out, _ = driver.communicate(timeout=RUN_S)
    finally:
        nodes.stop()
    assert driver.returncode == 2, out[-3000:]
    error = [line for line in out.splitlines() if line.startswith("error:")]
    assert error and f"data.store {store} is not on node" in error[-1], out[-3000:]
    assert "where this trial started" in error[-1] and "s3://" in error[-1]
    parent, children = finished_runs(server, "joined")
    assert not children  # refused before a run started


def test_unshared_storage_stores_and_a_sqlite_store_are_refused_before_training(cluster, server, bucket, tmp_path):
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
    assert refused.returncode == 2 and "is not shared: 3 of the cluster's 4 nodes" in out, out[-3000:]
    assert all(cluster.node_id(name)[:8] in out for name in ("node_a", "node_b", "node_c"))  # each blind node named
    assert list(storage.iterdir()) == []  # no checkpoint, no marker left behind
    assert not MlflowClient(server).search_experiments(filter_string="name = 'multinode'")  # no run started

    store = cluster.folder / "unshared" / "store"  # on the head's disk alone
    embedded_here(bucket, store)
    base = {"name": "local-store", "data": moji(str(store)), "run": {"workers": 0}}
    refused = cli(cluster, tmp_path, "sweep", str(sweep_space(tmp_path, "local", base)), "--tracking-uri", server)
    out, _ = refused.communicate(timeout=RUN_S)
    assert refused.returncode == 2 and f"data.store {store} is a folder that 3 of the cluster's 4 nodes" in out, out
    assert "s3://" in out.splitlines()[-1]  # what to do instead
    assert not MlflowClient(server).search_experiments(filter_string="name = 'local-store'")


def test_embed_on_the_cluster_refuses_to_complete_a_table_its_actors_wrote_on_other_disks(cluster, bucket, tmp_path):
    """`embed --ray` into a folder of the head: the actors (on the workers: the head has no CPU) write
    their shards to their own disks, so the head sees none and writes no manifest."""
    if not PRIVATE_VIEW:
        pytest.skip("a node with its own view of the disk needs root and unshare (mount namespace)")
    store = cluster.folder / "unshared" / "ray-store"
    args = ["embed", "--ray", "--actors", "1", "--dataset", bucket.shards, "--name", "moji", "--encoder", IMAGE]
    driver = cli(cluster, tmp_path, *args, "--out", str(store))
    out, _ = driver.communicate(timeout=RUN_S)
    assert driver.returncode == 2, out[-3000:]
    assert "1 of 1 shards of" in out and "are not in the store as this node sees it" in out, out[-3000:]
    assert not list(store.rglob("_COMPLETE.json"))  # nothing marked complete


def test_a_sweep_runs_its_trials_on_different_nodes_reading_the_store_from_s3(cluster, server, bucket, tmp_path):
    base = {
        "name": "multinode-sweep",
        "data": moji(f"{bucket.url}/store"),
        "align": {"head_dim": 16, "steps": 40, "batch_unpaired": 32, "log_every": 20, "eval_every": 20},
        "run": {"workers": 0, "storage_path": str(tmp_path / "ray")},  # two trials, each on a worker's CPU
    }
    out = finished(
        cli(cluster, tmp_path, "sweep", str(sweep_space(tmp_path, "spread", base)), "--tracking-uri", server)
    )
    parent, children = finished_runs(server, "multinode-sweep")
    runs = parent + children
    assert len(parent) == 1 and len(children) == 2 and all(r.info.status == "FINISHED" for r in runs), out[-3000:]
    assert {r.data.tags["dataset"] for r in children} == {"moji"} and all(
        0 <= r.data.metrics["mean_recall_at_1"] <= 100 for r in children
    )
    nodes = {
        r.data.tags["ray.worker_nodes"] for r in children
    }  # the head offers no CPU: each trial took a worker node's
    assert len(nodes) == 2 and nodes <= {cluster.node_id(name) for name in ("node_a", "node_b", "node_c")}
    client = MlflowClient(server)
    assert {a.path for a in client.list_artifacts(children[0].info.run_id)} >= {"config.yaml", "eval.json", "model"}
    assert any(key.endswith("/eval.json") for key in s3_keys(f"{bucket.url}/mlflow"))  # the artifacts are on S3
    folder = tmp_path / "ray" / "sweeps" / "spread"  # on the driver's disk: the Optuna study and Tune's state
    study = optuna.load_study(study_name="spread", storage=f"sqlite:///{folder / 'optuna.db'}")
    assert [t.state for t in study.trials].count(optuna.trial.TrialState.COMPLETE) == 2
    from ray import tune

    assert tune.Tuner.can_restore(str(folder / "tune"))


def test_train_trials_on_two_nodes_read_the_store_and_checkpoint_on_s3(cluster, server, bucket, tmp_path):
    storage = f"{bucket.url}/train-sweep"
    base = {
        "name": "multinode-train-sweep",
        "data": moji(f"{bucket.url}/store"),
        "align": {"head_dim": 16, "steps": 40, "batch_unpaired": 32, "log_every": 20, "eval_every": 20},
        "run": {"workers": 1, "checkpoint_every": 20, "storage_path": storage},  # a Train worker per trial
    }
    path = sweep_space(tmp_path, "train-spread", base)
    out = finished(cli(cluster, tmp_path, "sweep", str(path), "--tracking-uri", server))
    parent, children = finished_runs(server, "multinode-train-sweep")
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in parent + children), out[-3000:]
    nodes = {r.data.tags["ray.worker_nodes"] for r in children}  # one-CPU nodes: two concurrent workers, two nodes
    assert len(nodes) == 2 and nodes <= {cluster.node_id(name) for name in ("node_a", "node_b", "node_c")}
    checkpoints = {key.split("/checkpoint_")[0] for key in s3_keys(storage) if "/checkpoint_" in key}
    assert len(checkpoints) == 2  # each Train run's checkpoints are on S3


def test_two_workers_on_two_nodes_survive_losing_one_and_equal_one_process(
    cluster, server, bucket, tmp_path, uninterrupted, same_model
):
    storage = f"{bucket.url}/checkpoints"  # every node reaches it; a node-local folder would die with its node
    path = experiment_file(tmp_path, storage, steps=200, log_every=40, eval_every=40)
    tree = yaml.safe_load(path.read_text())
    tree["run"] = {**tree["run"], "checkpoint_every": 40, "max_failures": 2}
    path.write_text(yaml.safe_dump(tree))
    driver = cli(cluster, tmp_path, "train", str(path), "--tracking-uri", server)
    deadline = time.monotonic() + RUN_S

    def checkpoints() -> int:
        return len({key.rsplit("/", 1)[0] for key in s3_keys(storage) if "/checkpoint_" in key})

    while checkpoints() < 2:  # the first one is surely registered
        assert driver.poll() is None and time.monotonic() < deadline, (
            driver.communicate()[0][-3000:] if driver.poll() is not None else "no checkpoint"
        )
        time.sleep(0.5)
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
