"""Stage markers for counting instructions under callgrind: each stage's functions run inside a C function of
their own (`hg_slot_NN`, a one-line trampoline built here with the system compiler), so callgrind's inclusive
count of that symbol is the stage's instructions. Coroutines and async generators are marked step by step
(each resume runs inside the trampoline), so awaiting costs nothing; a stage met inside another uses a slot of
its own, so the outer stage's own count is its slots minus the slots nested in it (bench/hot_path_instr.py).
"""
from __future__ import annotations

import functools
import importlib
import inspect
import json
import subprocess
import sys
import sysconfig
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

SLOTS = 96
SLOT_MAP_ENV = "HG_STAGE_MAP"

# stage → the functions whose work it is, as "module:Qualified.name" (method or function; the patch replaces
# every module's reference to the function, as `from x import f` copies them). A coroutine / async generator
# function is marked per step.
STAGES: dict[str, list[str]] = {
    "uvicorn + httptools": ["uvicorn.protocols.http.httptools_impl:RequestResponseCycle.send",
                            "uvicorn.protocols.http.httptools_impl:RequestResponseCycle.receive",
                            "uvicorn.protocols.http.httptools_impl:HttpToolsProtocol.data_received"],
    "handler glue (proxy, dispatch, hot route)": ["gateway.hot_routes:GatewayApp._model_route",
                                                  "gateway.dispatch:complete", "gateway.dispatch:open_stream"],
    "auth": ["gateway.services:Services.authenticate"],
    "body read + JSON + schema": ["gateway.request_body:read_json_body", "gateway.schemas:parse_body",
                                  "gateway.proxy:parse_request"],
    "alias checks": ["gateway.catalog:Catalog.check_alias", "gateway.auth:check_key_alias"],
    "token count": ["gateway.token_count:measure_prompt"],
    "facts": ["policies.decider:Decider.build_facts", "policies.live_book:LiveBook.live_state"],
    "decide": ["policies.decider:Decider.route"],
    "reserve (limits)": ["gateway.proxy:_reserve"],
    "upstream body build": ["gateway.upstream_body:build"],
    "spans": ["observability.trace_recorder:RecordingTracer.start_span", "gateway.usage_emit:_end_spans",
              "gateway.route_plan:_describe_decision", "observability.tracing:inject_traceparent"],
    "upstream call (backend + client request/response)": ["gateway.backends.openai_http:OpenAIHTTPBackend.complete",
                                                          "gateway.backends.openai_http:OpenAIHTTPBackend.stream"],
    # the client's read callback: aiohttp's (a tree before wip/lean) or ours; the one a tree lacks is skipped
    "upstream read callbacks": ["aiohttp.client_proto:ResponseHandler.data_received",
                                "gateway.backends.upstream_wire:UpstreamConnection.data_received"],
    "usage outcome": ["gateway.outcome:body_outcome", "gateway.outcome:stream_outcome"],
    "record (usage record, ledger submit, access log)": ["gateway.usage_emit:finish"],
    "relay: frames (tally, timing, framing)": ["gateway.streaming:SSERelayResponse._frames"],
    # per relayed frame, inside the two above (a marked call costs its enclosing stage ~5-10 k; leaves are exact)
    "relay: tally (usage sniff, content test)": ["gateway.stream_tally:StreamTally.accept"],
    "relay: timing marks (TTFT, ITL)": ["gateway.timing:RequestClock.mark_chunk"],
    "relay: loop (its own: anext, the send message)": ["gateway.streaming:SSERelayResponse._relay"],
    "backend: SSE split + sort_out": ["gateway.sse:FrameSplitter.feed",
                                      "gateway.backends.stream_frames:sort_out"],
    "aiohttp readany": ["aiohttp.streams:StreamReader.readany"],
    "relay: send deadline (write watch)": ["gateway.write_watch:WriteWatch.send"],
    "exchange (begin, response headers)": ["gateway.exchange:Exchange.begin", "gateway.exchange:Exchange.response_headers"],
    "Starlette Response objects": ["starlette.responses:Response.__init__", "starlette.responses:Response.__call__"],
    "disconnect guard": ["gateway.disconnect:DisconnectGuard.__init__", "gateway.disconnect:DisconnectGuard.close"],
    "shadow tap": ["gateway.shadow_tap:tap"],
    "route plan (its own: engine views, the plan)": ["gateway.route_plan:plan_route"],
    "attempt book (KV hold, health)": ["gateway.attempts:AttemptBook.started", "gateway.attempts:AttemptBook.succeeded"],
    "relay response (its own)": ["gateway.streaming:SSERelayResponse.__call__", "gateway.streaming:SSERelayResponse.__init__"],
}

_C_SLOT = ("PyObject *hg_slot_{n}(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) "
           "{{ return PyObject_Vectorcall(args[0], args + 1, (nargs - 1) | PY_VECTORCALL_ARGUMENTS_OFFSET, kwnames); }}\n")


