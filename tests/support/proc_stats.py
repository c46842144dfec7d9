"""What /proc says about a process and its children: RSS, open fds by kind (client, upstream or Redis
sockets by port, unix sockets, files, pipes), CPU seconds. Used by bench/soak.py and the tests that
check a gateway gives back what an outage made it open."""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

PAGE_TICKS = os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                todo += [int(c) for c in Path(f"/proc/{current}/task/{task}/children").read_text().split()]
        except OSError:
            continue
    return out


def _socket_ports(pid: int) -> dict[int, tuple[int, int]]:
    """{socket inode: (local port, remote port)} of the TCP sockets the process can see."""
    out = {}
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            out[int(cols[9])] = (int(cols[1].rsplit(":", 1)[1], 16), int(cols[2].rsplit(":", 1)[1], 16))
    return out


def fd_kinds(pid: int, ports: dict[str, set[int]]) -> Counter[str]:
    """The process's fds by what they are: client connections, upstream, redis, unix sockets, TCP sockets
    already closed (a peer's reset) but not yet released, files, pipes."""
    sockets = _socket_ports(pid)
    try:
        unix = {int(line.split()[6]) for line in Path(f"/proc/{pid}/net/unix").read_text().splitlines()[1:]}
    except OSError:
        unix = set()
    kinds: Counter[str] = Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if not target.startswith("socket:["):
            kinds["files" if target.startswith("/") else target.split(":")[0]] += 1
            continue
        inode = int(target[8:-1])
        if inode not in sockets:
            kinds["unix" if inode in unix else "closed-tcp"] += 1  # closed: gone from the TCP table, fd still held
            continue
        local, remote = sockets[inode]
        kind = next((k for k, p in ports.items() if local in p or remote in p), "other-tcp")
        kinds[kind] += 1
    return kinds


def proc_sample(pid: int, ports: dict[str, set[int]] | None = None) -> dict[str, Any]:
    """RSS (kB), open fds (and what they are) and CPU seconds of the process and its children."""
    rss = fds = 0
    cpu = 0.0
    kinds: Counter[str] = Counter()
    for each in descendants(pid):
        try:
            status = Path(f"/proc/{each}/status").read_text()
            rss += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
            fds += len(os.listdir(f"/proc/{each}/fd"))
            stat = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(stat[11]) + int(stat[12])) / PAGE_TICKS  # utime + stime
            kinds += fd_kinds(each, ports or {})
        except (OSError, StopIteration):
            continue
    return {"rss_kb": rss, "fds": fds, "cpu_s": round(cpu, 2), "fd_kinds": dict(kinds)}
