"""Read a policy file: YAML with line numbers → validated `Policy`, errors as file:line messages,
and backends whose `requires_env` variable is unset removed (with everything that pointed at them)."""
from __future__ import annotations

import difflib
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Tag, ValidationError

from policies.checks import policy_problems
from policies.errors import PolicyError
from policies.perf_model import PerfModel
from policies.perf_model_file import policy_perf_model
from policies.schema import Policy
from policies.strategies import STRATEGY_TYPES
from policies.yaml_source import Path_, read_yaml

MAX_POLICY_BYTES = 1 << 20  # a policy is a few KiB; anything near this is a mistake or an attack


@dataclass(frozen=True)
class LoadedPolicy:
    policy: Policy
    source: str  # file name (or "<default>")
    absent_backends: tuple[str, ...] = ()  # dropped because their requires_env variable is unset
    perf_model: PerfModel | None = None  # the models its backends name (`perf_model:`), read at load
    absent_env: tuple[str, ...] = ()  # the requires_env variable of each of absent_backends, in their order

    def absent_why(self) -> str:
        """The absent backends with the variable each waits for: "openai: requires_env OPENAI_API_KEY unset, …"."""
        return ", ".join(f"{name}: requires_env {var} unset" for name, var in zip(self.absent_backends, self.absent_env, strict=True))


def _dotted(loc: Path_) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _line_of(loc: Path_, lines: dict[Path_, int]) -> int:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return 1


def _tagged(tp: Any) -> dict[str, Any]:
    """The members of a tagged union (Annotated[Union[Annotated[X, Tag(t)], …], Discriminator]) by tag."""
    if typing.get_origin(tp) is not typing.Annotated:
        return {}
    members: dict[str, Any] = {}
    for member in typing.get_args(typing.get_args(tp)[0]):
        tags = [m.tag for m in typing.get_args(member)[1:] if isinstance(m, Tag)]
        if tags:
            members[tags[0]] = typing.get_args(member)[0]
    return members


def _schema_path(loc: Path_) -> tuple[Path_, Any]:
    """`loc` without the union tags pydantic puts in it (rules.0.kv_fit.spil → rules.0.spil),
    and the schema type at its end (a union's member once its tag picked it)."""
    current: Any = Policy
    shown: list[str | int] = []
    for i, part in enumerate(loc):
        members = _tagged(current)
        if part in members:  # a tag: follow that member; it is no key in the file
            current = members[part]
            continue
        if members or current is None:
            return (*shown, *loc[i:]), None
        current = _unwrap(current)
        shown.append(part)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = next((f for n, f in current.model_fields.items() if part in (n, f.alias)), None)
            current = field.annotation if field is not None else None
        elif typing.get_origin(current) in (dict, list, tuple):
            current = typing.get_args(current)[-1 if typing.get_origin(current) is dict else 0]
        else:
            current = None
    return tuple(shown), current


