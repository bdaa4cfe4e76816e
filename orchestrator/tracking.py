"""MLflow conventions in one place (docs/DESIGN.md, "MLflow conventions").

Default tracking store: ``sqlite:///<working dir>/mlflow.db`` (MLflow 3.17 refuses the plain file
store); ``--tracking-uri`` or ``MLFLOW_TRACKING_URI`` for a server, which must answer before any
training starts. One experiment per benchmark; tags on every run: vision_encoder, text_encoder,
encoder_pair, method, teacher, dataset, n_pairs, n_unpaired. Metric names never contain ``@``.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import yaml

from orchestrator.redaction import known_secrets, redact, redact_tree
from sotalign.checks import InputError

log = logging.getLogger(__name__)

DEFAULT_DB = "mlflow.db"
# A shared runs-table view stored on every experiment the project creates: grouped by encoder pair,
# with the pair, method and headline metrics as columns. MLflow 3.17's UI opens it from the link
# ``#/experiments/<id>/runs?viewStateShareKey=encoder_pairs`` (the tag format its UI reads).
PAIRS_VIEW = "encoder_pairs"
PAIRS_VIEW_STATE = {
    "selectedColumns": [
        "tags.`encoder_pair`",
        "tags.`method`",
        "metrics.`mean_recall_at_1`",
        "metrics.`val/mean_recall_at_1`",
    ],
    "groupBy": "tag.average.encoder_pair",
}


def tracking_uri(explicit: str | None = None) -> str:
    """The URI to log to; a relative sqlite path is made absolute (Ray actors run elsewhere)."""
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / DEFAULT_DB}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{Path(uri.removeprefix('sqlite:///')).resolve()}"
    return uri


def ensure_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast (InputError) when a tracking server does not answer; sqlite needs its folder."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as response:
                if response.status != 200:
                    raise InputError(f"MLflow tracking server {uri} answered /health with HTTP {response.status}")
        except (urllib.error.URLError, OSError) as error:
            raise InputError(
                f"MLflow tracking server {uri} is unreachable ({error}); start it or use a sqlite:/// URI"
            ) from None
    elif uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    else:
        raise InputError(f"unsupported tracking URI {uri!r}: use sqlite:///path/mlflow.db or http(s)://host:port")


def metric_key(name: str) -> str:
    return name.replace("@", "_at_")


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Serialise the first use of a sqlite store between processes: two runs started at once on a
    new ``mlflow.db`` would both create its schema ("duplicate column name: step") or the same
    experiment. A lock file beside the database; a server store needs none."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    path = Path(uri.removeprefix("sqlite:///"))
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@functools.lru_cache(maxsize=8)
def client(uri: str):
    """An ``MlflowClient`` for ``uri``, checked reachable once per process (a sqlite store is created
    under a lock, see ``_store_lock``); no global MLflow state."""
    from mlflow.tracking import MlflowClient

    ensure_reachable(uri)
    with _store_lock(uri):
        mlflow_client = MlflowClient(uri)
        mlflow_client.search_experiments(max_results=1)  # creates or upgrades a sqlite store's schema
    return mlflow_client


def experiment_id(uri: str, name: str) -> str:
    """The id of experiment ``name``, created if missing (with a sqlite store, its artifacts go
    beside the database in ``mlartifacts/<name>``, not into ``./mlruns``)."""
    mlflow_client = client(uri)
    with _store_lock(uri):
        existing = mlflow_client.get_experiment_by_name(name)
        if existing is not None:
            return existing.experiment_id
        location = None
        if uri.startswith("sqlite:///"):
            location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts" / name).resolve().as_uri()
        exp_id = mlflow_client.create_experiment(name, artifact_location=location)
        mlflow_client.set_experiment_tag(exp_id, f"mlflow.sharedViewState.{PAIRS_VIEW}", json.dumps(PAIRS_VIEW_STATE))
    return exp_id


def start_run(
    uri: str, experiment: str, name: str, tags: dict[str, str], params: dict, parent_run_id: str | None = None
) -> str:
    """Create a RUNNING run with its tags and params (a child of ``parent_run_id`` if given), secrets
    hidden (``orchestrator.redaction``); return its id."""
    from mlflow.entities import Param

    mlflow_client = client(uri)
    secrets = known_secrets()
    tags = {k: redact(str(v), secrets) for k, v in redact_tree(tags, secrets).items()} | {"mlflow.runName": name}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    run = mlflow_client.create_run(experiment_id(uri, experiment), tags=tags, run_name=name)
    params = redact_tree(params, secrets)
    items = [Param(k, "None" if v is None else redact(str(v), secrets)) for k, v in params.items()]
    for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        mlflow_client.log_batch(run.info.run_id, params=items[start : start + 100])
    return run.info.run_id


def log_metrics(uri: str, run_id: str, values: dict, step: int | None = None) -> None:
    """Numeric entries of ``values`` as metrics (``@`` renamed), at ``step``."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [
        Metric(metric_key(k), float(v), now, step or 0)
        for k, v in values.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    ]
    client(uri).log_batch(run_id, metrics=metrics)


