"""CPU budgets for the workers rows: a cgroup that caps its processes at N cores' worth of time.

On a 2-core machine wrk and the upstream share the cores with the gateway, so two workers
left unconfined cannot show how the gateway scales: the more of the machine they take, the
less is left for the load they serve (README "Performance"). Given each a budget smaller than
a core, one worker and two workers leave the same room to everything else, and the ratio of
their throughputs is the gateway's own scaling, as on a machine with cores to spare.

The kernel's CFS bandwidth control does the capping: cgroup v1's cpu controller
(cpu.cfs_quota_us) or cgroup v2's (cpu.max). Needs root; `available()` says why not.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CpuBudget", "available"]

_V1 = Path("/sys/fs/cgroup/cpu")
_V2 = Path("/sys/fs/cgroup")
# A short period: a tree over its budget waits at most this long, so latency stays readable.
_PERIOD_US = 10_000


def _root() -> Path | None:
    if (_V1 / "cpu.cfs_quota_us").exists():
        return _V1
    controllers = _V2 / "cgroup.controllers"
    if controllers.exists() and "cpu" in controllers.read_text().split():
        return _V2
    return None


def available() -> str | None:
    """None when budgets can be set here, else what is missing."""
    root = _root()
    if root is None:
        return "no cgroup cpu controller (cgroup v1 cpu or v2 cpu.max)"
    if not os.access(root, os.W_OK):
        return f"{root} is not writable (run as root)"
    try:  # a container's own cgroup may refuse a child, or its controller
        CpuBudget("probe", 0.5).remove()
    except OSError as exc:
        return f"cannot make a cgroup in {root}: {exc.strerror or exc}"
    return None


class CpuBudget:
    """One cgroup, its processes capped together at `cores` (0.6: 60% of one core's time)."""

    def __init__(self, name: str, cores: float) -> None:
        root = _root()
        if root is None:
            raise RuntimeError(available())
        self.path = root / f"gw-bench-{name}-{os.getpid()}"
        quota = round(cores * _PERIOD_US)
        if root is _V2:
            # v2 gives a child cgroup the cpu controller only once its parent passes it on.
            (root / "cgroup.subtree_control").write_text("+cpu")
        self.path.mkdir(exist_ok=True)
        try:
            if root is _V1:
                (self.path / "cpu.cfs_period_us").write_text(str(_PERIOD_US))
                (self.path / "cpu.cfs_quota_us").write_text(str(quota))
            else:
                (self.path / "cpu.max").write_text(f"{quota} {_PERIOD_US}")
        except OSError:
            self.remove()
            raise

    def hold(self, pid: int) -> None:
        """Move the process (all its threads) into the budget; threads and children it starts
        later start in it."""
        (self.path / "cgroup.procs").write_text(str(pid))

    def remove(self) -> None:
        """After its processes are gone: the cgroup itself."""
        try:
            self.path.rmdir()
        except OSError:
            pass
