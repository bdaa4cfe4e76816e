"""One local Ray cluster for every orchestrator test that needs Ray (docs/stack.md: keep it to one).

Two CPUs for Train workers, the custom resource that Tune trial drivers take, and the dashboard
on: Train V2 cleans up a stopped trial's placement group through the State API it serves.
Subprocesses (a sweep driver the tests kill) join it through ``RAY_ADDRESS``.
"""

import os

import pytest

FAST_TRAIN = {  # docs/stack.md: a few seconds less per Train run; a leak fails in 30 s, not never
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION": "0",
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "60",
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
