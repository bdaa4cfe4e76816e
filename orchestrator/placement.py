"""Free the Train workers' placement groups that Ray leaks when Tune stops a trial (README
"Known limits"): Tune kills the stopped trial's driver, and Ray keeps a placement group until
both its creator actor and its job are dead, so the dead Train controller's worker group lives as
long as the sweep's driver; Ray Train 2.60's detached cleaner does not always remove it. Its CPUs
then stay reserved and starve every later Train run on the cluster.

A placement group counts as leaked when it is CREATED, older than ``min_age_s``, holds no
actor that is alive or starting, and is not a Tune trial's own (those carry the trial
drivers' ``TRAIN_DRIVER_RESOURCE`` and may wait for their actor while queued).
"""

from __future__ import annotations

import time

LEAK_AGE_S = 10.0  # a worker group requests its actors as soon as its placement group is ready
SETTLE_S = 60.0  # a stopped trial's controller dies asynchronously; Ray's graceful actor shutdown takes up to 30 s
POLL_S = 1.0
LIVE_STATES = (
    "PENDING",
    "CREATED",
    "RESCHEDULING",
)  # all but REMOVED: a pending group takes its CPUs once they free up
CONTROLLER_CLASS = "TrainController"  # ray.train.v2's controller actor, which creates the worker groups


def remove_leaked_placement_groups(min_age_s: float = LEAK_AGE_S) -> int:
    """Remove the leaked placement groups of the connected cluster; return how many."""
    now = time.time_ns()
    leaked = [g for g in _worker_groups() if not g.in_use and now - g.created_ns >= min_age_s * 1e9]
    _remove(leaked)
    return len(leaked)


def free_job_worker_groups(timeout_s: float = SETTLE_S) -> int:
    """Once all of this job's trials are over (the end of a sweep), every worker placement group
    the job created is leaked. A stopped trial's Train controller dies asynchronously, and until
    its process has exited it may still create a group (it restarts its workers when the stop
    reaches it as an error); a group outlives its creator actor while the job lives. So wait for
    the job's controllers to be gone, then remove all its worker groups (removal kills any worker
    left in them); return how many were removed."""
    import ray

    job = ray.get_runtime_context().get_job_id()
    deadline = time.monotonic() + timeout_s
    while _live_controllers(job) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    mine = [g for g in _worker_groups(LIVE_STATES) if g.job == job]
    _remove(mine)
    return len(mine)


def _live_controllers(job: str) -> int:
    """This job's Train controllers that may still create a placement group: those not DEAD, and
    those DEAD whose worker process still runs. Ray marks a controller DEAD as soon as its handle
    goes out of scope (the stopped trial's driver released it) and only then asks its process to
    exit; an async actor first drains its in-flight ``run``, which restarts its workers (killed
    with their dead owner) in a new group. That group's creator is already dead, so Ray never frees
    it (seen in Ray's logs: the controller marked DEAD at t, SIGTERM at t + 19 ms, "draining 1
    in-flight task", a new group submitted at t + 191 ms, the worker gone at t + 372 ms). A dead
    controller's pid reused by another live Ray worker on its node would hold the wait to its
    timeout: a delay, never a leak."""
    import ray
    from ray.util.state import list_actors, list_workers

    address = ray.get_runtime_context().gcs_address
    filters = [("job_id", "=", job), ("class_name", "=", CONTROLLER_CLASS)]
    controllers = list_actors(address=address, filters=filters, limit=10_000)
    running = set()
    if any(a.state == "DEAD" for a in controllers):
        # raise_on_missing_output=False: Ray counts the rows its GCS filtered out (is_alive) as missing
        alive = list_workers(
            address=address, filters=[("is_alive", "=", True)], limit=10_000, raise_on_missing_output=False
        )
        running = {(w.node_id, w.pid) for w in alive}
    return sum(a.state != "DEAD" or (a.node_id, a.pid) in running for a in controllers)


class _Group:
    def __init__(self, state, used: set[str], now_ns: int):
        self.id = state.placement_group_id
        self.job = state.creator_job_id
        self.in_use = self.id in used
        self.created_ns = int((state.stats or {}).get("creation_request_received_ns") or now_ns)


def _worker_groups(states: tuple[str, ...] = ("CREATED",)) -> list[_Group]:
    """Placement groups in ``states`` that are not a Tune trial driver's."""
    import ray
    from ray.util.state import list_actors, list_placement_groups

    # the connected cluster's address: "auto" fails when a node runs several clusters
    address = ray.get_runtime_context().gcs_address
    # the State API serves at most 10,000 rows a call (RAY_MAX_LIMIT_FROM_API_SERVER)
    actors = list_actors(address=address, detail=True, limit=10_000)
    used = {a.placement_group_id for a in actors if a.state != "DEAD" and a.placement_group_id}
    now = time.time_ns()
    return [
        _Group(g, used, now)
        for g in list_placement_groups(address=address, detail=True, limit=10_000)
        if g.state in states and not any("TRAIN_DRIVER_RESOURCE" in b["unit_resources"] for b in g.bundles)
    ]


def _remove(groups: list[_Group]) -> None:
    import ray
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    for group in groups:
        remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(group.id))))
