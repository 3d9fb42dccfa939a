// Philox4x32-10 perturbations, bit-identical to fedft.core.rng.perturbation (see its docstring).
// rng_cpu.py fills in the constants below from fedft.core.rng before it compiles this file.
#include <cstdint>
#include <system_error>
#include <thread>
#include <vector>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FEDFT_X86 1
#endif

namespace {
constexpr uint32_t M0 = @M0@u, M1 = @M1@u, W0 = @W0@u, W1 = @W1@u;
constexpr float SCALE = @SCALE@f;  // exactly representable: float32 of the reference's scale
constexpr int32_t SHIFT = @SHIFT@;
constexpr int BLOCK = 32;  // offsets per block: four AVX2 vectors in flight hide multiply latency
constexpr int64_t MIN_PER_THREAD = 1 << 16;  // below this a thread costs more than it saves

using Fill = void (*)(uint64_t, uint64_t, float*, int64_t);

// z of one element from its four words; shared by both paths so the mapping exists only once.
template <int KIND>
inline float emit(uint32_t w0, uint32_t w1, uint32_t w2, uint32_t w3) {
  if (KIND == 1) return (w0 & 1u) ? -1.0f : 1.0f;
  const int32_t s = (int32_t)((w0 & 0xFFFFu) + (w0 >> 16) + (w1 & 0xFFFFu) + (w1 >> 16) +
                              (w2 & 0xFFFFu) + (w2 >> 16) + (w3 & 0xFFFFu) + (w3 >> 16));
  return (float)(2 * s - SHIFT) * SCALE;  // |v| < 2**24: the conversion is exact
}

// Plain C++ written so that the compiler auto-vectorises the lane loops on any architecture.
template <int KIND>
void fill_portable(uint64_t seed, uint64_t first, float* __restrict out, int64_t n) {
  const uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
  uint32_t c0[BLOCK], c1[BLOCK], c2[BLOCK], c3[BLOCK];
  float z[BLOCK];
  for (int64_t base = 0; base < n; base += BLOCK) {
    const uint64_t start = first + (uint64_t)base;
    // Per-lane 64-bit counters: a block may straddle a 2**32 boundary, where the high word steps.
    for (int j = 0; j < BLOCK; ++j) {
      const uint64_t ctr = start + (uint64_t)j;
      c0[j] = (uint32_t)ctr;
      c1[j] = (uint32_t)(ctr >> 32);
      c2[j] = 0;
      c3[j] = 0;
    }
    uint32_t a = k0, b = k1;
    for (int r = 0; r < 10; ++r) {
      for (int j = 0; j < BLOCK; ++j) {
        const uint64_t p0 = (uint64_t)M0 * c0[j], p1 = (uint64_t)M1 * c2[j];
        const uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1[j] ^ a;
        const uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3[j] ^ b;
        c1[j] = (uint32_t)p1;
        c3[j] = (uint32_t)p0;
        c0[j] = n0;
        c2[j] = n2;
      }
      a += W0;
      b += W1;
    }
    for (int j = 0; j < BLOCK; ++j) z[j] = emit<KIND>(c0[j], c1[j], c2[j], c3[j]);
    const int m = (n - base < BLOCK) ? (int)(n - base) : BLOCK;
    for (int j = 0; j < m; ++j) out[base + j] = z[j];
  }
}

#ifdef FEDFT_X86
// 32x32->64 multiply of eight lanes: mul_epu32 only reads the even lanes, so the odd lanes are
// shifted down and multiplied separately, then the halves are blended back into lane order.
__attribute__((target("avx2"))) inline void mulhilo(__m256i x, __m256i m, __m256i& hi,
                                                     __m256i& lo) {
  const __m256i even = _mm256_mul_epu32(x, m);
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(x, 32), m);
  hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
  lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}

