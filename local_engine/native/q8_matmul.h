// 8-bit activations against the 4-bit codes (llama.cpp's method): each input row quantized once per matmul
// to int8 in blocks of 32 (one float32 scale d each), then integer dot products with the codes —
// vpdpbusd (AVX512-VNNI) where the CPU has it, maddubs + madd (AVX2) elsewhere. Both paths compute the same
// int32 partial sums into the same float32 lanes in the same order, so their results are bit-equal.
//
// Per group g of one output: sum_j w_j x_j ~ s d sum_j (q_j - 8) a_j + z d sum_j a_j, with x_j ~ d a_j:
// exactly the dot product of the effective weights with the dequantized row (d a_j), in float32.
#pragma once
#include <stdint.h>
#include <stdlib.h>

#include "simd.h"

#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512F__)
#define HG_Q8_VNNI 1
#else
#define HG_Q8_VNNI 0
#endif

namespace {

// One row quantized, in the layout the dot product reads; groups padded with zeros to a multiple of 16.
// Chunk c (groups 4c..4c+3): qa[128c..] = the four groups' elements 0..15, then their elements 16..31
// (the low / high nibbles of their 64 code bytes); lane l = 4i + j of a chunk (group 4c + i, elements
// 4j..4j+3 and 16+4j..16+4j+3 — one int32 lane of the dot product): init = -8 * their sum, dexp = d.
struct Q8Row {
  int8_t* qa;  // (Gp * 32)
  int32_t* init;  // (Gp * 4)
  float* dexp;  // (Gp * 4)
  float* xsum;  // (Gp): d * sum of the group's a, the zero term's input
};

inline int q8_padded_groups(int K) { return (K / 32 + 15) / 16 * 16; }

inline size_t q8_row_bytes(int K) {
  const size_t gp = static_cast<size_t>(q8_padded_groups(K));
  return gp * 32 + gp * 4 * sizeof(int32_t) + gp * 4 * sizeof(float) + gp * sizeof(float);
}

inline Q8Row q8_row(char* base, int K, int r) {
  const size_t gp = static_cast<size_t>(q8_padded_groups(K));
  char* p = base + static_cast<size_t>(r) * q8_row_bytes(K);
  Q8Row row;
  row.init = reinterpret_cast<int32_t*>(p);
  row.dexp = reinterpret_cast<float*>(p + gp * 4 * sizeof(int32_t));
  row.xsum = row.dexp + gp * 4;
  row.qa = reinterpret_cast<int8_t*>(row.xsum + gp);
  return row;
}

// x (K,) float32 -> a = round_half_even(x * (1 / d)), d = max|x| / 127 per group (d = 0: all zero).
inline void q8_quantize_row(const float* x, int K, Q8Row row) {
  const int G = K / 32, gp = q8_padded_groups(K);
  memset(row.init, 0, q8_row_bytes(K));  // the four arrays are contiguous: padding groups stay zero
  for (int g = 0; g < G; ++g) {
    const float* xg = x + g * 32;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_andnot_ps(sign, _mm256_loadu_ps(xg));
    for (int j = 8; j < 32; j += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(xg + j)));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    const float amax = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    int8_t a[32];
    int sum = 0;
    for (int j = 0; j < 32; ++j) {
      float v = nearbyintf(xg[j] * id);  // the default rounding: to nearest, ties to even
      v = v > 127.0f ? 127.0f : (v < -127.0f ? -127.0f : v);
      a[j] = static_cast<int8_t>(v);
      sum += a[j];
    }
    const int c = g / 4, i = g % 4;
    int8_t* chunk = row.qa + 128 * c;
    memcpy(chunk + 16 * i, a, 16);
    memcpy(chunk + 64 + 16 * i, a + 16, 16);
    for (int j = 0; j < 4; ++j) {
      int lane = 0;
      for (int e = 0; e < 4; ++e) lane += a[4 * j + e] + a[16 + 4 * j + e];
      row.init[16 * c + 4 * i + j] = -8 * lane;
      row.dexp[16 * c + 4 * i + j] = d;
    }
    row.xsum[g] = d * static_cast<float>(sum);
  }
  (void)gp;
}

#if HG_Q8_VNNI
inline __m512i q8_lanes(__m512i init, __m512i w, const int8_t* a) {  // init + sum q a per int32 lane
  const __m512i low4 = _mm512_set1_epi8(0x0f);
  const __m512i lo = _mm512_and_si512(w, low4), hi = _mm512_and_si512(_mm512_srli_epi16(w, 4), low4);
  __m512i i = _mm512_dpbusd_epi32(init, lo, _mm512_loadu_si512(a));
  return _mm512_dpbusd_epi32(i, hi, _mm512_loadu_si512(a + 64));
}
#else
inline __m256i q8_lanes_half(__m256i init, __m256i w, const int8_t* a) {  // one half of a chunk: 8 lanes
  const __m256i low4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
  const __m256i lo = _mm256_and_si256(w, low4), hi = _mm256_and_si256(_mm256_srli_epi16(w, 4), low4);
  // u8 (0..15) x s8 (-127..127) pairs: at most 3810, no int16 saturation; then exact int32 sums of four
  const __m256i plo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a))), ones);
  const __m256i phi = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + 64))), ones);
  return _mm256_add_epi32(init, _mm256_add_epi32(plo, phi));
}

inline __m256i q8_mask(int dwords) {  // the first `dwords` (0..8) 32-bit lanes set
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(dwords), idx);
}
#endif

