"""Retraining the difficulty model on labelled prompts (RouteLLM's CSV, e.g. labelled shadow pairs) and
a policy that selects the weights file it wrote (`difficulty_weights`)."""
from __future__ import annotations

from pathlib import Path

import pytest

from policies.compiled import compile_policy
from policies.errors import PolicyError
from policies.loader import load_policy_file
from policies.quality import train
from policies.quality.lazy import LazyQuality
from policies.quality.load import load_scorer

EASY = ["hi there", "hello how are you", "say hello", "tell me a joke", "good morning", "thanks a lot"]
HARD = ["prove that the riemann zeta function has nontrivial zeros on the critical line",
        "derive the eigenvalues of the quantum harmonic oscillator hamiltonian using ladder operators",
        "compute the integral of exp(-x^2) cos(kx) over the real line by contour integration",
        "explain why the galois group of a general quintic is not solvable by radicals"]


def write_csv(path: Path) -> Path:
    rows = ["prompt,weak,strong"] + [f"{p},True,True" for p in EASY] + [f"{p},False,True" for p in HARD]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_train_from_a_tiny_csv_learns_its_labels(tmp_path: Path) -> None:
    out = tmp_path / "w.json"
    assert train.main(["--labels", str(write_csv(tmp_path / "l.csv")), "--out", str(out), "--lambda", "0.1"]) == 0
    scorer = load_scorer(out)
    assert min(scorer.score_text(p) for p in HARD) > max(scorer.score_text(p) for p in EASY)
    again = tmp_path / "again.json"
    train.main(["--labels", str(tmp_path / "l.csv"), "--out", str(again), "--lambda", "0.1"])
    assert again.read_text() == out.read_text()  # deterministic


def test_labels_of_one_kind_only_are_refused(tmp_path: Path) -> None:
    csv = tmp_path / "same.csv"
    csv.write_text("prompt,weak,strong\n" + "".join(f"{p},True,True\n" for p in EASY))
    assert train.main(["--labels", str(csv), "--out", str(tmp_path / "w.json")]) == 2
    assert not (tmp_path / "w.json").exists()


def test_a_policy_selects_its_weights_file(tmp_path: Path) -> None:
    train.main(["--labels", str(write_csv(tmp_path / "l.csv")), "--out", str(tmp_path / "w.json"), "--lambda", "0.1"])
    policy = tmp_path / "p.yaml"
    policy.write_text("""
backends: {weak: {kind: openai, base_url: "http://127.0.0.1:1/v1"}}
models: {m: {deployments: [{backend: weak, model: m}]}}
difficulty_weights: w.json
""")
    loaded = load_policy_file(policy)
    weights = compile_policy(loaded.policy, source=loaded.source).difficulty_weights
    assert weights == tmp_path / "w.json"
    ours, shipped = LazyQuality(), LazyQuality()
    ours.use(weights)
    body = {"messages": [{"role": "user", "content": HARD[0]}]}
    assert ours(body) == pytest.approx(load_scorer(weights).score_text(HARD[0]))
    assert ours(body) != pytest.approx(shipped(body))
    policy.write_text(policy.read_text().replace("w.json", "missing.json"))
    with pytest.raises(PolicyError, match="difficulty_weights: .*missing.json"):
        load_policy_file(policy)
