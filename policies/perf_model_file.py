"""Performance model files (`hybridgw bench --profile` writes them): reading one, and the model a
policy names per backend (`backends.B.perf_model: FILE`, relative to the policy file). Read when the
policy is loaded or reloaded (never on the event loop); a missing or bad file is a file:line error."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from policies.errors import PolicyError
from policies.perf_model import EngineModel, HostedModel, PerfModel, PerfModelError, perf_model_from_mapping
from policies.schema import Policy
from policies.yaml_source import Path_

MAX_MODEL_BYTES = 1 << 20  # a model file is a few hundred bytes


def _read_data(path: str | Path) -> Any:
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_MODEL_BYTES + 1)
        if len(raw) > MAX_MODEL_BYTES:
            raise PerfModelError(f"{path}: larger than {MAX_MODEL_BYTES} bytes; a model file is a few hundred")
        return yaml.safe_load(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise PerfModelError(f"{path}: cannot read the performance model: {exc}") from None


def _from_data(path: str | Path, data: Any) -> PerfModel:
    try:
        return perf_model_from_mapping(data)
    except PerfModelError as exc:
        raise PerfModelError(f"{path}: {exc}") from None


def read_perf_model_file(path: str | Path) -> PerfModel:
    """One YAML/JSON model file; PerfModelError (naming the file) when it cannot be used."""
    return _from_data(path, _read_data(path))


def _pick(named: Mapping[str, Any], default: Any, backend: str, explicit_default: bool) -> Any:
    """The file's entry for `backend`: its own name, else `default`, else the only one there is."""
    if backend in named:
        return named[backend]
    if explicit_default:
        return default
    if len(named) == 1:
        return next(iter(named.values()))
    return None


def _model_for(policy: Policy, backend: str, path: Path) -> EngineModel | HostedModel:
    data = _read_data(path)
    model = _from_data(path, data)
    sections = data or {}
    engines, hosted = set(sections.get("engines") or {}), set(sections.get("hosted") or {})
    is_engine = policy.backends[backend].state_source != "none"
    kind, named, default, listed = (("engines", model.engines, model.default_engine, engines) if is_engine
                                    else ("hosted", model.hosted, model.hosted_model(""), hosted))
    picked = _pick(named, default, backend, "default" in listed)
    if picked is None:
        have = ", ".join(sorted(listed)) or "none"
        raise PerfModelError(f"{path}: no `{kind}` entry named {backend!r} or `default` (it has: {have})")
    return picked  # type: ignore[no-any-return]


def policy_perf_model(policy: Policy, filename: str, lines: Mapping[Path_, int]) -> PerfModel | None:
    """The models the policy's backends name (None when none does); raises PolicyError with file:line."""
    base = Path(filename).parent if not filename.startswith("<") else Path.cwd()
    engines: dict[str, EngineModel] = {}
    hosted: dict[str, HostedModel] = {}
    problems = []
    for name, spec in policy.backends.items():
        if spec.perf_model is None:
            continue
        try:
            model = _model_for(policy, name, base / spec.perf_model)
        except PerfModelError as exc:
            line = lines.get(("backends", name, "perf_model"), lines.get(("backends", name), 1))
            problems.append(f"{filename}:{line}: backends.{name}.perf_model: {exc}")
            continue
        (engines if isinstance(model, EngineModel) else hosted)[name] = model  # type: ignore[index]
    if problems:
        raise PolicyError("\n".join(problems), tuple(problems))
    return PerfModel(engines, hosted) if engines or hosted else None


def with_overrides(base: PerfModel, named: PerfModel | None) -> PerfModel:
    """`base` (e.g. replay's --perf-model) with the policy's named models for backends it leaves out:
    a model given on the command line is the what-if and wins."""
    if named is None:
        return base
    return PerfModel({**named.engines, **base.engines}, {**named.hosted, **base.hosted},
                     base.default_engine, base.default_hosted)
