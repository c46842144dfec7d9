"""An EngineCore that runs the LLMEngine's step loop in a process of its own (as vLLM's engine core).

The server process keeps HTTP, tokenizing and the streams; the core process loads the model and
only steps. They talk over one pipe: ("add", seq_id, prompt, sampling, priority, arrival,
request_id) / ("abort", seq_id) / ("stop",) in, and ("step", outputs, snapshot, adds_seen) once per
step out. A thread of the core reads the pipe all the time, so the server's sends never wait for a
step to end (two full pipes would deadlock). Neither waits on the other's GIL, so on few cores the
step loop can use every core for torch.
"""
from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import multiprocessing
import multiprocessing.util
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from local_engine.admission import EngineLimits
from local_engine.async_engine import CoreSink
from local_engine.config import EngineConfig
from local_engine.engine import EngineStats, LLMEngine
from local_engine.errors import EngineError
from local_engine.sequence import Sequence

_EOF = ("eof",)  # what the core's pipe reader queues when the server's end closes

log = logging.getLogger(__name__)
IDLE_STATE_INTERVAL_S = 1.0  # an idle core still reports, so "recent" rates age


@dataclass(frozen=True)
class CoreFacts:
    """What the core process reports once its model is loaded."""

    limits: EngineLimits
    model_name: str
    kv_bytes_per_token: int
    kv_dtype: str
    device: str
    num_threads: int
    snapshot: EngineStats
    kernels: str = "torch"  # small steps' kernels: "native" or "torch" (LlamaModel.kernels_path)


class CoreStartFailed(ValueError):
    """The core process could not load its model (the message is the loader's)."""


class ProcessCore:
    """The server side of the pipe; ``launch`` starts the process and waits until its model is loaded."""

    def __init__(self, process: BaseProcess, conn: Connection, facts: CoreFacts) -> None:
        self.facts = facts
        self.limits = facts.limits
        self._process = process
        self._conn = conn
        self._snapshot = facts.snapshot
        self._adds_sent = 0
        self._adds_seen = 0
        self._sink: CoreSink | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lost = False

    @classmethod
    def launch(cls, config: EngineConfig) -> ProcessCore:
        ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads
        conn, child_conn = ctx.Pipe()
        process = ctx.Process(target=core_main, args=(child_conn, config, os.getpid()),
                              name="hybridgw-engine-core", daemon=True)
        process.start()
        # At exit, multiprocessing would SIGTERM this daemon (which it ignores) and wait for it
        # forever: kill it first, whatever ends this process before the lifespan's shutdown runs.
        multiprocessing.util.Finalize(process, process.kill, exitpriority=10)
        child_conn.close()
        try:
            message = conn.recv()
        except EOFError:
            process.join(5)
            raise CoreStartFailed(f"the engine core process exited while loading (code {process.exitcode})") from None
        except BaseException:  # Ctrl-C while loading: the core would otherwise load on, orphaned
            process.kill()
            process.join()
            conn.close()
            raise
        if message[0] != "ready":
            process.join(5)
            raise CoreStartFailed(message[1])
        return cls(process, conn, message[1])

    # --- EngineCore ------------------------------------------------------------------------------
    def start(self, sink: CoreSink) -> None:
        self._sink = sink
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._conn.fileno(), self._on_readable)

    def add(self, seq: Sequence) -> None:
        self._adds_sent += 1
        self._send(("add", seq.seq_id, seq.prompt_token_ids, seq.sampling, seq.priority, seq.arrival_time,
                    seq.request_id))

    def abort(self, seq_id: int) -> None:
        self._send(("abort", seq_id))

    def snapshot(self) -> EngineStats:
        return self._snapshot

    def num_unapplied_adds(self) -> int:
        return self._adds_sent - self._adds_seen

    def is_running(self) -> bool:
        return not self._lost and self._process.is_alive()

    def shutdown(self) -> None:
        """Ask the core to stop, and read on until it has (a core in the middle of sending a step
        must be able to finish that send to see the "stop")."""
        self._stop_reading()
        conn = self._conn
        deadline = time.monotonic() + 10.0
        try:
            conn.send(("stop",))
            while conn.poll(max(deadline - time.monotonic(), 0.0)):
                conn.recv()
                if time.monotonic() >= deadline:
                    break
        except (EOFError, OSError):
            pass  # it has stopped
        self._process.join(max(deadline - time.monotonic(), 0.1))
        if self._process.is_alive():
            self._process.kill()  # it ignores SIGTERM (see core_main)
            self._process.join(5)
        conn.close()

    # --- the pipe --------------------------------------------------------------------------------
    def _send(self, message: tuple[Any, ...]) -> None:
        if self._lost:
            return
        try:
            self._conn.send(message)
        except OSError:
            self._on_lost()

    def _on_readable(self) -> None:
        sink = self._sink
        assert sink is not None
        conn = self._conn
        try:
            while not self._lost and conn.poll():
                message = conn.recv()
                kind = message[0]
                if kind == "step":
                    _, outputs, self._snapshot, self._adds_seen = message
                    if outputs:
                        sink.deliver(outputs)
                elif kind == "state":
                    _, self._snapshot, self._adds_seen = message
                elif kind == "reject":
                    sink.reject(message[1], EngineError(message[2]))
                elif kind == "dead":
                    self._stop_reading()
                    self._lost = True
                    sink.die(message[1])
        except (EOFError, OSError):
            self._on_lost()

    def _on_lost(self) -> None:
        if self._lost:
            return
        self._lost = True
        self._stop_reading()
        self._process.join(1)
        log.error("the engine core process exited (code %s)", self._process.exitcode)
        if self._sink is not None:
            self._sink.die(f"the engine core process exited (code {self._process.exitcode})")

    def _stop_reading(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._conn.fileno())


