"""One local Ray cluster for every orchestrator test that needs Ray (docs/notes/stack.md: keep it to one).

Two CPUs for Train workers, the custom resource that Tune trial drivers take, and the dashboard
on: Train V2 cleans up a stopped trial's placement group through the State API it serves.
Subprocesses (a sweep driver the tests kill) join it through ``RAY_ADDRESS``.
"""

import os

import pytest

from orchestrator.cluster import LOCAL_TRAIN_SETTINGS

FAST_TRAIN = {  # as `sotalign` sets for a local cluster; a placement-group leak fails in 5 min, not never
    **LOCAL_TRAIN_SETTINGS,
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "300",
    "RAY_USAGE_STATS_ENABLED": "0",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    os.environ.update(FAST_TRAIN)
    context = ray.init(num_cpus=2, resources={"TRAIN_DRIVER_RESOURCE": 4}, log_to_driver=False)
    yield context.address_info["gcs_address"]
    ray.shutdown()


@pytest.fixture(scope="session")
def free_port():
    """A function that returns a TCP port free on loopback right now."""
    import socket

    def pick() -> int:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return probe.getsockname()[1]

    return pick


@pytest.fixture(scope="session")
def uninterrupted():
    """A function: the experiment trained in this process without Ray, and its test metrics (what a
    Train run, however interrupted or spread, must equal)."""
    from sotalign.experiments.experiment import load_data

    def train(experiment):
        data = load_data(experiment)
        model = data.fit(experiment.config())
        return model, data.evaluate(model)

    return train


@pytest.fixture(scope="session")
def same_model():
    """A function asserting that a saved model folder holds the weights of ``model``."""
    import torch

    from sotalign import AlignedModel

    def check(folder, model) -> None:
        trained = AlignedModel.load(folder)
        for (name, a), b in zip(trained.state_dict().items(), model.state_dict().values()):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), name

    return check


@pytest.fixture(scope="session")
def serving_ui():
    """A function: ``sotalign ui ARGS`` started as its own process, returned once it prints that it is
    serving, with the lines it printed by then (the caller stops it)."""
    import subprocess
    import sys
    import time

    def start(args: list[str], cwd, env: dict) -> tuple[subprocess.Popen, list[str]]:
        command = [sys.executable, "-m", "orchestrator.cli", "ui", *args]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=cwd, env=env)
        lines, deadline = [], time.monotonic() + 300
        while time.monotonic() < deadline and not any("serving" in line for line in lines):
            lines.append(proc.stdout.readline())
            assert lines[-1] or proc.poll() is None, f"sotalign ui exited: {''.join(lines)}"
        return proc, lines

    return start
