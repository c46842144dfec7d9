// Causal attention of prefill chunks over the paged bf16 KV cache, read in place, flash-attention style:
// each (sequence, KV head, block of query tokens) walks its keys in tiles of 32, scores by bf16 dot products
// (vdpbf16ps, float32 sums), an online softmax and the weighted sum of V in float32, one rounding at the end.
#pragma once
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include <atomic>

#include "parallel.h"
#include "simd.h"

namespace {

#if defined(__AVX512F__) && defined(__AVX512BF16__)
#define HG_CHUNK_ATTENTION 1
constexpr int kKeyTile = 32;  // keys per tile: two 16-lane vectors of scores per query row
constexpr int kMaxChunkD = 256;

// One work item: query tokens [t0, t1) of a chunk against one KV head.
struct ChunkItem {
  int H, G, D, block_size, start, t0, t1, kvh;
  const uint16_t* q;  // the chunk's first token row; head h at h * D
  long q_stride;
  const uint16_t* kc;  // this KV head's K and V: (num_blocks * block_size, D)
  const uint16_t* vc;
  const int64_t* table;
  float scale;
  uint16_t* out;  // the chunk's first output row (H * D elements a row)
};

// Layout: the item's query rows r = (t - t0) * G + g in groups of 16, one row per vector lane, so the
// online softmax is lane-wise (no horizontal reductions) and K is read by 32-bit broadcasts straight from
// the cache rows (no packing). Per group: qt (D/2 pairs, 16) q as bf16 pairs; acc (D, 16) float32.
constexpr int kLanes = 16;
alignas(64) const uint16_t kZeroRow[kMaxChunkD] = {};

// Scores s (RG groups, 32 keys, 16) of 32 keys (rows kr) against RG groups' q; KJ keys at a time.
template <int RG>
inline void group_scores(const uint32_t* qt, int pairs, const uint32_t* const* kr, float* s) {
  constexpr int KJ = 8;
  for (int j0 = 0; j0 < kKeyTile; j0 += KJ) {
    __m512 acc[RG][KJ];
    for (int i = 0; i < RG; ++i)
      for (int j = 0; j < KJ; ++j) acc[i][j] = _mm512_setzero_ps();
    for (int p = 0; p < pairs; ++p) {
      __m512bh q[RG];
      for (int i = 0; i < RG; ++i) q[i] = (__m512bh)_mm512_loadu_si512(qt + (static_cast<long>(i) * pairs + p) * kLanes);
      for (int j = 0; j < KJ; ++j) {
        const __m512bh k = (__m512bh)_mm512_set1_epi32(static_cast<int>(kr[j0 + j][p]));
        for (int i = 0; i < RG; ++i) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], q[i], k);
      }
    }
    for (int i = 0; i < RG; ++i)
      for (int j = 0; j < KJ; ++j) _mm512_storeu_ps(s + (i * kKeyTile + j0 + j) * kLanes, acc[i][j]);
  }
}

