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

// Threads: the pool (pool.h) by default; OpenMP (libgomp, shared with torch) when set for comparison.
std::atomic<int> g_use_openmp{0};

constexpr int kGroup = 32;
constexpr int kMaxRows = 4;  // rows per pass over the weights (more rows: more passes)

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

// One output n for R rows of xf (R, K) fp32; xsum (R, G): each row's group sums.
template <int R>
inline void dot_rows(const uint8_t* codes, const uint16_t* sz, const float* xf, const float* xsum, int K,
                     float* acc_out) {
  const int G = K / kGroup;
  const __m128i low4 = _mm_set1_epi8(0x0f);
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  for (int g = 0; g < G; ++g) {
    __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + g * 16));
    __m128i lo = _mm_and_si128(v, low4), hi = _mm_and_si128(_mm_srli_epi16(v, 4), low4);
    __m256 q0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo));
    __m256 q1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(lo, lo)));
    __m256 q2 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi));
    __m256 q3 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(hi, hi)));
    __m256 s = _mm256_set1_ps(bf16_to_f32(sz[2 * g]));
    for (int r = 0; r < R; ++r) {
      const float* x = xf + static_cast<size_t>(r) * K + g * kGroup;
      __m256 d = _mm256_mul_ps(q0, _mm256_loadu_ps(x));
      d = _mm256_fmadd_ps(q1, _mm256_loadu_ps(x + 8), d);
      d = _mm256_fmadd_ps(q2, _mm256_loadu_ps(x + 16), d);
      d = _mm256_fmadd_ps(q3, _mm256_loadu_ps(x + 24), d);
      acc[r] = _mm256_fmadd_ps(d, s, acc[r]);
    }
  }
  for (int r = 0; r < R; ++r) {
    // sum_j ((q_j - 8) s + z) x_j = s * sum_j q_j x_j + (z - 8 s) * sum_j x_j, group by group
    float zsum = 0.0f;
    const float* xs = xsum + static_cast<size_t>(r) * G;
    for (int g = 0; g < G; ++g) {
      float s = bf16_to_f32(sz[2 * g]), z = bf16_to_f32(sz[2 * g + 1]);
      zsum += (z - 8.0f * s) * xs[g];
    }
    acc_out[r] = hsum(acc[r]) + zsum;
  }
}

// The input rows as fp32 (S, K) and their group sums (S, K/32).
void prepare_input(int S, int K, const void* x, int x_mode, const float* norm_w, float eps, float* xf,
                   float* xsum) {
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
    const int G = K / kGroup;
    for (int g = 0; g < G; ++g) {
      float s = 0.0f;
      for (int j = 0; j < kGroup; ++j) s += out[g * kGroup + j];
      xsum[static_cast<size_t>(r) * G + g] = s;
    }
  }
}

