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

// exp of 16 floats: exp8's (Cephes) range reduction and polynomial on 512-bit vectors.
inline __m512 exp16(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.3f));
  __m512 fx = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(0.693359375f), x);
  x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(-2.12194440e-4f), x);
  __m512 y = _mm512_set1_ps(1.9875691500e-4f);
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.3981999507e-3f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(8.3334519073e-3f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(4.1665795894e-2f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.6666665459e-1f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(5.0000001201e-1f));
  y = _mm512_fmadd_ps(y, _mm512_mul_ps(x, x), _mm512_add_ps(x, _mm512_set1_ps(1.0f)));
  __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(fx), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(y, _mm512_castsi512_ps(e));
}

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

// Scores (NR rows, 32 keys) += q rows . K tile; kp: the tile as (D/2 pairs, 32 keys) of bf16 pairs.
template <int NR>
inline void tile_scores(const uint32_t* const* qp, int pairs, const uint32_t* kp, float* s) {
  __m512 acc[NR][2];
  for (int i = 0; i < NR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int p = 0; p < pairs; ++p) {
    const __m512bh k0 = (__m512bh)_mm512_loadu_si512(kp + p * kKeyTile);
    const __m512bh k1 = (__m512bh)_mm512_loadu_si512(kp + p * kKeyTile + 16);
    for (int i = 0; i < NR; ++i) {
      const __m512bh qb = (__m512bh)_mm512_set1_epi32(static_cast<int>(qp[i][p]));
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], qb, k0);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], qb, k1);
    }
  }
  for (int i = 0; i < NR; ++i) {
    _mm512_storeu_ps(s + i * kKeyTile, acc[i][0]);
    _mm512_storeu_ps(s + i * kKeyTile + 16, acc[i][1]);
  }
}

// acc (NR rows of D) = acc * alpha + P (NR, nk) @ V tile (nk, D): bf16 products (P rounded to bf16, as
// torch's CPU flash attention does), float32 sums; pp: each row's P as 16 bf16 pairs, vp: the V tile as
// (16 key pairs, D) bf16 pairs; W 16-wide slices of D at a time.
template <int NR, int W>
inline void tile_pv(int D, int d0, int npairs, const uint32_t* pp, const float* alpha, const uint32_t* vp,
                    float* acc) {
  __m512 a[NR][W];
  for (int i = 0; i < NR; ++i)
    for (int w = 0; w < W; ++w)
      a[i][w] = _mm512_mul_ps(_mm512_loadu_ps(acc + i * D + d0 + 16 * w), _mm512_set1_ps(alpha[i]));
  for (int jp = 0; jp < npairs; ++jp) {
    __m512bh v[W];
    for (int w = 0; w < W; ++w) v[w] = (__m512bh)_mm512_loadu_si512(vp + jp * D + d0 + 16 * w);
    for (int i = 0; i < NR; ++i) {
      const __m512bh pb = (__m512bh)_mm512_set1_epi32(static_cast<int>(pp[i * (kKeyTile / 2) + jp]));
      for (int w = 0; w < W; ++w) a[i][w] = _mm512_dpbf16_ps(a[i][w], pb, v[w]);
    }
  }
  for (int i = 0; i < NR; ++i)
    for (int w = 0; w < W; ++w) _mm512_storeu_ps(acc + i * D + d0 + 16 * w, a[i][w]);
}

template <int NR>
inline void tile_pv_rows(int D, int npairs, const uint32_t* pp, const float* alpha, const uint32_t* vp,
                         float* acc) {
  int d0 = 0;
  for (; d0 + 64 <= D; d0 += 64) tile_pv<NR, 4>(D, d0, npairs, pp, alpha, vp, acc);
  for (; d0 < D; d0 += 16) tile_pv<NR, 1>(D, d0, npairs, pp, alpha, vp, acc);
}

