"""The options of `hybridgw bench --profile` and its run: read them, ask the server what it is (model,
engine state), profile, and write the performance model file; bad input is one line, never a traceback."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from observability.bench import options
from observability.bench.client import Target
from observability.bench.profile import Profile, ProfileError, Schedule, profile, write_model_file
from observability.bench.prompts import PromptBuilder, TokenizerMismatch
from observability.bench.server_info import ServerInfoError, engine_state, first_model, server_counter


def add_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("profile (writes a performance model file instead of a load test)")
    g.add_argument("--profile", action="store_true",
                   help="profile the engine at URL: prefill TTFT by prompt length, decode ITL by batch and context")
    g.add_argument("--profile-out", type=Path, help="model file to write (default: perf_model.yaml in --out or .)")
    g.add_argument("--profile-name", default="default",
                   help="the engine's name in the file (default `default`: any backend naming the file)")
    g.add_argument("--profile-lengths", default="16,128,512,1024", metavar="N,N,...", help="prefill prompt tokens")
    g.add_argument("--profile-batches", default="1,4,16", metavar="B,B,...", help="decode batch sizes")
    g.add_argument("--profile-contexts", default="32,512", metavar="N,N,...", help="decode prompt tokens per sequence")
    g.add_argument("--profile-decode-tokens", type=int, default=32, help="tokens generated per decode request")
    g.add_argument("--profile-budget-probe", type=int, default=1024, metavar="N",
                   help="prompt tokens sent while a stream decodes, to measure the step's token budget (0: skip)")


def drop_options(args: argparse.Namespace) -> None:
    for name in [n for n in vars(args) if n.startswith("profile")]:
        delattr(args, name)


def _ints(flag: str, text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise options.UsageError(f"{flag} takes positive whole numbers, comma-separated, not {text!r}")
    return values


def schedule(args: argparse.Namespace, state: dict[str, object] | None) -> Schedule:
    """The asked schedule, cut to what the engine says it takes (context, batch, queue)."""
    if args.profile_decode_tokens < 2 or args.profile_budget_probe < 0:
        raise options.UsageError("--profile-decode-tokens must be at least 2, --profile-budget-probe not negative")
    s = Schedule(_ints("--profile-lengths", args.profile_lengths), 3, _ints("--profile-batches", args.profile_batches),
                 _ints("--profile-contexts", args.profile_contexts), args.profile_decode_tokens,
                 args.profile_budget_probe)
    state = state or {}
    context, seqs = state.get("max_model_len"), state.get("max_num_seqs")
    room = context - s.decode_tokens - 64 if isinstance(context, int) else None  # 64: the chat template's tokens
    if room is not None:
        s = replace(s, prompt_lengths=tuple(n for n in s.prompt_lengths if n <= room) or (max(room, 1),),
                    contexts=tuple(n for n in s.contexts if n <= room) or (max(room, 1),),
                    budget_probe_tokens=min(s.budget_probe_tokens, max(room, 0)))
    if isinstance(seqs, int):
        s = replace(s, batch_sizes=tuple(b for b in s.batch_sizes if b <= seqs) or (seqs,))
    return s


def _builder(args: argparse.Namespace, target: Target, headers: dict[str, str], key: str | None,
             model: str) -> PromptBuilder:
    if args.tokenizer != "server":
        return PromptBuilder.tiktoken(args.tokenizer)
    try:
        return PromptBuilder("server", server_counter(target, headers, key, model))
    except TokenizerMismatch as exc:
        raise ServerInfoError(f"{exc}; use --tokenizer o200k_base") from None


def _report(result: Profile, path: Path) -> None:
    m = result.model
    print(f"prefill: {m['prefill_fixed_s'] * 1000:.2f} ms + {m['prefill_per_token_s'] * 1e6:.2f} µs/token "
          f"({len(result.prefill)} lengths)")
    print(f"decode:  {m['decode_fixed_s'] * 1000:.2f} ms + {m['decode_per_seq_s'] * 1000:.3f} ms/seq + "
          f"{m['decode_per_context_token_s'] * 1e6:.3f} µs/context token ({len(result.decode)} batches)")
    if "max_num_batched_tokens" in m:
        print(f"step token budget while decoding: {m['max_num_batched_tokens']}")
    if len(result.backends) > 1:
        print(f"hybridgw bench: requests went to {', '.join(sorted(result.backends))}: the gateway did not send "
              "them all to one engine; profile the engine itself, or a policy that routes only to it", file=sys.stderr)
    print(f"wrote {path}", file=sys.stderr)


def main(args: argparse.Namespace) -> int:
    try:
        target = Target.parse(args.url, "chat")
        headers, key = options.headers(args.header), (options.teams(args.api_key)[0].api_key)
        model = args.model or first_model(target, headers, key)
        state = engine_state(target, headers, key)
        plan = schedule(args, state)
        result = profile(target, headers, key, model, _builder(args, target, headers, key, model), plan, state,
                         args.timeout, args.seed)
    except (options.UsageError, ValueError) as exc:
        print(f"hybridgw bench --profile: {exc}", file=sys.stderr)
        return 2
    except (ServerInfoError, ProfileError) as exc:
        print(f"hybridgw bench --profile: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hybridgw bench --profile: interrupted; no model written", file=sys.stderr)
        return 130
    path = args.profile_out or (args.out or Path(".")) / "perf_model.yaml"
    try:
        write_model_file(path, result, args.profile_name)
    except OSError as exc:
        print(f"hybridgw bench --profile: cannot write {path}: {exc}", file=sys.stderr)
        return 1
    _report(result, path)
    return 0