def log_model_artifacts(
    uri: str, run_id: str, model, experiment: dict, metrics: dict, files: dict | None = None
) -> None:
    """The resolved config (YAML), ``eval.json``, the model and its teacher (safetensors), and ``files``:
    artifact path (``plots/training.png``) -> a function writing it to the path it is given."""
    mlflow_client = client(uri)
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "config.yaml").write_text(yaml.safe_dump(redact_tree(experiment), sort_keys=False))
        Path(tmp, "eval.json").write_text(json.dumps(metrics, indent=2))
        model.save(Path(tmp) / "model")
        for name, write in (files or {}).items():
            (Path(tmp) / name).parent.mkdir(parents=True, exist_ok=True)
            write(Path(tmp) / name)
        mlflow_client.log_artifacts(run_id, tmp)


def final_metrics(uri: str, run) -> dict | None:
    """The final metrics a finished run logged (its ``eval.json``, written before the run ends
    FINISHED), or None if the run did not finish or they cannot be read (then it is trained again)."""
    from mlflow.exceptions import MlflowException

    if run.info.status != "FINISHED":
        return None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return json.loads(Path(client(uri).download_artifacts(run.info.run_id, "eval.json", tmp)).read_text())
    except (MlflowException, OSError, ValueError) as error:  # deleted, unreachable or torn: not worth failing the trial
        log.warning("finished run %s: its eval.json cannot be read (%s); training it again", run.info.run_id, error)
        return None


def set_tags(uri: str, run_id: str, tags: dict) -> None:
    """Tags on a run, secrets hidden (``orchestrator.redaction``)."""
    mlflow_client, secrets = client(uri), known_secrets()
    for key, value in redact_tree(tags, secrets).items():
        mlflow_client.set_tag(run_id, key, redact(str(value), secrets))


def end_run(uri: str, run_id: str, status: str = "FINISHED") -> None:
    client(uri).set_terminated(run_id, status)


@contextlib.contextmanager
def ending_run(uri: str, run_id: str) -> Iterator[dict[str, str]]:
    """End the run when the block ends: FINISHED, KILLED on Ctrl-C, FAILED on an error. The block
    may set ``outcome["status"]`` (e.g. KILLED for a sweep Tune stopped without raising)."""
    outcome = {"status": "FINISHED"}
    try:
        yield outcome
    except KeyboardInterrupt:
        end_run(uri, run_id, "KILLED")
        raise
    except Exception:
        end_run(uri, run_id, "FAILED")
        raise
    end_run(uri, run_id, outcome["status"])


def runs_link(server: str, exp_id: str, grouped: bool = False) -> str:
    """The UI's runs table of an experiment (``grouped``: the encoder-pair view)."""
    link = f"{server.rstrip('/')}/#/experiments/{exp_id}/runs"
    return f"{link}?viewStateShareKey={PAIRS_VIEW}" if grouped else link
