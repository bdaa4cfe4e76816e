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


def remove_leaked_placement_groups(min_age_s: float = LEAK_AGE_S) -> int:
    """Remove the leaked placement groups of the connected cluster; return how many."""
    import ray
    from ray.util.placement_group import PlacementGroup, remove_placement_group
    from ray.util.state import list_actors, list_placement_groups

    # the State API serves at most 10,000 rows a call (RAY_MAX_LIMIT_FROM_API_SERVER)
    used = {a.placement_group_id for a in list_actors(detail=True, limit=10_000) if a.state != "DEAD" and a.placement_group_id}
    now = time.time_ns()
    removed = 0
    for group in list_placement_groups(detail=True, limit=10_000):
        created = int((group.stats or {}).get("creation_request_received_ns") or now)
        trial_driver = any("TRAIN_DRIVER_RESOURCE" in bundle["unit_resources"] for bundle in group.bundles)
        if group.state == "CREATED" and group.placement_group_id not in used and not trial_driver \
                and now - created >= min_age_s * 1e9:
            remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(group.placement_group_id))))
            removed += 1
    return removed
