// Native CPU kernels for small decode steps (a few rows): 4-bit matmuls on the GGUF's own codes with
// the step's small ops fused in (RMSNorm + bf16 cast before, SiLU*mul before, residual add after),
// and RoPE on bf16 q/k. Plain C ABI for ctypes; no torch headers. Built by local_engine/native/build.py.
//
// Weights: w = (q - 8) * scale + zero per group of 32, scale and zero bf16 — the effective weights the
// torch int4 path and the bf16 path share (weights.int4_effective_weight). Every output row is computed
// by the same instruction sequence whatever the row count (S) or thread count: each (row, output) dot
// product is one fixed-order fp32 reduction, threads only split the outputs. So results are
// batch-invariant by construction (--deterministic relies on it).
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

#include "pool.h"

namespace {

// Threads: OpenMP (libgomp, shared with torch: one static share per thread) by default, or the pool
// (pool.h: dynamic chunks, spinning workers). On this busy 2-core box OpenMP won (docs/benchmarks.md):
// a static share makes both threads run, where the pool's caller took most chunks itself.
std::atomic<int> g_use_openmp{1};

// f(c) for c in [0, n_chunks) on `threads` threads (the caller one of them).
template <class F>
void parallel_chunks(int n_chunks, int threads, F&& f) {
  if (threads <= 1 || n_chunks <= 1) {
    for (int c = 0; c < n_chunks; ++c) f(c);
  } else if (g_use_openmp.load(std::memory_order_relaxed)) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int c = 0; c < n_chunks; ++c) f(c);
  } else {
    hg::parallel_for(n_chunks, threads, f);
  }
}

constexpr int kGroup = 32;
constexpr int kMaxRows = 4;  // rows per pass over the weights (more rows: more passes)
constexpr int kMaxGroups = 4096;  // K up to 131072
// Below this many multiply-adds a call stays on the calling thread: waking a peer costs 10-40 µs here
// (passive OpenMP waits, a busy machine), more than splitting SmolLM2's layer matmuls (30-100 µs of
// work) saves; its LM head (57 M) and larger models' matrices do split.
constexpr long kMinParallelWork = 4L << 20;

inline float bf16_to_f32(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

inline uint16_t f32_to_bf16(float f) {  // round to nearest even, as torch's .to(bfloat16)
  uint32_t bits;
  memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);  // NaN stays NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

inline float round_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }

// exp of 8 floats (Cephes' expf: range reduction by ln 2, degree-5 polynomial; ~1 ulp on [-87, 88]).
inline __m256 exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
  __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

inline float hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

inline __m256 load_bf16x8(const uint16_t* p) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(
      _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
}

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

// The input rows as fp32 (S, K) and their group sums (S, K/32).
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
    for (int k = 0; k < K; ++k) xb[static_cast<size_t>(r) * K + k] = f32_to_bf16(out[k]);  // exact: bf16 values
    const int G = K / kGroup;
    for (int g = 0; g < G; ++g) {
      float s = 0.0f;
      for (int j = 0; j < kGroup; ++j) s += out[g * kGroup + j];
      xsum[static_cast<size_t>(r) * G + g] = s;
    }
  }
}

