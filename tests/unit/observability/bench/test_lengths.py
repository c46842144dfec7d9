"""Length specs as the command line writes them, and their sampling."""

from __future__ import annotations

import random
import statistics

import pytest

from observability.bench.lengths import Fixed, LengthSpecError, Mixture, Normal, Uniform, parse_length, scaled


def test_parse_each_form() -> None:
    assert parse_length("fixed:128") == Fixed(128)
    assert parse_length("64") == Fixed(64)
    assert parse_length("normal:512,64") == Normal(512, 64)
    assert parse_length("uniform:10,20") == Uniform(10, 20)
    mix = parse_length("mix:0.7@fixed:128|0.3@normal:2048,256")
    assert mix == Mixture((0.7, 0.3), (Fixed(128), Normal(2048, 256)))
    assert mix.mean == pytest.approx(0.7 * 128 + 0.3 * 2048)


@pytest.mark.parametrize(
    "bad",
    ["", "fixed:0", "normal:5", "uniform:9,3", "gauss:1,2", "mix:0.5fixed:3", "mix:0@fixed:3", "fixed:abc"],
)
def test_bad_specs_say_what_is_allowed(bad: str) -> None:
    with pytest.raises(LengthSpecError, match="fixed:N"):
        parse_length(bad)


def test_samples_follow_the_distribution() -> None:
    rng = random.Random(0)
    normal = [Normal(500, 50).sample(rng) for _ in range(5000)]
    assert statistics.mean(normal) == pytest.approx(500, rel=0.02)
    assert statistics.stdev(normal) == pytest.approx(50, rel=0.08)
    uniform = [Uniform(10, 20).sample(rng) for _ in range(2000)]
    assert min(uniform) == 10 and max(uniform) == 20
    assert min(Normal(3, 50).sample(rng) for _ in range(500)) >= 1  # never an empty prompt


def test_scaling_keeps_the_shape() -> None:
    assert scaled(Normal(2000, 200), 0.1) == Normal(200, 20)
    assert scaled(Uniform(100, 300), 0.5) == Uniform(50, 150)
    assert scaled(Fixed(5), 0.01) == Fixed(1)
