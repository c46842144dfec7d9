// The 4-bit matmul: codes against a few rows of activations (fused prologues: RMSNorm, SiLU·mul; epilogues:
// bf16 out, residual add, two halves summed), one fixed-order float32 reduction per (row, output).
#pragma once
#include <stdint.h>
#include <stdlib.h>

#include "parallel.h"
#include "q8_matmul.h"
#include "simd.h"

namespace {

constexpr int kGroup = 32;
constexpr int kMaxRows = 4;  // rows per pass over the weights (more rows: more passes)
constexpr int kMaxGroups = 4096;  // K up to 131072

#if defined(__AVX512BF16__) && defined(__AVX512VL__)
// Codes enter the dot products as bf16 (128 + q), whose bits are 0x4300 | q: exact, no conversion.
constexpr float kCodeBias = 128.0f;
#else
constexpr float kCodeBias = 0.0f;
#endif

// Group g of one output's codes against R rows, added to acc[R]: s * sum_j (q_j + bias) x_j.
template <int R>
__attribute__((always_inline)) inline void group_dot(const uint8_t* codes, const float* scales, const float* xf,
                                                     const uint16_t* xb, int K, int g, __m256* acc) {
  const __m256 s = _mm256_broadcast_ss(scales + g);
#if defined(__AVX512BF16__) && defined(__AVX512VL__)
  (void)xf;
  const __m256i w = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + g * 16)));
  const __m256i bias = _mm256_set1_epi16(0x4300);
  const __m256bh lo = (__m256bh)_mm256_or_si256(_mm256_and_si256(w, _mm256_set1_epi16(0x000f)), bias);  // 0..15
  const __m256bh hi = (__m256bh)_mm256_or_si256(_mm256_srli_epi16(w, 4), bias);  // elements 16..31
  for (int r = 0; r < R; ++r) {
    const uint16_t* x = xb + static_cast<size_t>(r) * K + g * kGroup;
    __m256 d = _mm256_dpbf16_ps(_mm256_setzero_ps(), lo,
                                (__m256bh)_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x)));
    d = _mm256_dpbf16_ps(d, hi, (__m256bh)_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 16)));
    acc[r] = _mm256_fmadd_ps(d, s, acc[r]);
  }
#else
  (void)xb;
  const __m128i low4 = _mm_set1_epi8(0x0f);
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + g * 16));
  const __m128i lo = _mm_and_si128(v, low4), hi = _mm_and_si128(_mm_srli_epi16(v, 4), low4);
  const __m256 q0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo));
  const __m256 q1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(lo, lo)));
  const __m256 q2 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi));
  const __m256 q3 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(hi, hi)));
  for (int r = 0; r < R; ++r) {
    const float* x = xf + static_cast<size_t>(r) * K + g * kGroup;
    __m256 d = _mm256_mul_ps(q0, _mm256_loadu_ps(x));
    d = _mm256_fmadd_ps(q1, _mm256_loadu_ps(x + 8), d);
    d = _mm256_fmadd_ps(q2, _mm256_loadu_ps(x + 16), d);
    d = _mm256_fmadd_ps(q3, _mm256_loadu_ps(x + 24), d);
    acc[r] = _mm256_fmadd_ps(d, s, acc[r]);
  }
#endif
}