template <int R>
void rows_range(int n0, int n1, int r0, int K, int N, const float* xf, const uint16_t* xbf, const float* xsum,
                const uint8_t* codes, const uint16_t* sz, void* out, int out_mode, const float* res) {
  const int G = K / kGroup;
  const int n_out = out_mode == 2 ? N / 2 : N;
  const float* x = xf + static_cast<size_t>(r0) * K;
  const uint16_t* xb = xbf + static_cast<size_t>(r0) * K;
  const float* xs = xsum + static_cast<size_t>(r0) * G;
  for (int n = n0; n < n1; ++n) {
    float acc[R];
    dot_rows<R>(codes + static_cast<size_t>(n) * K / 2, sz + static_cast<size_t>(n) * G * 2, x, xb, xs, K, acc);
    if (out_mode == 2) {  // two halves of rows that add up to one matrix (a Q8_0 head), fp32 out
      float acc2[R];
      size_t m = static_cast<size_t>(n) + n_out;
      dot_rows<R>(codes + m * K / 2, sz + m * G * 2, x, xb, xs, K, acc2);
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

template <int R>
void rows_pass(int r0, int K, int N, const float* xf, const uint16_t* xb, const float* xsum, const uint8_t* codes,
               const uint16_t* sz, void* out, int out_mode, const float* res, int nthreads) {
  const int n_out = out_mode == 2 ? N / 2 : N;
  // ~8 chunks a thread (whole cache lines of output): contiguous shares under OpenMP's static split;
  // under the pool a late thread's share is taken by the others
  int chunk = (n_out / (8 * (nthreads > 0 ? nthreads : 1)) + 15) / 16 * 16;
  if (chunk < 16) chunk = 16;
  const int n_chunks = (n_out + chunk - 1) / chunk;
  parallel_chunks(n_chunks, nthreads, [&](int c) {
    const int n1 = (c + 1) * chunk < n_out ? (c + 1) * chunk : n_out;
    rows_range<R>(c * chunk, n1, r0, K, N, xf, xb, xsum, codes, sz, out, out_mode, res);
  });
}

// Sums of 8 vectors -> one vector of their 8 horizontal sums.
inline __m256 hsum8(__m256 v0, __m256 v1, __m256 v2, __m256 v3, __m256 v4, __m256 v5, __m256 v6, __m256 v7) {
  __m256 a = _mm256_hadd_ps(_mm256_hadd_ps(v0, v1), _mm256_hadd_ps(v2, v3));
  __m256 c = _mm256_hadd_ps(_mm256_hadd_ps(v4, v5), _mm256_hadd_ps(v6, v7));
  return _mm256_add_ps(_mm256_permute2f128_ps(a, c, 0x20), _mm256_permute2f128_ps(a, c, 0x31));
}


// q . k for one head's q (D bf16) against key j: float32 (D a multiple of 16).
inline __m256 qk_partial(const uint16_t* qh, const uint16_t* kr, int D) {
  __m256 s = _mm256_setzero_ps();
#if defined(__AVX512BF16__) && defined(__AVX512VL__)
  for (int d = 0; d < D; d += 16)
    s = _mm256_dpbf16_ps(s, (__m256bh)_mm256_loadu_si256(reinterpret_cast<const __m256i*>(qh + d)),
                         (__m256bh)_mm256_loadu_si256(reinterpret_cast<const __m256i*>(kr + d)));
#else
  for (int d = 0; d < D; d += 8) s = _mm256_fmadd_ps(load_bf16x8(qh + d), load_bf16x8(kr + d), s);
#endif
  return s;
}

// out (G, D) bf16 = probs (G, L) @ V, DS 8-wide slices of D at a time: for each position one row of V
// is loaded once and feeds all G * DS accumulators (registers), one chain per (head, lane) over positions.
template <int G, int DS>
void weighted_sum(int D, int L, const uint16_t* vc, const int64_t* rows, const float* probs, uint16_t* out) {
  for (int d0 = 0; d0 < D; d0 += 8 * DS) {
    __m256 acc[G][DS];
    for (int g = 0; g < G; ++g)
      for (int t = 0; t < DS; ++t) acc[g][t] = _mm256_setzero_ps();
    for (int j = 0; j < L; ++j) {
      const uint16_t* vr = vc + rows[j] + d0;
      __m256 v[DS];
      for (int t = 0; t < DS; ++t) v[t] = load_bf16x8(vr + 8 * t);
      for (int g = 0; g < G; ++g) {
        const __m256 p = _mm256_broadcast_ss(probs + static_cast<size_t>(g) * L + j);
        for (int t = 0; t < DS; ++t) acc[g][t] = _mm256_fmadd_ps(p, v[t], acc[g][t]);
      }
    }
    for (int g = 0; g < G; ++g)
      for (int t = 0; t < DS; ++t) {
        alignas(32) float tmp[8];
        _mm256_store_ps(tmp, acc[g][t]);
        for (int i = 0; i < 8; ++i) out[static_cast<long>(g) * D + d0 + 8 * t + i] = f32_to_bf16(tmp[i]);
      }
  }
}

// G heads' accumulators: as many 8-wide slices at once as D allows and ~24 registers hold.
template <int G>
void weighted_sum_g(int D, int L, const uint16_t* vc, const int64_t* rows, const float* probs, uint16_t* out) {
  constexpr int kWide = G <= 3 ? 8 : G <= 6 ? 4 : 2;
  if (D % (8 * kWide) == 0) {
    weighted_sum<G, kWide>(D, L, vc, rows, probs, out);
  } else {
    weighted_sum<G, 1>(D, L, vc, rows, probs, out);
  }
}

// The G query heads sharing one KV head: rows (L,) each position's element offset in a head of the
// cache; scores (G, L) scratch; out (G, D) bf16.
void attend_one(int G, int D, int L, const uint16_t* qh, const uint16_t* kc, const uint16_t* vc,
                const int64_t* rows, float scale, float* scores, uint16_t* out) {
  for (int g = 0; g < G; ++g) {
    const uint16_t* qg = qh + static_cast<long>(g) * D;
    float* sc = scores + static_cast<size_t>(g) * L;
    int j = 0;
    for (; j + 8 <= L; j += 8) {  // 8 keys at once: independent chains, one reduction
      __m256 p[8];
      const uint16_t* kr[8];
      for (int t = 0; t < 8; ++t) {
        p[t] = _mm256_setzero_ps();
        kr[t] = kc + rows[j + t];
      }
#if defined(__AVX512BF16__) && defined(__AVX512VL__)
      for (int d = 0; d < D; d += 16) {
        const __m256bh qd = (__m256bh)_mm256_loadu_si256(reinterpret_cast<const __m256i*>(qg + d));
        for (int t = 0; t < 8; ++t)
          p[t] = _mm256_dpbf16_ps(p[t], qd, (__m256bh)_mm256_loadu_si256(reinterpret_cast<const __m256i*>(kr[t] + d)));
      }
#else
      for (int d = 0; d < D; d += 8) {
        const __m256 qd = load_bf16x8(qg + d);
        for (int t = 0; t < 8; ++t) p[t] = _mm256_fmadd_ps(qd, load_bf16x8(kr[t] + d), p[t]);
      }
#endif
      _mm256_storeu_ps(sc + j, _mm256_mul_ps(hsum8(p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]),
                                             _mm256_set1_ps(scale)));
    }
    for (; j < L; ++j) sc[j] = hsum(qk_partial(qg, kc + rows[j], D)) * scale;
    __m256 mv = _mm256_set1_ps(sc[0]);
    int i = 0;
    for (; i + 8 <= L; i += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(sc + i));
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, mv);
    float m = lanes[0];
    for (int t = 1; t < 8; ++t) m = lanes[t] > m ? lanes[t] : m;
    for (; i < L; ++i) m = sc[i] > m ? sc[i] : m;
    __m256 sumv = _mm256_setzero_ps();
    i = 0;
    for (; i + 8 <= L; i += 8) {
      __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(sc + i), _mm256_set1_ps(m)));
      _mm256_storeu_ps(sc + i, e);
      sumv = _mm256_add_ps(sumv, e);
    }
    float sum = hsum(sumv);
    for (; i < L; ++i) {
      sc[i] = expf(sc[i] - m);
      sum += sc[i];
    }
    const __m256 inv = _mm256_set1_ps(1.0f / sum);
    i = 0;
    for (; i + 8 <= L; i += 8) _mm256_storeu_ps(sc + i, _mm256_mul_ps(_mm256_loadu_ps(sc + i), inv));
    for (; i < L; ++i) sc[i] *= 1.0f / sum;
  }
  switch (G) {
    case 1: weighted_sum_g<1>(D, L, vc, rows, scores, out); break;
    case 2: weighted_sum_g<2>(D, L, vc, rows, scores, out); break;
    case 3: weighted_sum_g<3>(D, L, vc, rows, scores, out); break;
    case 4: weighted_sum_g<4>(D, L, vc, rows, scores, out); break;
    case 5: weighted_sum_g<5>(D, L, vc, rows, scores, out); break;
    case 6: weighted_sum_g<6>(D, L, vc, rows, scores, out); break;
    case 7: weighted_sum_g<7>(D, L, vc, rows, scores, out); break;
    default: weighted_sum_g<8>(D, L, vc, rows, scores, out); break;
  }
}

}  // namespace

