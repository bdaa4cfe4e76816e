"""Free the Train workers' placement groups that Ray leaks when Tune stops a trial (README
"Known limits"): Tune kills the stopped trial's driver, and Ray Train 2.60's detached cleaner
does not always remove the dead controller's placement group, whose CPUs then stay reserved
and starve every later Train run on the cluster.

A placement group counts as leaked when it is CREATED, older than ``min_age_s``, holds no
actor that is alive or starting, and is not a Tune trial's own (those carry the trial
drivers' ``TRAIN_DRIVER_RESOURCE`` and may wait for their actor while queued).
"""

from __future__ import annotations

import time

LEAK_AGE_S = 10.0  # a worker group requests its actors as soon as its placement group is ready
SETTLE_S = 60.0  # a stopped trial's workers are killed asynchronously; Ray's graceful actor shutdown takes up to 30 s
POLL_S = 1.0


def remove_leaked_placement_groups(min_age_s: float = LEAK_AGE_S) -> int:
    """Remove the leaked placement groups of the connected cluster; return how many."""
    now = time.time_ns()
    leaked = [g for g in _worker_groups() if not g.in_use and now - g.created_ns >= min_age_s * 1e9]
    _remove(leaked)
    return len(leaked)


def free_job_worker_groups(timeout_s: float = SETTLE_S) -> int:
    """Once all of this job's trials are over (the end of a sweep), every worker placement group
    the job created is leaked: wait for the actors of stopped trials to die, removing each
    group once it is free; return how many were removed."""
    import ray

    job = ray.get_runtime_context().get_job_id()
    deadline = time.monotonic() + timeout_s
    removed = 0
    while True:
        mine = [g for g in _worker_groups() if g.job == job]
        free = [g for g in mine if not g.in_use]
        _remove(free)
        removed += len(free)
        if len(free) == len(mine) or time.monotonic() > deadline:
            return removed
        time.sleep(POLL_S)


class _Group:
    def __init__(self, state, used: set[str], now_ns: int):
        self.id = state.placement_group_id
        self.job = state.creator_job_id
        self.in_use = self.id in used
        self.created_ns = int((state.stats or {}).get("creation_request_received_ns") or now_ns)


def _worker_groups() -> list[_Group]:
    """CREATED placement groups that are not a Tune trial driver's."""
    import ray
    from ray.util.state import list_actors, list_placement_groups

    # the connected cluster's address: "auto" fails when a node runs several clusters
    address = ray.get_runtime_context().gcs_address
    # the State API serves at most 10,000 rows a call (RAY_MAX_LIMIT_FROM_API_SERVER)
    actors = list_actors(address=address, detail=True, limit=10_000)
    used = {a.placement_group_id for a in actors if a.state != "DEAD" and a.placement_group_id}
    now = time.time_ns()
    return [_Group(g, used, now) for g in list_placement_groups(address=address, detail=True, limit=10_000)
            if g.state == "CREATED" and not any("TRAIN_DRIVER_RESOURCE" in b["unit_resources"] for b in g.bundles)]


def _remove(groups: list[_Group]) -> None:
    import ray
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    for group in groups:
        remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(group.id))))