template <int KIND>
__attribute__((target("avx2"))) void fill_avx2(uint64_t seed, uint64_t first,
                                               float* __restrict out, int64_t n) {
  constexpr int V = BLOCK / 8;
  const __m256i m0 = _mm256_set1_epi32((int)M0), m1 = _mm256_set1_epi32((int)M1);
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i low16 = _mm256_set1_epi32(0xFFFF);
  alignas(32) uint32_t lo[BLOCK], hi[BLOCK];
  alignas(32) float z[BLOCK];
  for (int64_t base = 0; base < n; base += BLOCK) {
    const uint64_t start = first + (uint64_t)base;
    const uint32_t start_lo = (uint32_t)start;
    __m256i c0[V], c1[V], c2[V], c3[V];
    if (start_lo <= 0xFFFFFFFFu - (BLOCK - 1)) {
      // Common case: the high word is the same for the whole block.
      for (int v = 0; v < V; ++v) {
        c0[v] = _mm256_add_epi32(_mm256_set1_epi32((int)(start_lo + 8u * v)), iota);
        c1[v] = _mm256_set1_epi32((int)(uint32_t)(start >> 32));
      }
    } else {
      // The block straddles a 2**32 boundary: build the counters lane by lane.
      for (int j = 0; j < BLOCK; ++j) {
        const uint64_t ctr = start + (uint64_t)j;
        lo[j] = (uint32_t)ctr;
        hi[j] = (uint32_t)(ctr >> 32);
      }
      for (int v = 0; v < V; ++v) {
        c0[v] = _mm256_load_si256((const __m256i*)(lo + 8 * v));
        c1[v] = _mm256_load_si256((const __m256i*)(hi + 8 * v));
      }
    }
    for (int v = 0; v < V; ++v) c2[v] = c3[v] = _mm256_setzero_si256();
    uint32_t a = (uint32_t)seed, b = (uint32_t)(seed >> 32);
    for (int r = 0; r < 10; ++r) {
      const __m256i ka = _mm256_set1_epi32((int)a), kb = _mm256_set1_epi32((int)b);
      for (int v = 0; v < V; ++v) {
        __m256i h0, l0, h1, l1;
        mulhilo(c2[v], m1, h1, l1);
        const __m256i n0 = _mm256_xor_si256(_mm256_xor_si256(h1, c1[v]), ka);
        // Rademacher reads only w0, which the last round gets from the M1 product alone.
        if (KIND == 1 && r == 9) {
          c0[v] = n0;
          continue;
        }
        mulhilo(c0[v], m0, h0, l0);
        c2[v] = _mm256_xor_si256(_mm256_xor_si256(h0, c3[v]), kb);
        c0[v] = n0;
        c1[v] = l1;
        c3[v] = l0;
      }
      a += W0;
      b += W1;
    }
    for (int v = 0; v < V; ++v) {
      __m256 r;
      if (KIND == 1) {
        // Bit 0 of w0 becomes the sign bit of 1.0f: +1.0 for 0, -1.0 for 1.
        const __m256i sign = _mm256_slli_epi32(c0[v], 31);
        r = _mm256_castsi256_ps(_mm256_or_si256(sign, _mm256_set1_epi32(0x3F800000)));
      } else {
        __m256i s = _mm256_add_epi32(_mm256_and_si256(c0[v], low16), _mm256_srli_epi32(c0[v], 16));
        s = _mm256_add_epi32(s, _mm256_and_si256(c1[v], low16));
        s = _mm256_add_epi32(s, _mm256_srli_epi32(c1[v], 16));
        s = _mm256_add_epi32(s, _mm256_and_si256(c2[v], low16));
        s = _mm256_add_epi32(s, _mm256_srli_epi32(c2[v], 16));
        s = _mm256_add_epi32(s, _mm256_and_si256(c3[v], low16));
        s = _mm256_add_epi32(s, _mm256_srli_epi32(c3[v], 16));
        s = _mm256_sub_epi32(_mm256_add_epi32(s, s), _mm256_set1_epi32(SHIFT));
        r = _mm256_mul_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(SCALE));
      }
      if (n - base >= BLOCK) {
        _mm256_storeu_ps(out + base + 8 * v, r);
      } else {
        _mm256_store_ps(z + 8 * v, r);
      }
    }
    if (n - base < BLOCK) {
      for (int j = 0; j < (int)(n - base); ++j) out[base + j] = z[j];
    }
  }
}
#endif

bool has_avx2() {
#ifdef FEDFT_X86
  __builtin_cpu_init();  // idempotent; makes the check safe however early the library is loaded
  return __builtin_cpu_supports("avx2");
#else
  return false;
#endif
}

Fill pick(int kind, bool portable) {
#ifdef FEDFT_X86
  if (!portable && has_avx2()) return kind == 1 ? fill_avx2<1> : fill_avx2<0>;
#endif
  return kind == 1 ? fill_portable<1> : fill_portable<0>;
}
}  // namespace

// 1 when the AVX2 path runs on this CPU, 0 for the portable path.
extern "C" int fedft_rng_isa() { return has_avx2() ? 1 : 0; }

// Fills out[0..n) for offsets offset..offset+n-1, splitting the range into contiguous slices.
extern "C" void fedft_rng_fill(uint64_t seed, uint64_t offset, float* out, int64_t n, int kind,
                               int threads, int portable) {
  const Fill fill = pick(kind, portable != 0);
  const int64_t most = n / MIN_PER_THREAD;
  const int64_t count = threads < 1 ? 1 : (threads < most ? threads : (most < 1 ? 1 : most));
  // Slices are whole blocks, so only the last one ends in a partial block.
  const int64_t per = ((n + count - 1) / count + BLOCK - 1) / BLOCK * BLOCK;
  std::vector<std::thread> pool;
  for (int64_t start = per; start < n; start += per) {
    const int64_t len = (n - start < per) ? n - start : per;
    try {
      pool.emplace_back(fill, seed, offset + (uint64_t)start, out + start, len);
    } catch (const std::system_error&) {
      fill(seed, offset + (uint64_t)start, out + start, len);  // no thread to be had: do it here
    }
  }
  fill(seed, offset, out, n < per ? n : per);
  for (std::thread& t : pool) t.join();
}