// Online softmax of one row's tile: the first n_vis keys visible; P (32) -> pp as bf16 (16 pairs).
inline float tile_softmax(const float* s, int n_vis, float scale, float* m, float* l, uint32_t* pp) {
  const __mmask16 lo = n_vis >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << n_vis) - 1);
  const __mmask16 hi = n_vis >= 32 ? 0xFFFF : n_vis <= 16 ? 0 : static_cast<__mmask16>((1u << (n_vis - 16)) - 1);
  const __m512 s0 = _mm512_mul_ps(_mm512_loadu_ps(s), _mm512_set1_ps(scale));
  const __m512 s1 = _mm512_mul_ps(_mm512_loadu_ps(s + 16), _mm512_set1_ps(scale));
  const __m512 ninf = _mm512_set1_ps(-INFINITY);
  const float mx = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_mask_mov_ps(ninf, lo, s0), _mm512_mask_mov_ps(ninf, hi, s1)));
  const float mnew = mx > *m ? mx : *m;
  const float alpha = expf(*m - mnew);  // 0 on the first tile (m = -inf)
  const __m512 mv = _mm512_set1_ps(mnew);
  const __m512 p0 = _mm512_maskz_mov_ps(lo, exp16(_mm512_sub_ps(s0, mv)));
  const __m512 p1 = _mm512_maskz_mov_ps(hi, exp16(_mm512_sub_ps(s1, mv)));
  _mm512_storeu_si512(pp, (__m512i)_mm512_cvtne2ps_pbh(p1, p0));
  *l = *l * alpha + _mm512_reduce_add_ps(_mm512_add_ps(p0, p1));
  *m = mnew;
  return alpha;
}

// Pack keys [kb, kb + nk) of the KV head: K as bf16 pairs (D/2, 32 keys), V as (16 key pairs, D) bf16 pairs;
// the slots past nk zero (their P is 0, and 0 * garbage could be NaN).
inline void pack_tile(const ChunkItem& it, int kb, int nk, uint32_t* kp, uint32_t* vp) {
  const int D = it.D, pairs = D / 2;
  const uint16_t* vrow[kKeyTile];
  for (int i = 0; i < kKeyTile; ++i) {
    if (i >= nk) {
      for (int p = 0; p < pairs; ++p) kp[p * kKeyTile + i] = 0;
      vrow[i] = nullptr;
      continue;
    }
    const int pos = kb + i;
    const long row = (it.table[pos / it.block_size] * it.block_size + pos % it.block_size) * D;
    const uint32_t* kr = reinterpret_cast<const uint32_t*>(it.kc + row);
    for (int p = 0; p < pairs; ++p) kp[p * kKeyTile + i] = kr[p];
    vrow[i] = it.vc + row;
  }
  // element 2d of a pair vector from key 2jp's row, 2d + 1 from key 2jp + 1's (index | 32: the second source)
  alignas(64) uint16_t lo_idx[32], hi_idx[32];
  for (int e = 0; e < 32; ++e) {
    lo_idx[e] = static_cast<uint16_t>(e / 2 + (e % 2 ? 32 : 0));
    hi_idx[e] = static_cast<uint16_t>(16 + e / 2 + (e % 2 ? 32 : 0));
  }
  const __m512i lo = _mm512_load_si512(lo_idx), hi = _mm512_load_si512(hi_idx);
  for (int jp = 0; jp < kKeyTile / 2; ++jp) {
    const uint16_t* a = vrow[2 * jp];
    const uint16_t* b = vrow[2 * jp + 1];
    for (int d = 0; d < D; d += 32) {
      const __m512i va = a ? _mm512_loadu_si512(a + d) : _mm512_setzero_si512();
      const __m512i vb = b ? _mm512_loadu_si512(b + d) : _mm512_setzero_si512();
      _mm512_storeu_si512(vp + jp * D + d, _mm512_permutex2var_epi16(va, lo, vb));
      _mm512_storeu_si512(vp + jp * D + d + 16, _mm512_permutex2var_epi16(va, hi, vb));
    }
  }
}

