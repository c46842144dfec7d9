"""The between-chunks deadline of a stream (gateway/backends/read_watch.py): a read that waits past it
fails with a TimeoutError from the reader; a stream that is not reading (its client is slow) is never
failed by it."""
from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp.base_protocol import BaseProtocol

from gateway.backends.read_watch import ReadWatch


class _Connected(BaseProtocol):
    """aiohttp's protocol as a response body's reader sees it while the connection is up (no socket)."""

    @property
    def connected(self) -> bool:
        return True


def _reader() -> aiohttp.StreamReader:
    loop = asyncio.get_running_loop()
    return aiohttp.StreamReader(_Connected(loop), 2**16, loop=loop)


def test_a_read_that_waits_past_the_limit_times_out() -> None:
    async def scenario() -> None:
        reader = _reader()
        watch = ReadWatch(reader, 0.05)
        try:
            reader.feed_data(b"data: 1\n\n")
            watch.since = asyncio.get_running_loop().time()
            assert await reader.readany() == b"data: 1\n\n"  # data there: no wait, no timeout
            watch.since = asyncio.get_running_loop().time()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reader.readany(), 30)  # nothing comes: the watch ends the wait
            assert isinstance(reader.exception(), TimeoutError)  # the reader's, not wait_for's guard
        finally:
            watch.stop()

    asyncio.run(scenario())


def test_a_stream_that_is_not_reading_is_left_alone() -> None:
    async def scenario() -> None:
        reader = _reader()
        watch = ReadWatch(reader, 0.05)
        await asyncio.sleep(0.3)  # several of the watch's checks, none while a read waits
        watch.stop()
        assert reader.exception() is None
        reader.feed_data(b"x")
        assert await reader.readany() == b"x"

    asyncio.run(scenario())
