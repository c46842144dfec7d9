// Native CPU kernels for small decode steps (a few rows): 4-bit matmuls on the GGUF's own codes with
// the step's small ops fused in (RMSNorm + bf16 cast before, SiLU*mul before, residual add after),
// and RoPE on bf16 q/k. Plain C ABI for ctypes; no torch headers. Built by local_engine/native/build.py.
// This file holds the entry points; q4_matmul.h, decode_attention.h, chunk_attention.h, simd.h, parallel.h, pool.h
// the rest.
//
// Weights: w = (q - 8) * scale + zero per group of 32, scale and zero bf16 — the effective weights the
// torch int4 path and the bf16 path share (weights.int4_effective_weight). Every output row is computed
// by the same instruction sequence whatever the row count (S) or thread count: each (row, output) dot
// product is one fixed-order fp32 reduction, threads only split the outputs. So results are
// batch-invariant by construction (--deterministic relies on it).
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chunk_attention.h"
#include "decode_attention.h"
#include "parallel.h"
#include "q4_matmul.h"
#include "simd.h"

extern "C" {

int hg_abi_version() { return 2; }

// use_openmp: 1 = work split over OpenMP threads (static; the default), 0 = the pool; spin_us: how long
// pool workers spin for the next job before sleeping; min_work: multiply-adds below which a call stays on
// the calling thread (<= 0: the default, kMinParallelWork).
void hg_set_threading(int use_openmp, int spin_us, long min_work) {
  g_use_openmp.store(use_openmp);
  hg::pool().set_spin_us(spin_us);
  g_min_parallel_work.store(min_work > 0 ? min_work : kMinParallelWork);
}

// out = x @ W.T for S rows. x_mode: 0 bf16 (S, K); 1 fp32 (S, K) through RMSNorm(norm_w, eps) and a bf16
// cast; 2 bf16 (S, 2K) as silu(first half) * second half. out_mode: 0 bf16 (S, N); 1 fp32 (S, N) =
// res + bf16(product); 2 fp32 (S, N/2), rows n and n + N/2 summed. codes (N, K/2): group g's 16 bytes
// hold element j in the low and j + 16 in the high nibble; sz (N, K/32, 2) bf16 (scale, zero).
// act: 0 the (bf16) input values as they are; 1 each row quantized to 8 bits per group of 32 first
// (q8_matmul.h). Returns 0, or -1 if K is not a multiple of 32 or memory is short.
int hg_q4_linear(int S, int K, int N, const void* x, int x_mode, const float* norm_w, float eps,
                 const uint8_t* codes, const uint16_t* sz, void* out, int out_mode, const float* res,
                 int act, int nthreads) {
  if (K % kGroup != 0 || K / kGroup > kMaxGroups || S < 0 || N < 0) return -1;
  if (S == 0 || N == 0) return 0;
  const int G = K / kGroup;
  const size_t SK = static_cast<size_t>(S) * K;
  const size_t q8_bytes = act == 1 ? static_cast<size_t>(S) * q8_row_bytes(K) : 0;
  float* xf = static_cast<float*>(malloc(sizeof(float) * (SK + static_cast<size_t>(S) * G) + sizeof(uint16_t) * SK
                                         + q8_bytes + 64));
  if (xf == nullptr) return -1;
  float* xsum = xf + SK;
  uint16_t* xb = reinterpret_cast<uint16_t*>(xsum + static_cast<size_t>(S) * G);
  prepare_input(S, K, x, x_mode, norm_w, eps, xf, act == 1 ? nullptr : xb, xsum);
  PassInput in{xf, xb, xsum, nullptr};
  if (act == 1) {
    char* q8 = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(xb + SK) + 63) & ~static_cast<uintptr_t>(63));
    for (int r = 0; r < S; ++r) q8_quantize_row(xf + static_cast<size_t>(r) * K, K, q8_row(q8, K, r));
    in.q8 = q8;
  }
  if (nthreads < 1 || static_cast<long>(S) * K * N < g_min_parallel_work.load()) nthreads = 1;
  for (int r0 = 0; r0 < S; r0 += kMaxRows) {
    switch (S - r0 >= kMaxRows ? kMaxRows : S - r0) {
      case 1: rows_pass<1>(r0, K, N, in, codes, sz, out, out_mode, res, nthreads); break;
      case 2: rows_pass<2>(r0, K, N, in, codes, sz, out, out_mode, res, nthreads); break;
      case 3: rows_pass<3>(r0, K, N, in, codes, sz, out, out_mode, res, nthreads); break;
      default: rows_pass<4>(r0, K, N, in, codes, sz, out, out_mode, res, nthreads); break;
    }
  }
  free(xf);
  return 0;
}

// Which integer dot product the 8-bit activations use here: 1 AVX512-VNNI, 0 AVX2 (the same results).
int hg_q8_vnni() { return HG_Q8_VNNI; }

