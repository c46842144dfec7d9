"""The step loop in a process of its own (the default core): the server process stays free of torch,
a dead core fails its requests with a clear error and the server exits (to be restarted), a dead
server takes its core along,
and the single-process thread core still serves."""
from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import openai
import pytest

from tests.integration.engine.conftest import Engine, engine_process
from tests.support import procs

MODEL = "tiny-random"


def children(pid: int) -> list[int]:
    """Child processes that run the engine core (multiprocessing's resource tracker is left out)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return [c for c in found if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


# The directory's tiny_engine (default arguments, the default core) where a test leaves its engine running;
# an engine of its own where the test kills, signals or configures it.
def test_server_process_holds_no_torch_and_one_core_child(tiny_engine: Engine) -> None:
    engine = tiny_engine
    (core,) = children(engine.proc.pid)
    assert "libtorch" in maps(core)
    assert "libtorch" not in maps(engine.proc.pid)
    reply = engine.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=5, temperature=0)
    assert reply.usage is not None and reply.usage.completion_tokens == 5
    state = engine.state()
    assert state["healthy"] is True and state["num_blocks_free"] == state["num_blocks_total"]
    assert state["torch_threads"] >= 1  # as the core process reported it
    assert state["kernels"] == "torch"  # tiny-random has no 4-bit codes for the native kernels


def test_killed_core_ends_streams_in_band_and_the_server_exits_for_a_restart() -> None:
    with engine_process("--model", MODEL) as engine:
        (core,) = children(engine.proc.pid)
        stream = engine.client().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Go"}], max_tokens=4000, stream=True,
            extra_body={"ignore_eos": True})
        chunks = iter(stream)
        next(chunks)
        next(chunks)
        os.kill(core, signal.SIGKILL)
        with pytest.raises(openai.APIError) as caught:
            for _ in chunks:
                pass
        assert "engine core process exited" in str(caught.value)
        # a server without its engine exits (code 1), so a supervisor starts a fresh one
        assert engine.proc.popen.wait(timeout=60) == 1
        assert "engine core process exited (code -9); shutting down" in engine.proc.output()


def test_killed_server_takes_its_core_along() -> None:
    with engine_process("--model", MODEL) as engine:
        (core,) = children(engine.proc.pid)
        os.kill(engine.proc.pid, signal.SIGKILL)
        engine.proc.popen.wait(timeout=30)
        procs.wait_until(lambda: not pid_alive(core), "the core process to exit after its server died", 60)


def test_sigterm_to_the_process_group_shuts_down_cleanly() -> None:
    with engine_process("--model", MODEL) as engine:
        (core,) = children(engine.proc.pid)
        os.killpg(engine.proc.pid, signal.SIGTERM)  # what Ctrl-C, systemd and `timeout` do
        # uvicorn shuts down gracefully, then re-raises the signal it caught
        assert engine.proc.popen.wait(timeout=60) in (0, -signal.SIGTERM)
        procs.wait_until(lambda: not pid_alive(core), "the core process to exit", 30)
        assert "Traceback" not in engine.proc.output()


def test_thread_core_serves_in_one_process() -> None:
    with engine_process("--model", MODEL, "--engine-core", "thread") as engine:
        assert children(engine.proc.pid) == []
        assert "libtorch" in maps(engine.proc.pid)
        text = "".join(c.choices[0].delta.content or "" for c in engine.client().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=6, temperature=0, stream=True)
            if c.choices)
        assert text
        assert engine.state()["healthy"] is True


def test_a_server_killed_while_its_model_loads_takes_its_core_along() -> None:
    port = procs.free_port()
    proc = procs.start(procs.python_module("gateway.cli", "engine", "--port", str(port), "--model", MODEL),
                       name="engine-loading")
    try:
        (core,) = procs.wait_until(lambda: children(proc.pid) or None, "the core process to start", 60)
        os.kill(proc.pid, signal.SIGKILL)  # most likely mid-load; no "stop" can reach the core
        proc.popen.wait(timeout=30)
        procs.wait_until(lambda: not pid_alive(core), "the core process to exit after its server died", 60)
    finally:
        procs.stop(proc)


def test_a_burst_of_long_prompts_all_complete(tiny_engine: Engine) -> None:
    # ~0.5 MB of prompts reach the core at once while it steps: the pipe must keep flowing both ways
    async def burst(engine_url: str) -> list[int]:
        client = openai.AsyncOpenAI(base_url=f"{engine_url}/v1", api_key="unused", max_retries=0)
        prompt = " ".join(f"word{i}" for i in range(700))

        async def one(i: int) -> int:
            reply = await client.completions.create(model=MODEL, prompt=f"{i} {prompt}", max_tokens=3,
                                                    temperature=0, extra_body={"ignore_eos": True})
            assert reply.usage is not None
            return reply.usage.completion_tokens

        try:
            return await asyncio.gather(*(one(i) for i in range(64)))
        finally:
            await client.close()

    assert asyncio.run(burst(tiny_engine.url)) == [3] * 64
    state = tiny_engine.state()
    assert state["healthy"] is True and state["num_blocks_free"] == state["num_blocks_total"]
