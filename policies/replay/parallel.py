"""Several policies' replays at once, one forked process each (the traffic is inherited, not copied
through a pipe; only each summary comes back): wall time divides by the cores, CPU time does not."""
from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any, TypeVar

T = TypeVar("T")


def in_processes(tasks: Sequence[Callable[[], T]], jobs: int) -> list[T]:
    """Each task's result, in order; at most `jobs` at a time (1: here, in this process)."""
    if jobs <= 1 or len(tasks) <= 1:
        return [task() for task in tasks]
    ctx = multiprocessing.get_context("fork")  # the task and its data go to the child without pickling
    results: list[Any] = [None] * len(tasks)
    for start in range(0, len(tasks), jobs):
        running = []
        for i in range(start, min(len(tasks), start + jobs)):
            receive, send = ctx.Pipe(duplex=False)
            process = ctx.Process(target=_one, args=(tasks[i], send), daemon=True)
            process.start()
            send.close()
            running.append((i, process, receive))
        for i, process, receive in running:
            try:
                ok, value = receive.recv()
            except EOFError:
                raise RuntimeError(f"replay process {i + 1} died (exit code {process.exitcode})") from None
            finally:
                process.join()
            if not ok:
                raise value
            results[i] = value
    return results


def _one(task: Callable[[], Any], send: Connection) -> None:
    try:
        send.send((True, task()))
    except BaseException as exc:  # noqa: BLE001 - handed to the parent, which raises it
        send.send((False, exc))
    finally:
        send.close()