// Rotate-half RoPE in place on the first `heads` heads of each token's row of bf16 qkv (T rows of
// `row_stride` elements, heads of D): x = bf16(bf16(x * cos) + rolled(x) * sin_signed), as model.rope_
// computes it in torch; cos / sin_signed (T, D) bf16 rows `cs_stride` apart.
void hg_rope_bf16(int T, int heads, int D, uint16_t* qkv, long row_stride, const uint16_t* cos,
                  const uint16_t* sin_signed, long cs_stride) {
  const int half = D / 2;
  float tmp[1024];
  if (D > 1024) return;
  for (int t = 0; t < T; ++t) {
    const uint16_t* c = cos + t * cs_stride;
    const uint16_t* s = sin_signed + t * cs_stride;
    for (int h = 0; h < heads; ++h) {
      uint16_t* x = qkv + t * row_stride + static_cast<long>(h) * D;
      for (int i = 0; i < D; ++i) tmp[i] = bf16_to_f32(x[i]);
      for (int i = 0; i < D; ++i) {
        float rolled = tmp[i < half ? i + half : i - half];
        float a = round_bf16(tmp[i] * bf16_to_f32(c[i]));
        x[i] = f32_to_bf16(a + rolled * bf16_to_f32(s[i]));
      }
    }
  }
}

// One query token per sequence over the paged bf16 KV cache, read in place: first the new token's
// K/V are stored at its slot, then q (B, H, D) attends over positions 0..context_len-1 of its own
// blocks. cache (2 * KVH, num_blocks, block_size, D): K heads then V heads. q / k / v are rows of the
// step's qkv (strides in elements); out (B, H, D) bf16 contiguous. Scores (exact bf16 products, float32
// sums), softmax and the weighted sum in float32 (as torch's CPU SDPA for bf16), one rounding at the
// end. D a multiple of 16. Sequences and KV heads split over threads; each (sequence, KV head) is one
// fixed-order computation.
void hg_paged_decode_bf16(int B, int H, int KVH, int D, const uint16_t* q, const uint16_t* k,
                          const uint16_t* v, long row_stride, uint16_t* cache, long num_blocks,
                          int block_size, const int64_t* block_tables, int max_blocks,
                          const int32_t* context_lens, float scale, uint16_t* out, int nthreads) {
  const int G = H / KVH;
  const long head_stride = num_blocks * block_size * static_cast<long>(D);  // one K or V head
  long work = 0;
  for (int b = 0; b < B; ++b) work += 2L * context_lens[b] * H * D;
  if (work < g_min_parallel_work.load()) nthreads = 1;
  parallel_chunks(B * KVH, nthreads, [&](int item) {
    const int b = item / KVH, kvh = item % KVH;
    const int64_t* table = block_tables + static_cast<long>(b) * max_blocks;
    const int L = context_lens[b];
    const long slot = table[(L - 1) / block_size] * block_size + (L - 1) % block_size;
    uint16_t* kc = cache + kvh * head_stride;
    uint16_t* vc = cache + (KVH + kvh) * head_stride;
    memcpy(kc + slot * D, k + b * row_stride + static_cast<long>(kvh) * D, sizeof(uint16_t) * D);
    memcpy(vc + slot * D, v + b * row_stride + static_cast<long>(kvh) * D, sizeof(uint16_t) * D);
    const uint16_t* qh = q + b * row_stride + static_cast<long>(kvh) * G * D;  // the group's G heads
    int64_t* rows = static_cast<int64_t*>(malloc(sizeof(int64_t) * L + sizeof(float) * static_cast<size_t>(G) * L));
    if (rows == nullptr) return;
    for (int blk = 0, j = 0; j < L; ++blk)  // block by block: no division per position
      for (int t = 0; t < block_size && j < L; ++t, ++j) rows[j] = (table[blk] * block_size + t) * D;
    attend_one(G, D, L, qh, kc, vc, rows, scale, reinterpret_cast<float*>(rows + L),
               out + (static_cast<long>(b) * H + static_cast<long>(kvh) * G) * D);
    free(rows);
  });
}