extern "C" {

int hg_abi_version() { return 1; }

// use_openmp: 1 = work split over OpenMP threads (static; the default), 0 = the pool; spin_us: how long
// pool workers spin for the next job before sleeping.
void hg_set_threading(int use_openmp, int spin_us) {
  g_use_openmp.store(use_openmp);
  hg::pool().set_spin_us(spin_us);
}

// out = x @ W.T for S rows. x_mode: 0 bf16 (S, K); 1 fp32 (S, K) through RMSNorm(norm_w, eps) and a bf16
// cast; 2 bf16 (S, 2K) as silu(first half) * second half. out_mode: 0 bf16 (S, N); 1 fp32 (S, N) =
// res + bf16(product); 2 fp32 (S, N/2), rows n and n + N/2 summed. codes (N, K/2): group g's 16 bytes
// hold element j in the low and j + 16 in the high nibble; sz (N, K/32, 2) bf16 (scale, zero).
// Returns 0, or -1 if K is not a multiple of 32 or memory is short.
int hg_q4_linear(int S, int K, int N, const void* x, int x_mode, const float* norm_w, float eps,
                 const uint8_t* codes, const uint16_t* sz, void* out, int out_mode, const float* res,
                 int nthreads) {
  if (K % kGroup != 0 || K / kGroup > kMaxGroups || S < 0 || N < 0) return -1;
  if (S == 0 || N == 0) return 0;
  const int G = K / kGroup;
  const size_t SK = static_cast<size_t>(S) * K;
  float* xf = static_cast<float*>(malloc(sizeof(float) * (SK + static_cast<size_t>(S) * G) + sizeof(uint16_t) * SK));
  if (xf == nullptr) return -1;
  float* xsum = xf + SK;
  uint16_t* xb = reinterpret_cast<uint16_t*>(xsum + static_cast<size_t>(S) * G);
  prepare_input(S, K, x, x_mode, norm_w, eps, xf, xb, xsum);
  if (nthreads < 1 || static_cast<long>(S) * K * N < kMinParallelWork) nthreads = 1;
  for (int r0 = 0; r0 < S; r0 += kMaxRows) {
    switch (S - r0 >= kMaxRows ? kMaxRows : S - r0) {
      case 1: rows_pass<1>(r0, K, N, xf, xb, xsum, codes, sz, out, out_mode, res, nthreads); break;
      case 2: rows_pass<2>(r0, K, N, xf, xb, xsum, codes, sz, out, out_mode, res, nthreads); break;
      case 3: rows_pass<3>(r0, K, N, xf, xb, xsum, codes, sz, out, out_mode, res, nthreads); break;
      default: rows_pass<4>(r0, K, N, xf, xb, xsum, codes, sz, out, out_mode, res, nthreads); break;
    }
  }
  free(xf);
  return 0;
}

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
  if (work < kMinParallelWork) nthreads = 1;
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

}  // extern "C"