// One output for R rows: xf (R, K) fp32 and xb the same values as bf16; xsum (R, G) group sums.
// sum_j ((q_j - 8) s + z) x_j = s * sum_j (q_j + bias) x_j + (z - (8 + bias) s) * sum_j x_j per group.
// Four accumulators (groups g, g+1, g+2, g+3), so the FMA latency does not bound a group's cost; they
// are summed in a fixed order.
template <int R>
inline void dot_rows(const uint8_t* codes, const uint16_t* sz, const float* xf, const uint16_t* xb,
                     const float* xsum, int K, float* acc_out) {
  const int G = K / kGroup;
  alignas(32) float scales[kMaxGroups], shifts[kMaxGroups];  // s and z - (8 + bias) s per group, float32
  int j = 0;
  for (; j + 8 <= G; j += 8) {  // (s, z) bf16 pairs: one 32-bit lane each, z in the high half
    const __m256i p = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sz + 2 * j));
    const __m256 sv = _mm256_castsi256_ps(_mm256_slli_epi32(p, 16));
    const __m256 zv = _mm256_castsi256_ps(_mm256_and_si256(p, _mm256_set1_epi32(static_cast<int>(0xffff0000u))));
    _mm256_store_ps(scales + j, sv);
    _mm256_store_ps(shifts + j, _mm256_fnmadd_ps(_mm256_set1_ps(8.0f + kCodeBias), sv, zv));
  }
  for (; j < G; ++j) {
    scales[j] = bf16_to_f32(sz[2 * j]);
    shifts[j] = fmaf(-(8.0f + kCodeBias), scales[j], bf16_to_f32(sz[2 * j + 1]));
  }
  __m256 a0[R], a1[R], a2[R], a3[R];
  for (int r = 0; r < R; ++r) a0[r] = a1[r] = a2[r] = a3[r] = _mm256_setzero_ps();
  int g = 0;
  for (; g + 4 <= G; g += 4) {
    group_dot<R>(codes, scales, xf, xb, K, g, a0);
    group_dot<R>(codes, scales, xf, xb, K, g + 1, a1);
    group_dot<R>(codes, scales, xf, xb, K, g + 2, a2);
    group_dot<R>(codes, scales, xf, xb, K, g + 3, a3);
  }
  for (; g < G; ++g) group_dot<R>(codes, scales, xf, xb, K, g, a0);
  for (int r = 0; r < R; ++r) {
    const float* xs = xsum + static_cast<size_t>(r) * G;
    __m256 zv = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= G; i += 8) zv = _mm256_fmadd_ps(_mm256_load_ps(shifts + i), _mm256_loadu_ps(xs + i), zv);
    float zsum = hsum(zv);
    for (; i < G; ++i) zsum = fmaf(shifts[i], xs[i], zsum);
    acc_out[r] = hsum(_mm256_add_ps(_mm256_add_ps(a0[r], a1[r]), _mm256_add_ps(a2[r], a3[r]))) + zsum;
  }
}

// The input rows as fp32 (S, K) and, unless xb is null (8-bit activations: q8_quantize_row's instead), as
// bf16 with their group sums (S, K/32).
void prepare_input(int S, int K, const void* x, int x_mode, const float* norm_w, float eps, float* xf,
                   uint16_t* xb, float* xsum) {
  for (int r = 0; r < S; ++r) {
    float* out = xf + static_cast<size_t>(r) * K;
    if (x_mode == 0) {  // bf16 rows
      const uint16_t* in = static_cast<const uint16_t*>(x) + static_cast<size_t>(r) * K;
      for (int k = 0; k < K; ++k) out[k] = bf16_to_f32(in[k]);
    } else if (x_mode == 1) {  // fp32 rows -> RMSNorm * weight, rounded to bf16 (F.rms_norm(...).to(bf16))
      const float* in = static_cast<const float*>(x) + static_cast<size_t>(r) * K;
      float ss = 0.0f;
      for (int k = 0; k < K; ++k) ss += in[k] * in[k];
      float rstd = 1.0f / sqrtf(ss / static_cast<float>(K) + eps);
      for (int k = 0; k < K; ++k) out[k] = round_bf16(in[k] * rstd * norm_w[k]);
    } else {  // bf16 rows of (gate, up), 2K wide -> silu(gate) * up with torch's two bf16 roundings
      const uint16_t* in = static_cast<const uint16_t*>(x) + static_cast<size_t>(r) * 2 * K;
      float sig[8];
      for (int k = 0; k < K; k += 8) {  // K is a multiple of 32
        __m256 g = load_bf16x8(in + k);
        _mm256_storeu_ps(sig, _mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0f),
                                                             exp8(_mm256_sub_ps(_mm256_setzero_ps(), g)))));
        for (int j = 0; j < 8; ++j) out[k + j] = round_bf16(round_bf16(sig[j]) * bf16_to_f32(in[K + k + j]));
      }
    }
    if (xb == nullptr) continue;
    for (int k = 0; k < K; ++k) xb[static_cast<size_t>(r) * K + k] = f32_to_bf16(out[k]);  // exact: bf16 values
    const int G = K / kGroup;
    for (int g = 0; g < G; ++g) {
      float s = 0.0f;
      for (int j = 0; j < kGroup; ++j) s += out[g * kGroup + j];
      xsum[static_cast<size_t>(r) * G + g] = s;
    }
  }
}