// One group's online softmax over a tile: s (32, 16) scores -> pp (16 key pairs, 16) bf16 pairs of P (0 where
// hidden); limit: each lane's last visible key position; m, l, alpha (16) updated / set.
inline void group_softmax(const float* s, int kb, int nk, __m512i limit, float scale, float* m, float* l, float* alpha,
                          uint32_t* pp) {
  const __m512 ninf = _mm512_set1_ps(-INFINITY);
  __mmask16 vis[kKeyTile];
  __m512 mx = ninf;
  for (int j = 0; j < kKeyTile; ++j) {
    vis[j] = j < nk ? _mm512_cmpge_epi32_mask(limit, _mm512_set1_epi32(kb + j)) : 0;
    mx = _mm512_mask_max_ps(mx, vis[j], mx, _mm512_loadu_ps(s + j * kLanes));
  }
  const __m512 sc = _mm512_set1_ps(scale), m_old = _mm512_loadu_ps(m);
  const __m512 m_new = _mm512_max_ps(m_old, _mm512_mul_ps(mx, sc));  // scale > 0: max commutes with it
  // lanes still at -inf (nothing visible yet) keep alpha 0 and P 0
  const __m512 a = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(m_old, ninf, _CMP_NEQ_OQ), exp16(_mm512_sub_ps(m_old, m_new)));
  __m512 sum = _mm512_setzero_ps();
  alignas(64) static const uint16_t kInterleave[32] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
                                                       8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const __m512i inter = _mm512_load_si512(kInterleave);
  for (int j = 0; j < kKeyTile; j += 2) {
    const __m512 p0 = _mm512_maskz_mov_ps(vis[j], exp16(_mm512_fmsub_ps(_mm512_loadu_ps(s + j * kLanes), sc, m_new)));
    const __m512 p1 = _mm512_maskz_mov_ps(vis[j + 1],
                                          exp16(_mm512_fmsub_ps(_mm512_loadu_ps(s + (j + 1) * kLanes), sc, m_new)));
    sum = _mm512_add_ps(sum, _mm512_add_ps(p0, p1));
    _mm512_storeu_si512(pp + (j / 2) * kLanes,
                        _mm512_permutexvar_epi16(inter, (__m512i)_mm512_cvtne2ps_pbh(p1, p0)));
  }
  _mm512_storeu_ps(l, _mm512_fmadd_ps(_mm512_loadu_ps(l), a, sum));
  _mm512_storeu_ps(m, m_new);
  _mm512_storeu_ps(alpha, a);
}

// acc (RG groups, D, 16) = acc * alpha + P @ V for DC values of d at a time: pp (RG, 16 key pairs, 16),
// vp (16 key pairs, D) V as bf16 pairs, broadcast per d.
template <int RG>
inline void group_pv(int D, const uint32_t* pp, const float* alpha, const uint32_t* vp, float* acc) {
  constexpr int DC = 8;
  for (int d0 = 0; d0 < D; d0 += DC) {
    __m512 a[RG][DC];
    for (int i = 0; i < RG; ++i) {
      const __m512 al = _mm512_loadu_ps(alpha + i * kLanes);
      for (int d = 0; d < DC; ++d)
        a[i][d] = _mm512_mul_ps(_mm512_loadu_ps(acc + (static_cast<long>(i) * D + d0 + d) * kLanes), al);
    }
    for (int jp = 0; jp < kKeyTile / 2; ++jp) {
      __m512bh p[RG];
      for (int i = 0; i < RG; ++i) p[i] = (__m512bh)_mm512_loadu_si512(pp + (i * (kKeyTile / 2) + jp) * kLanes);
      for (int d = 0; d < DC; ++d) {
        const __m512bh v = (__m512bh)_mm512_set1_epi32(static_cast<int>(vp[jp * D + d0 + d]));
        for (int i = 0; i < RG; ++i) a[i][d] = _mm512_dpbf16_ps(a[i][d], p[i], v);
      }
    }
    for (int i = 0; i < RG; ++i)
      for (int d = 0; d < DC; ++d) _mm512_storeu_ps(acc + (static_cast<long>(i) * D + d0 + d) * kLanes, a[i][d]);
  }
}

