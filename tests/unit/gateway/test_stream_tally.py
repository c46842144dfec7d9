"""What the relay learns from a stream, and what it strips when the client did not ask for usage."""
from __future__ import annotations

import orjson

from gateway.stream_tally import OutputCap, StreamTally, response_text

CONTENT = b'{"choices":[{"index":0,"delta":{"content":"hi "},"finish_reason":null}],"usage":null}'
FINISH = b'{"choices":[{"index":0,"delta":{},"finish_reason":"length"}],"usage":null}'
USAGE = b'{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}'


def test_client_without_include_usage_gets_nothing_of_it() -> None:
    tally = StreamTally(client_wants_usage=False)
    out, is_content = tally.accept(CONTENT)
    assert is_content and out is not None and b"usage" not in out
    assert orjson.loads(out)["choices"][0]["delta"]["content"] == "hi "
    tally.accept(FINISH)
    out, is_content = tally.accept(USAGE)
    assert out is None and not is_content
    assert tally.usage == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert tally.finish_reason == "length"


def test_a_bare_finish_chunk_is_no_token_for_timing() -> None:
    tally = StreamTally(client_wants_usage=True)
    assert tally.accept(FINISH) == (FINISH, False)  # relayed, but no inter-token gap ends there
    last = b'{"choices":[{"index":0,"delta":{"content":"end"},"finish_reason":"stop"}],"usage":null}'
    assert tally.accept(last) == (last, True)
    assert tally.finish_reason == "stop"


def test_client_with_include_usage_gets_bytes_unchanged() -> None:
    tally = StreamTally(client_wants_usage=True)
    assert tally.accept(CONTENT) == (CONTENT, True)
    assert tally.accept(USAGE) == (USAGE, False)


def test_usage_on_a_content_chunk_is_removed_only_for_clients_that_did_not_ask() -> None:
    both = b'{"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}'
    out, is_content = StreamTally(client_wants_usage=False).accept(both)
    assert is_content and out is not None and "usage" not in orjson.loads(out)
    tally = StreamTally(client_wants_usage=True)
    assert tally.accept(both) == (both, True)
    assert tally.finish_reason == "stop" and tally.usage is not None


def test_completion_text_for_counting() -> None:
    tally = StreamTally(client_wants_usage=False)
    tally.accept(CONTENT)
    tally.accept(b'{"choices":[{"index":0,"text":"plain "}]}')
    tally.accept(b'{"choices":[{"index":0,"delta":{"tool_calls":[{"function":{"arguments":"{\\"a\\""}}]}}]}')
    assert tally.completion_text() == 'hi plain {"a"'
    assert tally.usage is None


def test_response_text() -> None:
    data = {"choices": [{"message": {"content": "one"}}, {"message": {"content": " two"}}]}
    assert response_text(data) == "one two"


def test_the_model_the_upstream_names_is_noted_from_the_chunks_it_parses() -> None:
    tally = StreamTally(client_wants_usage=True)
    tally.accept(CONTENT)
    assert tally.response_model == ""  # content chunks are relayed unparsed
    tally.accept(b'{"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}')
    assert tally.response_model == "gpt-4o-mini-2024-07-18"


def test_a_chunk_naming_usage_that_is_no_openai_object_is_relayed_not_raised() -> None:
    tally = StreamTally(client_wants_usage=False)
    for odd in (b'["usage"]', b'{"usage": {"prompt_tokens": 1', b'"usage"'):
        out, is_content = tally.accept(odd)
        assert (out, is_content) == (odd, False)
    assert tally.usage is None and tally.completion_text() == ""


def test_the_output_cap_counts_only_near_the_cap_and_finds_the_chunk_that_crosses_it() -> None:
    counted: list[bytes] = []

    def count(chunk: bytes) -> int:  # two tokens a chunk, whatever its bytes
        counted.append(chunk)
        return 2

    cap = OutputCap(limit=20)
    assert not any(cap.crossed(b"0123456789", count) for _ in range(2))  # 20 bytes: at most 20 tokens
    assert counted == []  # far from the cap nothing is counted
    assert not cap.crossed(b"x" * 10, count) and len(counted) == 3 and cap.counted == 6  # within reach: counted
    crossings = [cap.crossed(b"x" * 10, count) for _ in range(8)]  # 6 + 2 per chunk passes 20 at the 8th
    assert crossings == [False] * 7 + [True]


def test_null_usage_is_stripped_wherever_it_stands() -> None:
    last = b'{"id":"c","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}],"usage":null}'
    first = b'{"usage":null,"id":"c","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}'
    middle = b'{"id":"c","usage": null, "choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}'
    for payload in (last, middle, first):  # the last two by a scan, the first by parsing it
        out, is_content = StreamTally(client_wants_usage=False).accept(payload)
        assert is_content and out is not None
        assert orjson.loads(out) == {"id": "c", "choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": None}]}
    assert StreamTally(client_wants_usage=True).accept(last) == (last, True)


FRAMED = [
    CONTENT, FINISH, USAGE,
    b'{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}',
    b'{"id":"c","choices":[{"index":0,"delta":{"content":"say \\"hi\\""},"logprobs":null,"finish_reason":null}],"usage":null}',
    b'{"id":"c","choices":[{"index":0,"delta":{"reasoning_content":"hm"},"finish_reason":null}],"usage":null}',
    b'{"id":"c","choices":[{"index":0,"delta":{"content":""},"finish_reason":null},'
    b'{"index":1,"delta":{"content":"b"},"finish_reason":null}],"usage":null}',
    b'{"id":"c","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}',
    b'{"id":"c","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"stop"}],"usage":null}',
    b'{"id":"c","choices":[{"index":0,"text":"x","finish_reason":null}],"usage":null}',
    b'{"id":"c","choices":[{"index":0,"delta":{"content": "x"},"finish_reason": null}], "usage": null}',
]


def test_frame_is_accept_framed_as_one_sse_event() -> None:
    """`frame` (the relay's per-chunk call, with a shortcut for the common text chunk) says what `accept`
    says, for every shape: the same bytes between `data: ` and the blank line (parsed alike), the same
    content flag, finish reason and usage."""
    for wants in (False, True):
        for payload in FRAMED:
            framed, by_frame = StreamTally(wants), StreamTally(wants)
            out, is_content = framed.accept(payload)
            frame, frame_content = by_frame.frame(payload)
            assert frame_content == is_content, payload
            if out is None:
                assert frame is None
                continue
            assert frame is not None and frame.startswith(b"data: ") and frame.endswith(b"\n\n")
            assert frame.count(b"\n") == 2 and orjson.loads(frame[6:-2]) == orjson.loads(out), payload
            assert (by_frame.finish_reason, by_frame.usage) == (framed.finish_reason, framed.usage)
            assert [orjson.loads(p)["choices"] for p in by_frame.payloads] == \
                [orjson.loads(p)["choices"] for p in framed.payloads]


def test_frame_strips_null_usage_only_for_a_client_that_did_not_ask() -> None:
    frame, is_content = StreamTally(client_wants_usage=False).frame(CONTENT)
    assert is_content and frame == b'data: {"choices":[{"index":0,"delta":{"content":"hi "},"finish_reason":null}]}\n\n'
    assert StreamTally(client_wants_usage=True).frame(CONTENT) == (b"data: " + CONTENT + b"\n\n", True)
    role = b'{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}'
    assert StreamTally(client_wants_usage=True).frame(role) == (b"data: " + role + b"\n\n", False)  # no token