// One decoder layer of a decode step of B sequences (one new token each) in one call: RMSNorm + qkv,
// RoPE, the paged attention (K/V stored), o + residual, RMSNorm + gate/up, SiLU·mul + down + residual —
// the calls FusedLayer otherwise makes one by one, so the results are the same bits. x, out (B, hidden)
// float32; weights as hg_q4_linear takes them (no q/k/v bias); cos / sin_signed rows of D bf16,
// cs_stride apart; the cache, tables and scale as hg_paged_decode_bf16; act as hg_q4_linear's. Returns 0,
// or -1 (memory, shapes).
int hg_decode_layer(int B, int hidden, int H, int KVH, int D, int inter, const float* x, const float* in_norm,
                    const float* post_norm, float eps, const uint8_t* qkv_c, const uint16_t* qkv_sz,
                    const uint8_t* o_c, const uint16_t* o_sz, const uint8_t* gu_c, const uint16_t* gu_sz,
                    const uint8_t* dn_c, const uint16_t* dn_sz, const uint16_t* cos, const uint16_t* sin_signed,
                    long cs_stride, uint16_t* cache, long num_blocks, int block_size, const int64_t* block_tables,
                    int max_blocks, const int32_t* context_lens, float scale, float* out, int act, int nthreads) {
  const long row = static_cast<long>(H + 2 * KVH) * D;
  const size_t bytes = sizeof(uint16_t) * B * (row + static_cast<size_t>(H) * D + 2 * static_cast<size_t>(inter))
                       + sizeof(float) * B * static_cast<size_t>(hidden);
  char* scratch = static_cast<char*>(malloc(bytes));
  if (scratch == nullptr) return -1;
  uint16_t* qkv = reinterpret_cast<uint16_t*>(scratch);  // (B, row)
  uint16_t* attn = qkv + B * row;  // (B, H * D)
  uint16_t* gate_up = attn + static_cast<long>(B) * H * D;  // (B, 2 * inter)
  float* mid = reinterpret_cast<float*>(gate_up + 2L * B * inter);  // (B, hidden): x after attention
  int rc = hg_q4_linear(B, hidden, static_cast<int>(row / D) * D, x, 1, in_norm, eps, qkv_c, qkv_sz, qkv, 0, nullptr,
                        act, nthreads);
  if (rc == 0) {
    hg_rope_bf16(B, H + KVH, D, qkv, row, cos, sin_signed, cs_stride);
    hg_paged_decode_bf16(B, H, KVH, D, qkv, qkv + static_cast<long>(H) * D, qkv + static_cast<long>(H + KVH) * D,
                         row, cache, num_blocks, block_size, block_tables, max_blocks, context_lens,
                         scale, attn, nthreads);
    rc = hg_q4_linear(B, H * D, hidden, attn, 0, nullptr, 0.0f, o_c, o_sz, mid, 1, x, act, nthreads);
  }
  if (rc == 0) rc = hg_q4_linear(B, hidden, 2 * inter, mid, 1, post_norm, eps, gu_c, gu_sz, gate_up, 0, nullptr, act,
                                    nthreads);
  if (rc == 0) rc = hg_q4_linear(B, inter, hidden, gate_up, 2, nullptr, 0.0f, dn_c, dn_sz, out, 1, mid, act, nthreads);
  free(scratch);
  return rc;
}

// All L decoder layers of a decode step in one call (hg_decode_layer each, the same bits): layer l's
// norms and weights at layers[10 l ..] = in_norm, post_norm, qkv codes, qkv sz, o, o sz, gate_up, gate_up
// sz, down, down sz; its cache at cache + l * layer_stride elements. Saves the per-layer call from Python.
int hg_decode_layers(int L, int B, int hidden, int H, int KVH, int D, int inter, const float* x,
                     const int64_t* layers, float eps, const uint16_t* cos, const uint16_t* sin_signed,
                     long cs_stride, uint16_t* cache, long layer_stride, long num_blocks, int block_size,
                     const int64_t* block_tables, int max_blocks, const int32_t* context_lens, float scale,
                     float* out, int act, int nthreads) {
  float* tmp = static_cast<float*>(malloc(sizeof(float) * 2 * B * static_cast<size_t>(hidden)));
  if (tmp == nullptr) return -1;
  const float* in = x;
  int rc = 0;
  for (int l = 0; l < L && rc == 0; ++l) {
    float* dst = l == L - 1 ? out : tmp + (l % 2) * B * static_cast<size_t>(hidden);
    const int64_t* p = layers + 10L * l;
    auto u8 = [&](int i) { return reinterpret_cast<const uint8_t*>(p[i]); };
    auto u16 = [&](int i) { return reinterpret_cast<const uint16_t*>(p[i]); };
    rc = hg_decode_layer(B, hidden, H, KVH, D, inter, in, reinterpret_cast<const float*>(p[0]),
                         reinterpret_cast<const float*>(p[1]), eps, u8(2), u16(3), u8(4), u16(5), u8(6), u16(7), u8(8),
                         u16(9), cos, sin_signed, cs_stride, cache + l * layer_stride, num_blocks, block_size,
                         block_tables, max_blocks, context_lens, scale, dst, act, nthreads);
    in = dst;
  }
  free(tmp);
  return rc;
}

// Causal attention of prefill chunks over the paged bf16 cache, read in place (chunk_attention.h; K/V
// already stored); the arguments as chunk_attention's. Returns 0, or -1 (shapes, memory, no AVX512-BF16).
int hg_chunk_attention_available() {
#ifdef HG_CHUNK_ATTENTION
  return 1;
#else
  return 0;
#endif
}

int hg_chunk_attention_bf16(int B, int H, int KVH, int D, const uint16_t* q, long q_stride, const int32_t* starts,
                            const int32_t* query_lens, const uint16_t* cache, long num_blocks, int block_size,
                            const int64_t* block_tables, int max_blocks, float scale, uint16_t* out, int nthreads) {
#ifdef HG_CHUNK_ATTENTION
  return chunk_attention(B, H, KVH, D, q, q_stride, starts, query_lens, cache, num_blocks, block_size, block_tables,
                         max_blocks, scale, out, nthreads);
#else
  return -1;
#endif
}

}  // extern "C"