// V rows of a tile as (16 key pairs, D) bf16 pairs: element 2d from key 2jp, 2d + 1 from key 2jp + 1.
inline void pack_v(const uint16_t* const* vrow, int D, uint32_t* vp) {
  alignas(64) static const uint16_t kLo[32] = {0, 32, 1, 33, 2, 34, 3, 35, 4, 36, 5, 37, 6, 38, 7, 39,
                                               8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
  const __m512i lo = _mm512_load_si512(kLo), hi = _mm512_add_epi16(lo, _mm512_set1_epi16(16));
  for (int jp = 0; jp < kKeyTile / 2; ++jp)
    for (int d = 0; d < D; d += 32) {
      const __m512i va = _mm512_loadu_si512(vrow[2 * jp] + d), vb = _mm512_loadu_si512(vrow[2 * jp + 1] + d);
      _mm512_storeu_si512(vp + jp * D + d, _mm512_permutex2var_epi16(va, lo, vb));
      _mm512_storeu_si512(vp + jp * D + d + 16, _mm512_permutex2var_epi16(va, hi, vb));
    }
}

template <class F>
inline void by_groups(int ng, F&& f) {  // f(first group, count) in runs of 3 groups (24 accumulators)
  int g = 0;
  for (; g + 3 <= ng; g += 3) f(g, 3);
  if (ng - g == 2) f(g, 2);
  if (ng - g == 1) f(g, 1);
}

inline size_t chunk_scratch_floats(int R, int D) {
  const size_t ng = (R + kLanes - 1) / kLanes;
  return ng * kLanes * (D / 2 + kKeyTile + kKeyTile / 2 + D + 3) + static_cast<size_t>(kKeyTile / 2) * D;
}

void chunk_item(const ChunkItem& it, float* scratch) {
  const int G = it.G, D = it.D, R = (it.t1 - it.t0) * G, ng = (R + kLanes - 1) / kLanes, pairs = D / 2;
  uint32_t* qt = reinterpret_cast<uint32_t*>(scratch);  // (ng, pairs, 16)
  float* s = reinterpret_cast<float*>(qt + static_cast<size_t>(ng) * pairs * kLanes);  // (ng, 32, 16)
  uint32_t* pp = reinterpret_cast<uint32_t*>(s + ng * kKeyTile * kLanes);  // (ng, 16, 16)
  float* acc = reinterpret_cast<float*>(pp + ng * (kKeyTile / 2) * kLanes);  // (ng, D, 16)
  float* m = acc + static_cast<size_t>(ng) * D * kLanes;
  float* l = m + ng * kLanes;
  float* alpha = l + ng * kLanes;
  uint32_t* vp = reinterpret_cast<uint32_t*>(alpha + ng * kLanes);  // (16, D)
  alignas(64) int32_t lim[kLanes];
  for (int r = 0; r < ng * kLanes; ++r) {
    const int rr = r < R ? r : R - 1;  // padding lanes repeat the last row (never written out)
    const uint32_t* qr = reinterpret_cast<const uint32_t*>(it.q + (it.t0 + rr / G) * it.q_stride
                                                           + static_cast<long>(it.kvh * G + rr % G) * D);
    for (int p = 0; p < pairs; ++p) qt[(static_cast<size_t>(r / kLanes) * pairs + p) * kLanes + r % kLanes] = qr[p];
    m[r] = -INFINITY;
    l[r] = 0.0f;
  }
  for (size_t i = 0; i < static_cast<size_t>(ng) * D * kLanes; ++i) acc[i] = 0.0f;
  const int kend = it.start + it.t1;  // keys the block's last token sees
  const uint32_t* kr[kKeyTile];
  const uint16_t* vr[kKeyTile];
  for (int kb = 0; kb < kend; kb += kKeyTile) {
    const int nk = kend - kb < kKeyTile ? kend - kb : kKeyTile;
    for (int j = 0; j < kKeyTile; ++j) {
      const int pos = kb + j;
      const long row = (it.table[pos / it.block_size] * it.block_size + pos % it.block_size) * D;
      kr[j] = reinterpret_cast<const uint32_t*>(j < nk ? it.kc + row : kZeroRow);
      vr[j] = j < nk ? it.vc + row : kZeroRow;
    }
    pack_v(vr, D, vp);
    by_groups(ng, [&](int g, int n) {
      const uint32_t* q = qt + static_cast<size_t>(g) * pairs * kLanes;
      float* sg = s + g * kKeyTile * kLanes;
      if (n == 3) group_scores<3>(q, pairs, kr, sg);
      if (n == 2) group_scores<2>(q, pairs, kr, sg);
      if (n == 1) group_scores<1>(q, pairs, kr, sg);
    });
    for (int g = 0; g < ng; ++g) {
      for (int i = 0; i < kLanes; ++i) {
        const int r = g * kLanes + i < R ? g * kLanes + i : R - 1;
        lim[i] = it.start + it.t0 + r / G;
      }
      group_softmax(s + g * kKeyTile * kLanes, kb, nk, _mm512_load_si512(lim), it.scale, m + g * kLanes,
                    l + g * kLanes, alpha + g * kLanes, pp + g * (kKeyTile / 2) * kLanes);
    }
    by_groups(ng, [&](int g, int n) {
      const uint32_t* pg = pp + g * (kKeyTile / 2) * kLanes;
      float* ag = acc + static_cast<size_t>(g) * D * kLanes;
      if (n == 3) group_pv<3>(D, pg, alpha + g * kLanes, vp, ag);
      if (n == 2) group_pv<2>(D, pg, alpha + g * kLanes, vp, ag);
      if (n == 1) group_pv<1>(D, pg, alpha + g * kLanes, vp, ag);
    });
  }
  alignas(64) float tmp[kLanes];
  for (int g = 0; g < ng; ++g) {
    const __m512 inv = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_loadu_ps(l + g * kLanes));
    for (int d = 0; d < D; ++d) {
      _mm512_store_ps(tmp, _mm512_mul_ps(_mm512_loadu_ps(acc + (static_cast<size_t>(g) * D + d) * kLanes), inv));
      for (int i = 0; i < kLanes && g * kLanes + i < R; ++i) {
        const int r = g * kLanes + i;
        it.out[static_cast<long>(it.t0 + r / G) * it.H * D + static_cast<long>(it.kvh * G + r % G) * D + d] =
            f32_to_bf16(tmp[i]);
      }
    }
  }
}

