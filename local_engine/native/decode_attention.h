// One query token's attention over the paged bf16 cache for the G query heads of one KV head.
#pragma once
#include <stdint.h>

#include "simd.h"

namespace {

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

#if defined(__AVX512BF16__) && defined(__AVX512VL__)
// Scaled scores (G, L) of keys 0..L8-1 (L8 a multiple of 8) for all G heads at once: each key row is
// loaded once for the G heads (G * 8 accumulators in registers); per (head, key) the same sequence of
// dot products as attend_one's one-head loop, so the same bits.
template <int G>
void scores_all_heads(int D, int L8, int L, const uint16_t* qh, const uint16_t* kc, const int64_t* rows, float scale,
                      float* scores) {
  for (int j = 0; j < L8; j += 8) {
    __m256 p[G][8];
    for (int g = 0; g < G; ++g)
      for (int t = 0; t < 8; ++t) p[g][t] = _mm256_setzero_ps();
    for (int d = 0; d < D; d += 16) {
      __m256bh q[G];
      for (int g = 0; g < G; ++g)
        q[g] = (__m256bh)_mm256_loadu_si256(reinterpret_cast<const __m256i*>(qh + static_cast<long>(g) * D + d));
      for (int t = 0; t < 8; ++t) {
        const __m256bh k = (__m256bh)_mm256_loadu_si256(reinterpret_cast<const __m256i*>(kc + rows[j + t] + d));
        for (int g = 0; g < G; ++g) p[g][t] = _mm256_dpbf16_ps(p[g][t], q[g], k);
      }
    }
    for (int g = 0; g < G; ++g)
      _mm256_storeu_ps(scores + static_cast<size_t>(g) * L + j,
                       _mm256_mul_ps(hsum8(p[g][0], p[g][1], p[g][2], p[g][3], p[g][4], p[g][5], p[g][6], p[g][7]),
                                     _mm256_set1_ps(scale)));
  }
}
#endif

// The G query heads sharing one KV head: rows (L,) each position's element offset in a head of the
// cache; scores (G, L) scratch; out (G, D) bf16.
void attend_one(int G, int D, int L, const uint16_t* qh, const uint16_t* kc, const uint16_t* vc,
                const int64_t* rows, float scale, float* scores, uint16_t* out) {
  int done = 0;  // keys whose scores are already in (all heads at once where G is small)
#if defined(__AVX512BF16__) && defined(__AVX512VL__)
  if (G <= 3) {
    done = L / 8 * 8;
    if (G == 1) scores_all_heads<1>(D, done, L, qh, kc, rows, scale, scores);
    if (G == 2) scores_all_heads<2>(D, done, L, qh, kc, rows, scale, scores);
    if (G == 3) scores_all_heads<3>(D, done, L, qh, kc, rows, scale, scores);
  }
#endif
  for (int g = 0; g < G; ++g) {
    const uint16_t* qg = qh + static_cast<long>(g) * D;
    float* sc = scores + static_cast<size_t>(g) * L;
    int j = done;
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
