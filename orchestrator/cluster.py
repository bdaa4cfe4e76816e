"""Connecting to Ray, and what a cluster of several nodes asks of a run before it starts.

``connect_ray`` joins ``RAY_ADDRESS``'s cluster or the one running on this node (``ray up``'s
head), else (or with ``RAY_ADDRESS=local``) starts a local one. ``check_storage`` refuses an object
store (``s3://`` store or checkpoints) that does not answer or lacks its bucket, before any work. ``check_cluster_fit`` refuses, before any training, what works
on one node but not on several: an MLflow sqlite file that Train workers on other nodes cannot
reach, a ``run.storage_path`` for Train checkpoints that some node does not see (a restarted
worker on another node would find no checkpoint to resume from), and for a sweep an embedding
store on one node's disk (its trials start on any node).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from orchestrator.experiment_file import RunOptions
from orchestrator.logs import chatty
from sotalign.checks import InputError
from sotalign.data import fs
from sotalign.experiments.experiment import Experiment

LOCAL_TRAIN_SETTINGS = {  # one machine: poll faster, skip the cluster-only watchers (docs/notes/stack.md: ~3 s per run)
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION": "0",
}
LOCAL_DRIVER_RESOURCE = 4  # a token amount on a local cluster: each trial driver takes 0.01 (docs/notes/stack.md)
SHARED_CHECK_MARKER = ".sotalign-shared-check-"
STORE_ADVICE = (
    "Put the store on object storage (`sotalign embed --out s3://BUCKET/store`, data.store: s3://BUCKET/store) "
    "or on a folder every node mounts (NFS)"
)


def connect_ray() -> None:
    """Join ``RAY_ADDRESS``'s cluster or the one running on this node, else start a local one with
    the custom resource that Tune trial drivers take (docs/notes/stack.md); ``RAY_ADDRESS=local`` (Ray's
    word for it) starts that local one even where another cluster runs on this node. What the workers
    and trial actors print (their progress) is forwarded to this driver's terminal, unless ``--quiet``."""
    import ray

    if ray.is_initialized():
        return
    from ray.exceptions import AuthenticationError

    forward = chatty()
    address = os.environ.get("RAY_ADDRESS") or "auto"
    if address != "local":
        try:
            ray.init(address=address, log_to_driver=forward)
            return
        except AuthenticationError as error:  # token mode here, and no token found
            raise InputError(f"RAY_ADDRESS={address}: {str(error).splitlines()[0]} {TOKEN_HELP}") from None
        except ConnectionError as error:
            if _refused_token(error):  # a cluster answered, and refused this driver's token (or its lack of one)
                raise InputError(
                    f"the Ray cluster at RAY_ADDRESS={address} refused this driver: it asks for its token. {TOKEN_HELP}"
                ) from None
            if address != "auto":
                raise InputError(f"no Ray cluster answers at RAY_ADDRESS={address}") from None
    for name, value in LOCAL_TRAIN_SETTINGS.items():
        os.environ.setdefault(name, value)
    # the cluster's processes inherit this environment, and Ray's State API (orchestrator/placement.py, in
    # the trials) reads RAY_ADDRESS before its address argument: "local" there would look for a cluster anew
    os.environ.pop("RAY_ADDRESS", None)
    ray.init(address="local", resources={"TRAIN_DRIVER_RESOURCE": LOCAL_DRIVER_RESOURCE}, log_to_driver=forward)


TOKEN_HELP = (
    "A cluster's drivers need RAY_AUTH_MODE=token and the cluster's token: ~/.ray/auth_token (the cluster "
    "files put it on every node), RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN (docs: Cluster, security)."
)


def _refused_token(error: BaseException) -> bool:
    """Whether a failed ``ray.init`` met a cluster that refused its token: Ray says so only in the errors
    it chains (the GCS's "InvalidAuthToken", gRPC's UNAUTHENTICATED)."""
    text = ""
    while error is not None:
        text += str(error)
        error = error.__cause__ or error.__context__
    return any(mark in text for mark in ("InvalidAuthToken", "UNAUTHENTICATED", "Authentication token"))