# --- the core process ----------------------------------------------------------------------------
def core_main(conn: Connection, config: EngineConfig, server_pid: int) -> None:
    """The core process: load the model, report ready, then step until told to stop."""
    # The server process decides when to stop (Ctrl-C and `kill` often reach the whole process
    # group): it sends "stop" on shutdown. If it dies instead, this process dies with it: SIGKILL
    # from the kernel (Linux), or the pipe's EOF once loaded.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_server(server_pid)
    # imported here, not above: the server process imports this module and must stay free of torch
    import torch

    from local_engine.engine_build import build_engine, load

    try:
        loaded = load(config, shares_process_with_server=False)
        engine = build_engine(config, loaded)
    except Exception as exc:  # noqa: BLE001 - any load failure is reported to the server process
        conn.send(("failed", str(exc) or type(exc).__name__))
        return
    runner = loaded.runner
    gc.collect()
    gc.freeze()  # the model and engine live as long as the process: keep them out of GC scans
    conn.send(("ready", CoreFacts(
        limits=engine.limits, model_name=loaded.model_name, kv_bytes_per_token=runner.kv_bytes_per_token,
        kv_dtype=str(runner.kv_cache.dtype).removeprefix("torch."), device=str(runner.device),
        num_threads=torch.get_num_threads(), snapshot=engine.snapshot(), kernels=runner.model.kernels_path)))
    serve_core(conn, engine)


def _die_with_server(server_pid: int) -> None:
    # PR_SET_PDEATHSIG fires when the thread that started this process exits: ProcessCore.launch
    # must run on the server's main thread (it does: cli.main → bootstrap.build_server).
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the pipe's EOF ends the process once it is loaded
    if os.getppid() != server_pid:  # it died before the line above took effect
        os._exit(1)


def _read_pipe(conn: Connection, inbox: queue.SimpleQueue[tuple[Any, ...]]) -> None:
    try:
        while True:
            inbox.put(conn.recv())
    except (EOFError, OSError):
        inbox.put(_EOF)
    except BaseException as exc:  # noqa: BLE001 - a message that cannot be read: the core cannot go on
        inbox.put(("error", f"the engine core cannot read its pipe: {type(exc).__name__}: {exc}"))


def serve_core(conn: Connection, engine: LLMEngine) -> None:
    """Apply what arrived, step, report; wait for the pipe only while there is nothing to run."""
    inbox: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
    threading.Thread(target=_read_pipe, args=(conn, inbox), name="core-pipe-reader", daemon=True).start()
    adds_seen = 0
    try:
        while True:
            arrived: list[tuple[Any, ...]] = []
            if not engine.has_unfinished():
                try:
                    arrived.append(inbox.get(timeout=IDLE_STATE_INTERVAL_S))
                except queue.Empty:
                    conn.send(("state", engine.snapshot(), adds_seen))
                    continue
            while not inbox.empty():
                arrived.append(inbox.get_nowait())
            for message in arrived:
                kind = message[0]
                if kind == "add":
                    adds_seen += 1
                    _, seq_id, prompt, sampling, priority, arrival_time, request_id = message
                    try:
                        engine.add_request(Sequence(prompt, sampling, priority=priority, arrival_time=arrival_time,
                                                    request_id=request_id, seq_id=seq_id))
                    except (EngineError, ValueError) as exc:  # the server checked it already
                        conn.send(("reject", seq_id, str(exc)))
                elif kind == "abort":
                    engine.abort(message[1])
                elif kind == "error":
                    raise RuntimeError(message[1])
                else:  # "stop", or the server's end closed
                    return
            outputs = engine.step()
            conn.send(("step", outputs, engine.snapshot(), adds_seen))
    except (BrokenPipeError, ConnectionResetError):
        return  # the server process went away
    except Exception as exc:  # a runner failure: the server fails every request rather than hang them
        log.exception("engine step loop failed")
        try:
            conn.send(("dead", f"engine step failed: {type(exc).__name__}: {exc}"))
        except OSError:
            pass