def build_slots(cache: Path) -> Any:
    """Compile (once) and import the trampolines module `hg_slots` (-O1, no identical-code folding: each
    slot must stay its own symbol)."""
    cache.mkdir(parents=True, exist_ok=True)
    so = cache / f"hg_slots{sysconfig.get_config_var('EXT_SUFFIX')}"
    if not so.exists():
        src = cache / "hg_slots.c"
        body = "".join(_C_SLOT.format(n=n) for n in range(SLOTS))
        table = "".join(f'{{"s{n}", (PyCFunction)(void (*)(void))hg_slot_{n}, METH_FASTCALL | METH_KEYWORDS, 0}},'
                        for n in range(SLOTS))
        src.write_text("#define PY_SSIZE_T_CLEAN\n#include <Python.h>\n" + body
                       + f"static PyMethodDef M[] = {{{table}{{0}}}};\n"
                       "static struct PyModuleDef D = {PyModuleDef_HEAD_INIT, \"hg_slots\", 0, -1, M};\n"
                       "PyMODINIT_FUNC PyInit_hg_slots(void) { return PyModule_Create(&D); }\n")
        subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-fno-ipa-icf", "-g", f"-I{sysconfig.get_paths()['include']}",
                        str(src), "-o", str(so)], check=True)
    sys.path.insert(0, str(cache))
    return importlib.import_module("hg_slots")


class Marker:
    """Hands out one slot per (enclosing stage, stage) and runs the marked code inside it (loop thread only)."""

    def __init__(self, slots: Any) -> None:
        self._slots = slots
        self.by_key: dict[tuple[str | None, str], int] = {}
        self.current: str | None = None
        self.thread = threading.get_ident()

    def slot(self, stage: str) -> Callable[..., Any] | None:
        if threading.get_ident() != self.thread:
            return None
        key = (self.current, stage)
        n = self.by_key.get(key)
        if n is None:
            n = self.by_key[key] = len(self.by_key)
            if n >= SLOTS:
                raise RuntimeError("out of stage slots")
        return getattr(self._slots, f"s{n}")

    def run(self, stage: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        tramp = self.slot(stage)
        if tramp is None:
            return fn(*args, **kwargs)
        outer, self.current = self.current, stage
        try:
            return tramp(fn, *args, **kwargs)
        finally:
            self.current = outer

    def slot_map(self) -> dict[str, list[str | None]]:
        return {f"hg_slot_{n}": [outer, stage] for (outer, stage), n in self.by_key.items()}


class _Stepped:
    """An awaitable that resumes a coroutine (or an async generator's asend/athrow) inside a stage's slot."""

    __slots__ = ("marker", "stage", "inner")

    def __init__(self, marker: Marker, stage: str, inner: Any) -> None:
        self.marker, self.stage, self.inner = marker, stage, inner

    def __await__(self) -> Any:
        run, stage, inner = self.marker.run, self.stage, self.inner
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                step = run(stage, inner.send, value) if error is None else run(stage, inner.throw, error)
            except StopIteration as stop:
                return stop.value
            try:
                value, error = (yield step), None
            except BaseException as exc:  # noqa: BLE001 - handed on into the coroutine, as await does
                value, error = None, exc


class _SteppedGen:
    """An async generator whose every resume is marked (anext, aclose, athrow)."""

    def __init__(self, marker: Marker, stage: str, agen: Any) -> None:
        self.marker, self.stage, self.agen = marker, stage, agen

    def __aiter__(self) -> _SteppedGen:
        return self

    async def __anext__(self) -> Any:
        # a native coroutine: 3.11's anext(it, default) re-asks a plain awaitable for its iterator on every
        # resume, which would restart the step
        return await _Stepped(self.marker, self.stage, self.agen.__anext__())

    def aclose(self) -> _Stepped:
        return _Stepped(self.marker, self.stage, self.agen.aclose())

    def athrow(self, *args: Any) -> _Stepped:
        return _Stepped(self.marker, self.stage, self.agen.athrow(*args))


def _wrap(marker: Marker, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        def coro(*args: Any, **kwargs: Any) -> Any:
            return _Stepped(marker, stage, fn(*args, **kwargs))
        return coro
    if inspect.isasyncgenfunction(fn):
        @functools.wraps(fn)
        def agen(*args: Any, **kwargs: Any) -> Any:
            return _SteppedGen(marker, stage, fn(*args, **kwargs))
        return agen

    @functools.wraps(fn)
    def sync(*args: Any, **kwargs: Any) -> Any:
        return marker.run(stage, fn, *args, **kwargs)
    return sync


def _replace_everywhere(original: Any, wrapped: Any) -> None:
    for module in list(sys.modules.values()):
        names = [k for k, v in list(getattr(module, "__dict__", {}).items()) if v is original]
        for name in names:
            setattr(module, name, wrapped)


def install(marker: Marker, stages: dict[str, list[str]] = STAGES) -> None:
    for stage, targets in stages.items():
        for target in targets:
            module_name, _, qualname = target.partition(":")
            try:
                owner: Any = importlib.import_module(module_name)
            except ModuleNotFoundError:  # a stage of another tree's code (bench/hot_path_instr.py --tree)
                continue
            *path, attr = qualname.split(".")
            for part in path:
                owner = getattr(owner, part)
            original = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)
            if isinstance(original, (classmethod, staticmethod)):
                wrapped = type(original)(_wrap(marker, stage, original.__func__))
            else:
                wrapped = _wrap(marker, stage, original)
            if isinstance(owner, type):
                setattr(owner, attr, wrapped)
            else:
                _replace_everywhere(original, wrapped)


def write_map(marker: Marker, path: str) -> None:
    Path(path).write_text(json.dumps(marker.slot_map()))