def check_storage(experiments: list[Experiment], options: RunOptions) -> None:
    """Every object-store location the runs read or write answers and has its bucket: the experiments'
    stores, and the Train checkpoints' ``run.storage_path`` when Train workers run (InputError naming it)."""
    stores = [e.data.store for e in experiments if e.data.dataset != "synthetic"]
    for location in dict.fromkeys(stores + ([options.storage_path] if options.workers else [])):
        fs.check_reachable(location)


def alive_nodes() -> list[dict]:
    """The connected cluster's live nodes (``ray.nodes()`` entries)."""
    import ray

    return [node for node in ray.nodes() if node["Alive"]]


def check_cluster_fit(uri: str, options: RunOptions, store: str | None = None) -> None:
    """On a cluster of several nodes: runs must log to a tracking server, the Train checkpoints of
    ``options.storage_path`` must be a URI or a folder every node sees, and so must the embedding
    ``store`` of a sweep (its trials read it on whichever node they start); InputError otherwise.
    One node, or ``workers: 0`` in the calling process, asks for none of it. A sweep calls this at
    submit and again where each trial starts: nodes that joined since (``min_workers: 0``) count."""
    nodes = alive_nodes()
    if len(nodes) < 2:
        return
    if uri.startswith("sqlite:"):
        raise InputError(
            f"MLflow tracking URI {uri} is a file on this node, but the Ray cluster has {len(nodes)} nodes "
            "and every run logs from the node it runs on: log to an MLflow server "
            "(--tracking-uri http://<head>:5000; the cluster files export MLFLOW_TRACKING_URI on the head)"
        )
    if options.workers > 0 and "://" not in options.storage_path:
        blind = nodes_not_seeing(Path(options.storage_path), nodes)
        if blind:
            raise InputError(
                f"run.storage_path {options.storage_path} is not shared: {len(blind)} of the cluster's "
                f"{len(nodes)} nodes ({', '.join(blind)}) do not see it, and a Train worker restarted there "
                "could not resume from its checkpoints: set run.storage_path to s3://... / gs://... or a "
                "folder shared by every node (NFS)"
            )
    if store is not None and fs.is_remote(store):
        fs.check_reachable(store)  # from this node too: it needs the AWS settings that the driver had
    elif store is not None:
        here = ray_node_address()
        if not os.path.isdir(store):
            raise InputError(
                f"data.store {store} is not on node {here}, where this trial started: the cluster's nodes share "
                f"no disk with it. {STORE_ADVICE}"
            )
        blind = nodes_not_seeing(store, nodes, create=False)
        if blind:
            raise InputError(
                f"data.store {store} is a folder that {len(blind)} of the cluster's {len(nodes)} nodes "
                f"({', '.join(blind)}) do not see, and a sweep's trials read it where they start. {STORE_ADVICE}"
            )


def ray_node_address() -> str:
    """This process's Ray node, as ``nodes_not_seeing`` names nodes."""
    import ray

    context = ray.get_runtime_context()
    node = next((n for n in alive_nodes() if n["NodeID"] == context.get_node_id()), None)
    return f"{node['NodeManagerAddress']} ({node['NodeID'][:8]})" if node else context.get_node_id()[:8]


def nodes_not_seeing(folder: str | Path, nodes: list[dict], create: bool = True) -> list[str]:
    """IP addresses of the nodes on which a marker file written here into ``folder`` is absent
    (``create``: make the folder first, else it must exist). A relative folder is looked for
    relative to each node's working directory, as a process there would resolve it."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    folder = Path(folder)
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    marker = folder / f"{SHARED_CHECK_MARKER}{uuid.uuid4().hex}"
    marker.touch()
    try:
        sees = ray.remote(num_cpus=0)(os.path.exists)
        answers = ray.get(
            [
                sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(
                    str(marker)
                )
                for node in nodes
            ]
        )
    finally:
        marker.unlink(missing_ok=True)
    return [f"{node['NodeManagerAddress']} ({node['NodeID'][:8]})" for node, seen in zip(nodes, answers) if not seen]