// Outputs n0..n1 of rows r0..r0+R-1: dot(n, acc) computes one output's R sums, stored per out_mode.
template <int R, class Dot>
void rows_range(int n0, int n1, int r0, int N, void* out, int out_mode, const float* res, const Dot& dot) {
  const int n_out = out_mode == 2 ? N / 2 : N;
  for (int n = n0; n < n1; ++n) {
    float acc[R];
    dot(n, acc);
    if (out_mode == 2) {  // two halves of rows that add up to one matrix (a Q8_0 head), fp32 out
      float acc2[R];
      dot(n + n_out, acc2);
      for (int r = 0; r < R; ++r) static_cast<float*>(out)[static_cast<size_t>(r0 + r) * n_out + n] = acc[r] + acc2[r];
    } else if (out_mode == 1) {  // fp32 residual + the bf16-rounded product (x + linear(h) in torch)
      for (int r = 0; r < R; ++r) {
        size_t i = static_cast<size_t>(r0 + r) * N + n;
        static_cast<float*>(out)[i] = res[i] + round_bf16(acc[r]);
      }
    } else {
      for (int r = 0; r < R; ++r) static_cast<uint16_t*>(out)[static_cast<size_t>(r0 + r) * N + n] = f32_to_bf16(acc[r]);
    }
  }
}

// The input rows r0..r0+R-1 prepared once for a pass: bf16/fp32 values with group sums (q8 == nullptr),
// or quantized to 8 bits (q8_matmul.h).
struct PassInput {
  const float* xf;
  const uint16_t* xb;
  const float* xsum;
  const char* q8;
};

template <int R>
void rows_pass(int r0, int K, int N, const PassInput& in, const uint8_t* codes, const uint16_t* sz, void* out,
               int out_mode, const float* res, int nthreads) {
  const int n_out = out_mode == 2 ? N / 2 : N;
  const int G = K / kGroup;
  // ~8 chunks a thread (whole cache lines of output): contiguous shares under OpenMP's static split;
  // under the pool a late thread's share is taken by the others
  int chunk = (n_out / (8 * (nthreads > 0 ? nthreads : 1)) + 15) / 16 * 16;
  if (chunk < 16) chunk = 16;
  const int n_chunks = (n_out + chunk - 1) / chunk;
  if (in.q8 != nullptr) {
    Q8Row rows[R];
    for (int r = 0; r < R; ++r) rows[r] = q8_row(const_cast<char*>(in.q8), K, r0 + r);
    auto dot = [&](int n, float* acc) {
      dot_rows_q8<R>(codes + static_cast<size_t>(n) * K / 2, sz + static_cast<size_t>(n) * G * 2, rows, K, acc);
    };
    parallel_chunks(n_chunks, nthreads, [&](int c) {
      rows_range<R>(c * chunk, (c + 1) * chunk < n_out ? (c + 1) * chunk : n_out, r0, N, out, out_mode, res, dot);
    });
    return;
  }
  const float* x = in.xf + static_cast<size_t>(r0) * K;
  const uint16_t* xb = in.xb + static_cast<size_t>(r0) * K;
  const float* xs = in.xsum + static_cast<size_t>(r0) * G;
  auto dot = [&](int n, float* acc) {
    dot_rows<R>(codes + static_cast<size_t>(n) * K / 2, sz + static_cast<size_t>(n) * G * 2, x, xb, xs, K, acc);
  };
  parallel_chunks(n_chunks, nthreads, [&](int c) {
    rows_range<R>(c * chunk, (c + 1) * chunk < n_out ? (c + 1) * chunk : n_out, r0, N, out, out_mode, res, dot);
  });
}

}  // namespace
