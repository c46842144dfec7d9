"""`hybridgw router eval` as a user runs it on CSVs whose answer is known, its HTML rendered by headless
Chromium, and the shipped difficulty model loading with every socket refused."""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support.chromium import PNG_MAGIC, Browser

REPO = Path(__file__).resolve().parents[3]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=REPO, check=False)


def _write(path: Path, weak: np.ndarray, strong: np.ndarray) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(["prompt", "weak/model", "strong/model"])
        for i, (w, s) in enumerate(zip(weak, strong)):
            out.writerow([f"Question {i}: which option is right?\nA. one\nB. two\nAnswer:", str(bool(w)), str(bool(s))])
    return path


def _row(output: str, router: str) -> list[float]:
    line = next(line for line in output.splitlines() if line.startswith(router + " "))
    return [float(x) for x in re.findall(r"\d+\.\d+", line)]


def test_oracle_recovers_everything_and_labels_unrelated_to_prompts_give_a_half(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    weak = rng.random(1500) < 0.98  # strong always right, weak misses 2%: the oracle's APGR is ~1
    data = _write(tmp_path / "known.csv", weak, np.ones_like(weak))
    done = _run("router", "eval", str(data), "--resamples", "50")
    assert done.returncode == 0, done.stderr
    assert _row(done.stdout, "oracle")[0] == pytest.approx(1.0, abs=0.015)
    weak = rng.random(1500) < 0.5
    data = _write(tmp_path / "coin.csv", weak, np.ones_like(weak))
    done = _run("router", "eval", str(data), "--resamples", "100")
    assert done.returncode == 0, done.stderr
    for router in ("random", "difficulty"):  # labels drawn at random: no router can beat chance
        apgr, low, high = _row(done.stdout, router)[:3]
        assert 0.45 < apgr < 0.55 and high - low < 0.1, done.stdout


def test_contaminated_prompts_are_dropped_and_bad_files_are_refused(tmp_path: Path) -> None:
    data = _write(tmp_path / "d.csv", np.array([True, False, True, False]), np.array([True, True, True, True]))
    listed = tmp_path / "contaminated.jsonl"
    listed.write_text(json.dumps({"eval_prompt": "Question 1: which option is right?\nA. one\nB. two\nAnswer:"})
                      + "\n", encoding="utf-8")
    done = _run("router", "eval", str(data), "--contaminated", str(listed), "--resamples", "5")
    assert done.returncode == 0, done.stderr
    assert "3 prompts" not in done.stdout and "dropped 1 contaminated" in done.stdout
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,weak\nhello,maybe\n", encoding="utf-8")
    refused = _run("router", "eval", str(bad))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr and "two True/False" in refused.stderr


def test_html_renders_in_headless_chromium(tmp_path: Path) -> None:
    browser = Browser(tmp_path / "profile")
    rng = np.random.default_rng(4)
    data = _write(tmp_path / "d.csv", rng.random(300) < 0.7, rng.random(300) < 0.9)
    page = tmp_path / "eval.html"
    assert _run("router", "eval", str(data), "--html", str(page), "--resamples", "10").returncode == 0
    dom = browser.dom(page)
    assert 'id="plot-quality-curve"' in dom
    assert dom.count('class="series"') == 4  # difficulty, length, random, oracle
    assert all(f"<td>{name}</td>" in dom for name in ("difficulty", "length", "random", "oracle"))
    assert browser.screenshot(page, tmp_path / "eval.png", "1000,900")[:8] == PNG_MAGIC


OFFLINE_SCRIPT = """
import sys
def refuse(event, args):
    if event in ("socket.connect", "socket.getaddrinfo", "socket.bind"):
        raise OSError("network disabled in this test: " + event)
sys.addaudithook(refuse)
from policies.quality.load import load_scorer
print(repr(load_scorer().score_text(sys.argv[1])))
"""


def test_the_shipped_model_loads_and_scores_with_networking_disabled() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env["PYTHONPATH"] = str(REPO)  # no HF_HUB_OFFLINE: a hub lookup would hit the refused socket
    runs = [subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT, "What is the capital of France?"],
                           capture_output=True, text=True, timeout=120, env=env, cwd=REPO, check=False)
            for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr[-2000:]
    assert runs[0].stdout == runs[1].stdout and 0.0 < float(runs[0].stdout) < 1.0
