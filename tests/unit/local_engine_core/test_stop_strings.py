"""Stop strings over streamed pieces: never emit part of a stop string, cut at the first one."""
from __future__ import annotations

from local_engine.stop_strings import StopStringFilter


def run(stops: tuple[str, ...], pieces: list[str]) -> tuple[str, bool]:
    f = StopStringFilter(stops)
    out = []
    for piece in pieces:
        text, hit = f.push(piece)
        out.append(text)
        if hit:
            return "".join(out), True
    return "".join(out) + f.flush(), False


def test_no_stops_passes_through() -> None:
    f = StopStringFilter(())
    assert f.push("abc") == ("abc", False)


def test_stop_split_across_pieces_is_cut_and_never_streamed() -> None:
    f = StopStringFilter(("END",))
    assert f.push("hello E") == ("hello", False)  # the last len("END") - 1 chars wait
    assert f.push("N") == (" ", False)
    assert f.push("D more") == ("", True)


def test_earliest_of_several_stops_wins() -> None:
    assert run(("world", "lo"), ["hello world"]) == ("hel", True)


def test_held_back_text_is_flushed_when_no_stop_comes() -> None:
    assert run(("STOP",), ["abc", "ST", "x"]) == ("abcSTx", False)