template <int R>
void rows_range(int n0, int n1, int r0, int K, int N, const float* xf, const float* xsum, const uint8_t* codes,
                const uint16_t* sz, void* out, int out_mode, const float* res) {
  const int G = K / kGroup;
  const int n_out = out_mode == 2 ? N / 2 : N;
  const float* x = xf + static_cast<size_t>(r0) * K;
  const float* xs = xsum + static_cast<size_t>(r0) * G;
  for (int n = n0; n < n1; ++n) {
    float acc[R];
    dot_rows<R>(codes + static_cast<size_t>(n) * K / 2, sz + static_cast<size_t>(n) * G * 2, x, xs, K, acc);
    if (out_mode == 2) {  // two halves of rows that add up to one matrix (a Q8_0 head), fp32 out
      float acc2[R];
      size_t m = static_cast<size_t>(n) + n_out;
      dot_rows<R>(codes + m * K / 2, sz + m * G * 2, x, xs, K, acc2);
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
void rows_pass(int r0, int K, int N, const float* xf, const float* xsum, const uint8_t* codes,
               const uint16_t* sz, void* out, int out_mode, const float* res, int nthreads) {
  const int n_out = out_mode == 2 ? N / 2 : N;
  if (g_use_openmp.load(std::memory_order_relaxed)) {
#pragma omp parallel num_threads(nthreads)
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      rows_range<R>(static_cast<int>(static_cast<long>(n_out) * t / nt),
                    static_cast<int>(static_cast<long>(n_out) * (t + 1) / nt), r0, K, N, xf, xsum, codes, sz, out,
                    out_mode, res);
    }
    return;
  }
  // ~8 chunks a thread (whole cache lines of output), so a late thread's share is taken by the others
  int chunk = (n_out / (8 * (nthreads > 0 ? nthreads : 1)) + 15) / 16 * 16;
  if (chunk < 16) chunk = 16;
  const int n_chunks = (n_out + chunk - 1) / chunk;
  hg::parallel_for(n_chunks, nthreads, [&](int c) {
    const int n1 = (c + 1) * chunk < n_out ? (c + 1) * chunk : n_out;
    rows_range<R>(c * chunk, n1, r0, K, N, xf, xsum, codes, sz, out, out_mode, res);
  });
}

}  // namespace

extern "C" {

int hg_abi_version() { return 1; }

// use_openmp: 1 = the matmuls split over OpenMP threads (static), 0 = the pool; spin_us: how long pool
// workers spin for the next job before sleeping.
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
  if (K % kGroup != 0 || S < 0 || N < 0) return -1;
  if (S == 0 || N == 0) return 0;
  const int G = K / kGroup;
  float* xf = static_cast<float*>(malloc(sizeof(float) * (static_cast<size_t>(S) * K + static_cast<size_t>(S) * G)));
  if (xf == nullptr) return -1;
  float* xsum = xf + static_cast<size_t>(S) * K;
  prepare_input(S, K, x, x_mode, norm_w, eps, xf, xsum);
  if (nthreads < 1) nthreads = 1;
  for (int r0 = 0; r0 < S; r0 += kMaxRows) {
    switch (S - r0 >= kMaxRows ? kMaxRows : S - r0) {
      case 1: rows_pass<1>(r0, K, N, xf, xsum, codes, sz, out, out_mode, res, nthreads); break;
      case 2: rows_pass<2>(r0, K, N, xf, xsum, codes, sz, out, out_mode, res, nthreads); break;
      case 3: rows_pass<3>(r0, K, N, xf, xsum, codes, sz, out, out_mode, res, nthreads); break;
      default: rows_pass<4>(r0, K, N, xf, xsum, codes, sz, out, out_mode, res, nthreads); break;
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
// step's qkv (strides in elements); out (B, H, D) bf16 contiguous. Scores, softmax and the weighted sum
// in float32 (as torch's CPU SDPA for bf16), one rounding at the end. Sequences and KV heads split
// over threads; each (sequence, head) is one fixed-order computation.
void hg_paged_decode_bf16(int B, int H, int KVH, int D, const uint16_t* q, const uint16_t* k,
                          const uint16_t* v, long row_stride, uint16_t* cache, long num_blocks,
                          int block_size, const int64_t* block_tables, int max_blocks,
                          const int32_t* context_lens, float scale, uint16_t* out, int nthreads) {
  const int G = H / KVH;
  const long head_stride = num_blocks * block_size * static_cast<long>(D);  // one K or V head
  hg::parallel_for(B * KVH, nthreads, [&](int item) {
    {
      const int b = item / KVH, kvh = item % KVH;
      const int64_t* table = block_tables + static_cast<long>(b) * max_blocks;
      const int L = context_lens[b];
      const int pos = L - 1;
      const long slot = table[pos / block_size] * block_size + pos % block_size;
      uint16_t* kc = cache + kvh * head_stride;
      uint16_t* vc = cache + (KVH + kvh) * head_stride;
      memcpy(kc + slot * D, k + b * row_stride + static_cast<long>(kvh) * D, sizeof(uint16_t) * D);
      memcpy(vc + slot * D, v + b * row_stride + static_cast<long>(kvh) * D, sizeof(uint16_t) * D);
      float* qf = static_cast<float*>(malloc(sizeof(float) * (static_cast<size_t>(G) * D * 2 + static_cast<size_t>(G) * L)));
      if (qf == nullptr) return;
      float* acc = qf + G * D;
      float* scores = acc + G * D;  // (G, L)
      for (int g = 0; g < G; ++g)
        for (int d = 0; d < D; ++d)
          qf[g * D + d] = bf16_to_f32(q[b * row_stride + static_cast<long>(kvh * G + g) * D + d]);
      for (int j = 0; j < L; ++j) {
        const uint16_t* kr = kc + (table[j / block_size] * block_size + j % block_size) * D;
        for (int g = 0; g < G; ++g) {
          __m256 s = _mm256_setzero_ps();
          for (int d = 0; d < D; d += 8) {
            s = _mm256_fmadd_ps(_mm256_loadu_ps(qf + g * D + d), load_bf16x8(kr + d), s);
          }
          scores[g * L + j] = hsum(s) * scale;
        }
      }
      for (int g = 0; g < G; ++g) {
        float* sc = scores + g * L;
        float m = sc[0];
        for (int j = 1; j < L; ++j) m = sc[j] > m ? sc[j] : m;
        float sum = 0.0f;
        int j = 0;
        for (; j + 8 <= L; j += 8) {
          __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(sc + j), _mm256_set1_ps(m)));
          _mm256_storeu_ps(sc + j, e);
          sum += hsum(e);
        }
        for (; j < L; ++j) {
          sc[j] = expf(sc[j] - m);
          sum += sc[j];
        }
        float inv = 1.0f / sum;
        for (int j = 0; j < L; ++j) sc[j] *= inv;
        for (int d = 0; d < D; ++d) acc[g * D + d] = 0.0f;
      }
      for (int j = 0; j < L; ++j) {
        const uint16_t* vr = vc + (table[j / block_size] * block_size + j % block_size) * D;
        for (int d = 0; d < D; d += 8) {
          __m256 vv = load_bf16x8(vr + d);
          for (int g = 0; g < G; ++g) {
            __m256 a = _mm256_loadu_ps(acc + g * D + d);
            _mm256_storeu_ps(acc + g * D + d, _mm256_fmadd_ps(_mm256_set1_ps(scores[g * L + j]), vv, a));
          }
        }
      }
      for (int g = 0; g < G; ++g)
        for (int d = 0; d < D; ++d)
          out[(static_cast<long>(b) * H + kvh * G + g) * D + d] = f32_to_bf16(acc[g * D + d]);
      free(qf);
    }
  });
}

}  // extern "C"
