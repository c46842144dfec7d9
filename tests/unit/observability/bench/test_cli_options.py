"""Bad options end with one clear line and status 2, before anything is sent."""

from __future__ import annotations

import pytest

from observability.bench.cli import main

URL = "http://127.0.0.1:9"  # never contacted: each case is refused while reading the options


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--rate", "2", "--concurrency", "3"], "not --rate and --concurrency"),
        (["--sweep-rate", "1,2", "--concurrency", "3"], "not --concurrency and --sweep-rate"),
        (["--sweep-rate", "4,2"], "positive and rising"),
        (["--rate-schedule", "8:30,1"], "RATE:SECONDS"),
        (["--rate-schedule", "8:30", "--rate", "2"], "not --rate and --rate-schedule"),
        (["--sweep-concurrency", "1,2.5"], "whole numbers"),
        (["--rate", "0"], "must be positive"),
        (["--concurrency", "0"], "at least 1"),
        (["--isl", "normal:5"], "cannot read length"),
        (["--slo", "latency:3"], "cannot read --slo"),
        (["--tenants", "2"], "go together"),
        (["--header", "novalue"], "NAME:VALUE"),
        (["--requests", "0"], "must be positive"),
    ],
)
def test_bad_options_exit_2_with_a_message(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([URL, "--model", "m", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hybridgw bench: ") and says in err and "Traceback" not in err


def test_a_non_http_url_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ftp://example.com", "--model", "m"]) == 2
    assert "not an http(s) URL" in capsys.readouterr().err
