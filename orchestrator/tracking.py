"""MLflow conventions in one place (docs/DESIGN.md, "MLflow conventions").

Default tracking store: ``sqlite:///<working dir>/mlflow.db`` (MLflow 3.17 refuses the plain file
store); ``--tracking-uri`` or ``MLFLOW_TRACKING_URI`` for a server, which must answer before any
training starts. One experiment per benchmark; tags on every run: vision_encoder, text_encoder,
encoder_pair, method, teacher, dataset, n_pairs, n_unpaired. Metric names never contain ``@``.
"""

from __future__ import annotations

import json
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import yaml

DEFAULT_DB = "mlflow.db"


def tracking_uri(explicit: str | None = None) -> str:
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / DEFAULT_DB}"


def ensure_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast (ValueError) when a tracking server does not answer; sqlite needs its folder."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as response:
                if response.status != 200:
                    raise ValueError(f"MLflow tracking server {uri} answered /health with HTTP {response.status}")
        except (urllib.error.URLError, OSError) as error:
            raise ValueError(f"MLflow tracking server {uri} is unreachable ({error}); start it or use a sqlite:/// URI") from None
    elif uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    else:
        raise ValueError(f"unsupported tracking URI {uri!r}: use sqlite:///path/mlflow.db or http(s)://host:port")


def encoder_tags(image_encoder: str, text_encoder: str) -> dict[str, str]:
    return {"vision_encoder": image_encoder, "text_encoder": text_encoder, "encoder_pair": f"{image_encoder} + {text_encoder}"}


def metric_key(name: str) -> str:
    return name.replace("@", "_at_")


class RunLogger:
    """Logs one MLflow run per trained model into one experiment."""

    def __init__(self, uri: str, experiment: str):
        import mlflow

        ensure_reachable(uri)
        self.mlflow = mlflow
        mlflow.set_tracking_uri(uri)
        existing = mlflow.get_experiment_by_name(experiment)
        if existing is None and uri.startswith("sqlite:///"):  # artifacts beside the database, not in ./mlruns
            artifacts = Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts" / experiment
            mlflow.create_experiment(experiment, artifact_location=artifacts.resolve().as_uri())
        self.experiment_id = mlflow.set_experiment(experiment).experiment_id

    def log(self, model, metrics: dict[str, float], tags: dict[str, str], name: str) -> str:
        """Params (the config), per-step history, final metrics, and artifacts (config YAML, eval.json, model)."""
        config = model.config.to_dict()
        with self.mlflow.start_run(run_name=name, tags={**tags, "teacher": config["teacher"]}) as run:
            self.mlflow.log_params({k: "None" if v is None else v for k, v in config.items()})
            for record in model.history:
                step = int(record["step"])
                self.mlflow.log_metrics({metric_key(k): float(v) for k, v in record.items() if k not in ("step", "best_step")}, step=step)
            self.mlflow.log_metrics({metric_key(k): float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
            with tempfile.TemporaryDirectory() as tmp:
                Path(tmp, "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
                Path(tmp, "eval.json").write_text(json.dumps(metrics, indent=2))
                model.save(Path(tmp) / "model")
                self.mlflow.log_artifacts(tmp)
            return run.info.run_id

    def runs_link(self, server: str) -> str:
        return f"{server.rstrip('/')}/#/experiments/{self.experiment_id}/runs"
