"""Run a bench with its processes pinned to CPU sets by role — the gateway (`gateway.cli serve` and its workers),
the fake upstream, the rest (the bench's client) — and report how busy each set was, so that on a many-core machine
no part takes another's cores (scripts/device_cpu_bars.sh).

Run: python3 -m bench.cpu_partition [--gateway 0-7] [--upstream 8-11] [--client 12-15] -- python3 -m bench.X ...
By default the CPUs this process may use are split 8:4:4 (of 16) in that order: the gateway (up to 4 workers and
their supervisor) gets most; with 2 CPUs the client shares the last.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import time
from pathlib import Path

ROLES = (("gateway", ("gateway.cli serve", "gateway/cli.py serve", "serve_worker")),
         ("upstream", ("openai_upstream",)))


def cpu_set(text: str) -> set[int]:
    """'0-3,8' → {0, 1, 2, 3, 8}."""
    out: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        out |= set(range(int(low), int(high or low) + 1))
    return out


def default_sets(cpus: list[int]) -> dict[str, set[int]]:
    """The allowed CPUs split 8:4:4 (gateway, upstream, client), each part at least one CPU (shared if few)."""
    gateway = max(1, round(len(cpus) * 8 / 16))
    upstream = max(1, round(len(cpus) * 4 / 16))
    parts = (cpus[:gateway], cpus[gateway:gateway + upstream], cpus[gateway + upstream:])
    return {role: set(part or cpus[-1:]) for role, part in zip(("gateway", "upstream", "client"), parts)}


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:  # the process is gone
        return ""


def _role(pid: int, parents: dict[int, int], roles: dict[int, str | None]) -> str | None:
    """The role of the process or its nearest ancestor that has one (cached once found: a child read between
    its fork and its exec still shows its parent's command line)."""
    if roles.get(pid) is None:
        cmd = _read(f"/proc/{pid}/cmdline").replace("\0", " ")
        mine = next((role for role, marks in ROLES if any(m in cmd for m in marks)), None)
        parent = parents.get(pid, 0)
        roles[pid] = mine or (_role(parent, parents, roles) if parent in parents else None)
    return roles[pid]


def pin(root: int, sets: dict[str, set[int]], roles: dict[int, str | None], pinned: dict[str, set[int]]) -> None:
    """Every thread of each descendant of `root` with a role onto its role's CPU set."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _read(f"/proc/{entry}/stat")
            if stat:
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    family, grew = {root}, True
    while grew:
        more = {p for p, parent in parents.items() if parent in family} - family
        family |= more
        grew = bool(more)
    for pid in family - {root}:
        role = _role(pid, parents, roles)
        if role is None:
            continue
        for tid in os.listdir(f"/proc/{pid}/task") if os.path.isdir(f"/proc/{pid}/task") else ():
            try:
                if os.sched_getaffinity(int(tid)) != sets[role]:
                    os.sched_setaffinity(int(tid), sets[role])
            except OSError:  # the thread ended meanwhile
                continue
        pinned[role].add(pid)


def busy_ticks() -> dict[int, tuple[int, int]]:
    """Per CPU: (busy, total) jiffies since boot, from /proc/stat."""
    out = {}
    for line in _read("/proc/stat").splitlines():
        if line.startswith("cpu") and line[3].isdigit():
            name, *fields = line.split()
            ticks = [int(v) for v in fields]
            out[int(name[3:])] = (sum(ticks) - ticks[3] - ticks[4], sum(ticks))  # less idle and iowait
    return out


def share(a: dict[int, tuple[int, int]], b: dict[int, tuple[int, int]], cpus: set[int]) -> list[float]:
    """Busy share of each CPU in `cpus` between two samples."""
    return [(b[c][0] - a[c][0]) / max(b[c][1] - a[c][1], 1) for c in sorted(cpus) if c in a and c in b]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateway", help="CPU list, e.g. 0-7 (default: see above)")
    parser.add_argument("--upstream")
    parser.add_argument("--client")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    sets = default_sets(sorted(os.sched_getaffinity(0)))
    sets |= {role: cpu_set(text) for role, text in vars(args).items() if role in sets and text}
    os.sched_setaffinity(0, sets["client"])  # the bench (its client) and whatever else it starts inherit this
    child = subprocess.Popen(command)
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    roles: dict[int, str | None] = {}
    pinned: dict[str, set[int]] = {"gateway": set(), "upstream": set()}
    samples, last, last_at = [], busy_ticks(), time.monotonic()
    while child.poll() is None:
        pin(child.pid, sets, roles, pinned)
        if time.monotonic() - last_at >= 1.0:
            now = busy_ticks()
            samples.append({role: share(last, now, cpus) for role, cpus in sets.items()})
            last, last_at = now, time.monotonic()
        time.sleep(0.1)
    for role, cpus in sets.items():
        means = [statistics.mean(s[role]) for s in samples if s[role]]
        peaks = sorted(max(s[role]) for s in samples if s[role])
        if means:
            print(f"cpu_partition: {role} on CPUs {sorted(cpus)} ({len(pinned.get(role, ()))} processes pinned): "
                  f"busy {statistics.mean(means):.0%} on average, busiest CPU {peaks[len(peaks) * 9 // 10]:.0%} "
                  f"at p90 and {peaks[-1]:.0%} at most over {len(samples)} one-second samples")
    return child.returncode


if __name__ == "__main__":
    raise SystemExit(main())
