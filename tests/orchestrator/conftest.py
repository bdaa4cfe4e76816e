"""One local Ray cluster for every orchestrator test that needs Ray (docs/stack.md: keep it to one).

Two CPUs for Train workers, the custom resource that Tune trial drivers take, and the dashboard
on: Train V2 cleans up a stopped trial's placement group through the State API it serves.
Subprocesses (a sweep driver the tests kill) join it through ``RAY_ADDRESS``.
"""

import os

import pytest

from orchestrator.cluster import LOCAL_TRAIN_SETTINGS

FAST_TRAIN = {  # as `sotalign` sets for a local cluster; a placement-group leak fails in 60 s, not never
    **LOCAL_TRAIN_SETTINGS,
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
