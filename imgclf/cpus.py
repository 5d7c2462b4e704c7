"""How many CPUs this process may use: what sizes imgclf's thread pools and parallel stages.

    >>> usable_cpus()
    4
"""

import math
import os


def usable_cpus(cgroup_root="/sys/fs/cgroup"):
    """CPUs this process may use: its CPU affinity, capped by a cgroup CPU quota if it has one.

    In a container limited to 4 CPUs on a 64-core node, `os.cpu_count()` says 64; the quota
    (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`) says 4.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = None
    try:
        with open(os.path.join(cgroup_root, "cpu.max")) as f:
            limit, period = f.read().split()[:2]
        if limit != "max":
            quota = int(limit) / int(period)
    except (OSError, ValueError):
        try:
            with open(os.path.join(cgroup_root, "cpu", "cpu.cfs_quota_us")) as f:
                limit = int(f.read())
            with open(os.path.join(cgroup_root, "cpu", "cpu.cfs_period_us")) as f:
                period = int(f.read())
            if limit > 0 and period > 0:
                quota = limit / period
        except (OSError, ValueError):
            pass
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)