def _model_at(loc: Path_) -> type[BaseModel] | None:
    """The pydantic model that the mapping at `loc` (tags included) is validated against."""
    current = _unwrap(_schema_path(loc)[1])
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    """Optional[X] / X | None / X | scalar → the model class X where there is one."""
    if isinstance(tp, str):  # forward reference such as list["When"]
        from policies import rule_schema

        return getattr(rule_schema, tp, tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [_unwrap(a) for a in typing.get_args(tp) if a is not type(None)]
        models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        return models[0] if models else (args[0] if len(args) == 1 else tp)
    return tp


def _unknown_field_message(loc: Path_) -> str:
    model = _model_at(loc[:-1])
    if model is None:
        return "unknown field"
    own = getattr(model, "model_fields", {}).get("strategy")
    if own is not None:  # a strategy's rule: say whose field it is, if another strategy's
        mine = own.default if isinstance(own.default, str) else typing.get_args(own.annotation)[0]
        for name, kind in STRATEGY_TYPES.items():
            if loc[-1] in kind.rule.model_fields and loc[-1] not in model.model_fields:
                return f"field {loc[-1]!r} belongs to strategy {name}, not {mine}"
    allowed = [f.alias or n for n, f in model.model_fields.items()]
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown field{hint} (allowed: {', '.join(allowed)})"


def _missing_message(loc: Path_) -> str:
    model = _model_at(loc[:-1])
    strategy = getattr(model, "model_fields", {}).get("strategy") if model is not None else None
    if strategy is None:
        return "required field is missing"
    return f"required field is missing: strategy {typing.get_args(strategy.annotation)[0]} needs {loc[-1]!r}"


def _key_line(loc: Path_, msg: str, lines: dict[Path_, int]) -> int:
    # A model-level check naming a field ('x' …) is reported on the mapping; point at the field.
    for path, line in lines.items():
        if path[:-1] == loc and path and isinstance(path[-1], str) and f"'{path[-1]}'" in msg:
            return line
    return _line_of(loc, lines)


def _format_errors(exc: ValidationError, filename: str, lines: dict[Path_, int]) -> PolicyError:
    problems = []
    for err in exc.errors(include_url=False):
        raw: Path_ = tuple(err["loc"])
        loc = _schema_path(raw)[0]  # pydantic puts union tags in loc: show the keys of the file
        known = next(loc[:end] for end in range(len(loc), -1, -1) if loc[:end] in lines or end == 0)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg, shown, line = _unknown_field_message(raw), loc, _line_of(loc, lines)
        elif err["type"] == "missing":
            msg, shown, line = _missing_message(raw), loc, _line_of(known, lines)
        else:
            shown, line = known, _key_line(known, msg, lines)
        problems.append(f"{filename}:{line}: {_dotted(shown)}: {msg}")
    return PolicyError("\n".join(problems), tuple(problems))


def _prune(data: dict[str, Any], environ: Mapping[str, str]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Drop backends whose requires_env is unset, their deployments, emptied aliases and rules."""
    absent = tuple(n for n, b in data["backends"].items() if b.get("requires_env") and not environ.get(b["requires_env"]))
    if not absent:
        return data, ()
    data["backends"] = {n: b for n, b in data["backends"].items() if n not in absent}
    for alias in list(data["models"]):
        deps = [d for d in data["models"][alias]["deployments"] if d["backend"] not in absent]
        if deps:
            data["models"][alias]["deployments"] = deps
        else:
            del data["models"][alias]
    rules = []
    for rule in data.get("rules", []):
        model = STRATEGY_TYPES[rule.get("strategy", "first_match")].rule
        for field in model.target_fields:
            if field in rule:
                rule[field] = [b for b in rule[field] if b not in absent]
        if rule.get(model.required_targets):
            rules.append(rule)
    data["rules"] = rules
    return data, absent


def environ_with(pairs: list[str]) -> dict[str, str]:
    """This process's environment plus `NAME=VALUE` pairs (the CLIs' --env), for loading a policy."""
    env = dict(os.environ)
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--env takes NAME=VALUE, not {pair!r}")
        env[name] = value
    return env


def load_policy(text: str, filename: str = "<policy>", environ: Mapping[str, str] | None = None) -> LoadedPolicy:
    """Parse and validate policy text; raises PolicyError listing every problem with its line."""
    env = os.environ if environ is None else environ
    if len(text) > MAX_POLICY_BYTES:
        raise PolicyError(f"{filename}: the policy is {len(text)} characters; at most {MAX_POLICY_BYTES} are read")
    data, lines = read_yaml(text, filename, env)
    if not isinstance(data, dict):
        raise PolicyError(f"{filename}:1: a policy is a mapping with backends, models, rules, …")
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        raise _format_errors(exc, filename, lines) from None
    problems = [f"{filename}:{_line_of(loc, lines)}: {_dotted(loc)}: {msg}" for loc, msg in policy_problems(policy)]
    if policy.difficulty_weights is not None:
        problems += _weights_problems(policy.difficulty_weights, filename, lines)
    if problems:
        raise PolicyError("\n".join(problems), tuple(problems))
    pruned, absent = _prune(policy.model_dump(by_alias=True, exclude_unset=True), env)
    needed = tuple(policy.backends[name].requires_env or "" for name in absent)
    if absent:
        policy = Policy.model_validate(pruned)
    return LoadedPolicy(policy, filename, absent, policy_perf_model(policy, filename, lines), needed)


def _weights_problems(named: str, filename: str, lines: dict[Path_, int]) -> list[str]:
    """A `difficulty_weights` file that is missing or no weights file refuses the policy, not a request."""
    from policies.quality.load import read_weights  # numpy: only for a policy that names its own weights

    path = Path(named).expanduser()
    try:
        read_weights(path if path.is_absolute() or filename.startswith("<") else Path(filename).parent / path)
    except ValueError as exc:
        return [f"{filename}:{lines.get(('difficulty_weights',), 1)}: difficulty_weights: {exc}"]
    return []


def read_policy_text(path: str | Path) -> str:
    """The file's text, at most MAX_POLICY_BYTES; PolicyError when it cannot be read."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_POLICY_BYTES + 1)  # never read a huge (or endless) file whole
        if len(raw) > MAX_POLICY_BYTES:
            raise PolicyError(f"{path}: the policy file is larger than {MAX_POLICY_BYTES} bytes; refused")
        return raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: cannot read the policy file: {exc}") from None


def load_policy_file(path: str | Path, environ: Mapping[str, str] | None = None) -> LoadedPolicy:
    return load_policy(read_policy_text(path), str(path), environ)


DEFAULT_POLICY_NAME = "<default policy>"


def default_policy_text() -> str:
    """The embedded default policy's YAML (policies/defaults/default.yaml)."""
    return resources.files("policies").joinpath("defaults/default.yaml").read_text(encoding="utf-8")


def load_default_policy(environ: Mapping[str, str] | None = None) -> LoadedPolicy:
    """The embedded default policy (policies/defaults/default.yaml)."""
    return load_policy(default_policy_text(), DEFAULT_POLICY_NAME, environ)