// B sequences' chunks: query_lens[b] packed rows of q per sequence (q_stride elements apart, head h at
// h * D), starting at position starts[b]; its K/V (already stored) at its block table's slots. out (T, H, D).
// Items (KV head x block of query tokens) split over threads. Returns 0, or -1 (shapes, memory).
int chunk_attention(int B, int H, int KVH, int D, const uint16_t* q, long q_stride, const int32_t* starts,
                    const int32_t* query_lens, const uint16_t* cache, long num_blocks, int block_size,
                    const int64_t* block_tables, int max_blocks, float scale, uint16_t* out, int nthreads) {
  if (D % 32 != 0 || D > kMaxChunkD || KVH <= 0 || H % KVH != 0 || B <= 0) return -1;
  const int G = H / KVH;
  int mq = 96 / G > 1 ? 96 / G : 1;  // query tokens per item: ~96 rows, the accumulators stay in L1/L2
  auto count = [&](int block) {
    long n = 0;
    for (int b = 0; b < B; ++b) n += (query_lens[b] + block - 1) / block;
    return n * KVH;
  };
  while (mq > 4 && count(mq) < 2L * nthreads) mq /= 2;  // enough items for every thread
  const long per_kvh = count(mq) / KVH;
  int* items = static_cast<int*>(malloc(sizeof(int) * 3 * (per_kvh + 1)));  // (sequence, t0, first row)
  if (items == nullptr) return -1;
  long n = 0;
  for (int b = 0, row = 0; b < B; row += query_lens[b], ++b)
    for (int t0 = 0; t0 < query_lens[b]; t0 += mq, ++n) {
      items[3 * n] = b;
      items[3 * n + 1] = t0;
      items[3 * n + 2] = row;
    }
  const long head_stride = num_blocks * block_size * static_cast<long>(D);
  const size_t scratch_floats = chunk_scratch_floats(mq * G, D);
  std::atomic<int> failed{0};
  parallel_chunks(static_cast<int>(per_kvh * KVH), nthreads, [&](int i) {
    const int* item = items + 3L * (i / KVH);
    const int b = item[0], kvh = i % KVH;
    float* scratch = static_cast<float*>(aligned_alloc(64, (sizeof(float) * scratch_floats + 63) / 64 * 64));
    if (scratch == nullptr) {
      failed.store(1);
      return;
    }
    ChunkItem it{H, G, D, block_size, starts[b], item[1],
                 item[1] + mq < query_lens[b] ? item[1] + mq : query_lens[b], kvh,
                 q + item[2] * q_stride, q_stride, cache + kvh * head_stride, cache + (KVH + kvh) * head_stride,
                 block_tables + static_cast<long>(b) * max_blocks, scale, out + static_cast<long>(item[2]) * H * D};
    chunk_item(it, scratch);
    free(scratch);
  });
  free(items);
  return failed.load() ? -1 : 0;
}
#endif

}  // namespace