// One item, rows r = (t - t0) * G + g. scratch: at least chunk_scratch_floats(R, D) floats.
inline size_t chunk_scratch_floats(int R, int D) {
  return static_cast<size_t>(D / 2) * kKeyTile + static_cast<size_t>(kKeyTile) * D + static_cast<size_t>(R) * kKeyTile
         + static_cast<size_t>(R) * D + 3 * static_cast<size_t>(R) + 2 * static_cast<size_t>(R)  // + qp (R pointers)
         + static_cast<size_t>(R) * (kKeyTile / 2);  // pp
}

void chunk_item(const ChunkItem& it, float* scratch) {
  const int G = it.G, D = it.D, R = (it.t1 - it.t0) * G;
  uint32_t* kp = reinterpret_cast<uint32_t*>(scratch);
  uint32_t* vp = kp + (D / 2) * kKeyTile;
  float* s = reinterpret_cast<float*>(vp + kKeyTile * D);
  float* acc = s + R * kKeyTile;
  float* m = acc + static_cast<size_t>(R) * D;
  float* l = m + R;
  float* alpha = l + R;
  const uint32_t** qp = reinterpret_cast<const uint32_t**>(alpha + R);
  uint32_t* pp = reinterpret_cast<uint32_t*>(qp + R);
  for (int r = 0; r < R; ++r) {
    const int t = it.t0 + r / G, g = r % G;
    qp[r] = reinterpret_cast<const uint32_t*>(it.q + t * it.q_stride + static_cast<long>(it.kvh * G + g) * D);
    m[r] = -INFINITY;
    l[r] = 0.0f;
  }
  for (size_t i = 0; i < static_cast<size_t>(R) * D; ++i) acc[i] = 0.0f;
  const int kend = it.start + it.t1;  // keys the block's last token sees
  for (int kb = 0; kb < kend; kb += kKeyTile) {
    const int nk = kend - kb < kKeyTile ? kend - kb : kKeyTile;
    pack_tile(it, kb, nk, kp, vp);
    int r = 0;
    for (; r + 8 <= R; r += 8) tile_scores<8>(qp + r, D / 2, kp, s + r * kKeyTile);
    for (; r + 4 <= R; r += 4) tile_scores<4>(qp + r, D / 2, kp, s + r * kKeyTile);
    for (; r < R; ++r) tile_scores<1>(qp + r, D / 2, kp, s + r * kKeyTile);
    for (r = 0; r < R; ++r) {
      int n_vis = it.start + it.t0 + r / G - kb + 1;  // keys up to the row's own position
      n_vis = n_vis > nk ? nk : n_vis;
      if (n_vis <= 0) {  // nothing visible in this tile: no change to the row
        for (int j = 0; j < kKeyTile / 2; ++j) pp[r * (kKeyTile / 2) + j] = 0;
        alpha[r] = 1.0f;
      } else {
        alpha[r] = tile_softmax(s + r * kKeyTile, n_vis, it.scale, m + r, l + r, pp + r * (kKeyTile / 2));
      }
    }
    const int npairs = (nk + 1) / 2;
    for (r = 0; r + 4 <= R; r += 4) tile_pv_rows<4>(D, npairs, pp + r * (kKeyTile / 2), alpha + r, vp, acc + r * D);
    for (; r < R; ++r) tile_pv_rows<1>(D, npairs, pp + r * (kKeyTile / 2), alpha + r, vp, acc + r * D);
  }
  for (int r = 0; r < R; ++r) {
    const int t = it.t0 + r / G, g = r % G;
    uint16_t* o = it.out + static_cast<long>(t) * it.H * D + static_cast<long>(it.kvh * G + g) * D;
    const __m512 inv = _mm512_set1_ps(1.0f / l[r]);
    for (int d = 0; d < D; d += 16) {
      alignas(64) float tmp[16];
      _mm512_store_ps(tmp, _mm512_mul_ps(_mm512_loadu_ps(acc + r * D + d), inv));
      for (int i = 0; i < 16; ++i) o[d + i] = f32_to_bf16(tmp[i]);
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
