"""What `bench/replay_vs_real.py` records of the host around the engine during a run: from /proc the gateway
process's CPU seconds ÷ wall (its utilisation), its involuntary context switches, the host's CPU pressure
(PSI `some`: the share of wall time some runnable task waited for a core), the cores' busy share; and how long
the gateway took to answer GET /healthz, asked every half second (its own delay on that host)."""

from __future__ import annotations

import os
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

TICKS = os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> list[int]:
    """`pid` and its descendants (each task's `children` file; those gone meanwhile are skipped)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    return out


def process_cpu_s(pid: int) -> tuple[float, int, int]:
    """(CPU seconds, voluntary, involuntary context switches) of `pid`'s tree, all threads; 0s if gone."""
    cpu, vol, invol = 0.0, 0, 0
    for p in tree(pid):
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        cpu += (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime (fields 14, 15)
        for line in status.splitlines():
            if line.startswith("voluntary_ctxt_switches"):
                vol += int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches"):
                invol += int(line.split()[1])
    return cpu, vol, invol


def cpu_pressure_us() -> int | None:
    """PSI's cumulative `some` stall of the host's CPUs, microseconds (None without PSI)."""
    try:
        first = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return None
    return int(first.rsplit("total=", 1)[1])


def cores_busy_ticks() -> tuple[int, int]:
    """(busy, all) ticks of every core since boot (/proc/stat's cpu line; idle + iowait are not busy)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(values) - values[3] - values[4], sum(values)


@dataclass(frozen=True)
class HostSample:
    wall: float
    gateway: tuple[float, int, int]
    pressure_us: int | None
    cores: tuple[int, int]


def sample(gateway_pid: int) -> HostSample:
    return HostSample(time.monotonic(), process_cpu_s(gateway_pid), cpu_pressure_us(), cores_busy_ticks())


def host_share(first: HostSample, last: HostSample) -> dict[str, Any]:
    """The run's figures between two samples: `gateway_busy` (its CPU ÷ wall), `gateway_invol` (its
    involuntary ÷ all context switches: preempted while it wanted a core), `cpu_some` (the host's PSI share of
    wall with a task waiting for a core), `cores_busy` (the busy share of every core), and `host_share`
    (1 − cpu_some: the share of wall a runnable task found a core free — the gateway's on a shared host)."""
    wall = last.wall - first.wall
    cpu = last.gateway[0] - first.gateway[0]
    vol, invol = last.gateway[1] - first.gateway[1], last.gateway[2] - first.gateway[2]
    some = (last.pressure_us - first.pressure_us) / 1e6 / wall if None not in (first.pressure_us, last.pressure_us) \
        and wall > 0 else None
    busy, total = last.cores[0] - first.cores[0], last.cores[1] - first.cores[1]
    return {"wall_s": round(wall, 3), "gateway_cpu_s": round(cpu, 3),
            "gateway_busy": round(cpu / wall, 4) if wall > 0 else None,
            "gateway_invol": round(invol / (vol + invol), 4) if vol + invol else None,
            "cpu_some": round(some, 4) if some is not None else None,
            "host_share": round(1 - some, 4) if some is not None else None,
            "cores_busy": round(busy / total, 4) if total else None}


class HealthProbe:
    """GET /healthz on the gateway every `every_s` during the run (a thread): the seconds each answer took."""

    def __init__(self, url: str, every_s: float = 0.5) -> None:
        self.url, self.every_s, self.latencies_s = url, every_s, []  # type: ignore[var-annotated]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(self.every_s):
            asked = time.perf_counter()
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=10) as r:
                    r.read()
            except OSError:
                continue
            self.latencies_s.append(time.perf_counter() - asked)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def figures(self) -> dict[str, Any]:
        got = sorted(self.latencies_s)
        return {"healthz_n": len(got), "healthz_p50_s": round(median(got), 5) if got else None,
                "healthz_mean_s": round(sum(got) / len(got), 5) if got else None}