// One output for R rows. acc: per-lane float32 sums of (s d) * lane over a block's four chunks, then
// z * xsum of its 16 groups (lane = group); reduced as (lanes 0-7) + (lanes 8-15), then 8-lane sums.
#if HG_Q8_VNNI
template <int R, bool kFull>
__attribute__((always_inline)) inline void q8_block(const uint8_t* codes, const uint16_t* sz, const Q8Row* rows,
                                                    int G, int b, __m512* acc) {
  const int nb = kFull ? 16 : G - b;
  const __m512i p = kFull ? _mm512_loadu_si512(sz + 2 * b)
                          : _mm512_maskz_loadu_epi32(static_cast<__mmask16>((1u << nb) - 1u), sz + 2 * b);
  const __m512 s16 = _mm512_castsi512_ps(_mm512_slli_epi32(p, 16));
  const __m512 z16 = _mm512_castsi512_ps(_mm512_and_si512(p, _mm512_set1_epi32(static_cast<int>(0xffff0000u))));
  const __m512i sel0 = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
  for (int c = 0; c < (kFull ? 4 : (nb + 3) / 4); ++c) {
    const int g = b + 4 * c, ng = G - g < 4 ? G - g : 4;
    const __m512i w = kFull || ng == 4
        ? _mm512_loadu_si512(codes + 16 * g)
        : _mm512_maskz_loadu_epi32(static_cast<__mmask16>((1u << (4 * ng)) - 1u), codes + 16 * g);
    const __m512 sx = _mm512_permutexvar_ps(_mm512_add_epi32(sel0, _mm512_set1_epi32(4 * c)), s16);
    for (int r = 0; r < R; ++r) {
      const __m512i lanes = q8_lanes(_mm512_loadu_si512(rows[r].init + 4 * g), w, rows[r].qa + 32 * g);
      const __m512 sd = _mm512_mul_ps(sx, _mm512_loadu_ps(rows[r].dexp + 4 * g));
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(lanes), sd, acc[r]);
    }
  }
  for (int r = 0; r < R; ++r) acc[r] = _mm512_fmadd_ps(z16, _mm512_loadu_ps(rows[r].xsum + b), acc[r]);
}

template <int R>
inline void dot_rows_q8(const uint8_t* codes, const uint16_t* sz, const Q8Row* rows, int K, float* acc_out) {
  const int G = K / 32;
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  int b = 0;
  for (; b + 16 <= G; b += 16) q8_block<R, true>(codes, sz, rows, G, b, acc);
  if (b < G) q8_block<R, false>(codes, sz, rows, G, b, acc);
  for (int r = 0; r < R; ++r)
    acc_out[r] = hsum(_mm256_add_ps(_mm512_castps512_ps256(acc[r]), _mm512_extractf32x8_ps(acc[r], 1)));
}
#else
template <int R, bool kFull>
__attribute__((always_inline)) inline void q8_block(const uint8_t* codes, const uint16_t* sz, const Q8Row* rows,
                                                    int G, int b, __m256 (*acc)[2]) {
  const int nb = kFull ? 16 : G - b;
  const __m256i hi16 = _mm256_set1_epi32(static_cast<int>(0xffff0000u));
  __m256 s8[2], z8[2];
  for (int h = 0; h < 2; ++h) {  // groups b + 8h .. b + 8h + 7
    const int n = nb - 8 * h < 0 ? 0 : (nb - 8 * h > 8 ? 8 : nb - 8 * h);
    const int* src = reinterpret_cast<const int*>(sz + 2 * (b + 8 * h));
    const __m256i p = kFull ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src))
                            : _mm256_maskload_epi32(src, q8_mask(n));
    s8[h] = _mm256_castsi256_ps(_mm256_slli_epi32(p, 16));
    z8[h] = _mm256_castsi256_ps(_mm256_and_si256(p, hi16));
  }
  for (int c = 0; c < (kFull ? 4 : (nb + 3) / 4); ++c) {
    const int g = b + 4 * c;
    for (int h = 0; h < 2; ++h) {  // lanes 8h..8h+7 of the chunk: groups g + 2h, g + 2h + 1
      const int ng = G - g - 2 * h < 0 ? 0 : (G - g - 2 * h > 2 ? 2 : G - g - 2 * h);
      const uint8_t* cp = codes + 16 * (g + 2 * h);
      const __m256i w = kFull || ng == 2 ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cp))
                                         : _mm256_maskload_epi32(reinterpret_cast<const int*>(cp), q8_mask(4 * ng));
      const int k = 4 * c + 2 * h;  // the chunk half's first group within the block of 16
      const __m256i sel = _mm256_add_epi32(_mm256_set1_epi32(k % 8), _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1));
      const __m256 sx = _mm256_permutevar8x32_ps(s8[k / 8], sel);
      for (int r = 0; r < R; ++r) {
        const __m256i init = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[r].init + 4 * g + 8 * h));
        const __m256i lanes = q8_lanes_half(init, w, rows[r].qa + 32 * g + 32 * h);
        const __m256 sd = _mm256_mul_ps(sx, _mm256_loadu_ps(rows[r].dexp + 4 * g + 8 * h));
        acc[r][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lanes), sd, acc[r][h]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int h = 0; h < 2; ++h) acc[r][h] = _mm256_fmadd_ps(z8[h], _mm256_loadu_ps(rows[r].xsum + b + 8 * h), acc[r][h]);
}

template <int R>
inline void dot_rows_q8(const uint8_t* codes, const uint16_t* sz, const Q8Row* rows, int K, float* acc_out) {
  const int G = K / 32;
  __m256 acc[R][2];
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  int b = 0;
  for (; b + 16 <= G; b += 16) q8_block<R, true>(codes, sz, rows, G, b, acc);
  if (b < G) q8_block<R, false>(codes, sz, rows, G, b, acc);
  for (int r = 0; r < R; ++r) acc_out[r] = hsum(_mm256_add_ps(acc[r][0], acc[r][1]));
}
#endif

}  // namespace
