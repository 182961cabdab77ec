// Mogami GEMMs: every product is the integer add of fp32 bit patterns,
//   a (x) b = bits(a) + bits(b) - 0x3F800000,
// with explicit rules (no real multiply), those of lowbit.numerics.reference.mogami_mul (the definition;
// csrc/quantize.c spells the same rule for lowbit.mogami_mul, see there why there are two): a zero/subnormal
// operand or a result below the smallest normal flushes to signed zero; a result past the
// largest finite saturates to the signed largest finite (``max_finite``: FLT_MAX, or the
// largest bf16 as fp32 bits for bf16 operands, whose products are the fp32 products of the
// widened patterns); an Inf/NaN operand gives the quiet NaN (lowbit.mogami_mul raises instead).
//
// Summation order (fixed, documented in docs/layers.md): every output element is one fp32
// accumulator starting at +0.0f that adds its products in increasing reduction index
// (batch-major, then k). Skipping a zero product, or adding +0 in place of a signed zero
// product, is exact (x + (+-0) == x for x != 0, and the accumulator never holds -0).
// Vectorisation and register tiles run over output elements only, so the order per element is
// the scalar order; the file must not be built with -ffast-math.
//
// Two paths compute the same bits: the general loop (any operands) and the fast path (below:
// no Inf/NaN operand and no product that could saturate, checked per call), which the GEMM and
// the direct convolutions (convolutions without im2col / col2im buffers) use.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>
#if defined(_OPENMP)
#include <omp.h>
#endif
#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace {

constexpr uint32_t kSign = 0x80000000u, kMag = 0x7FFFFFFFu, kExp = 0x7F800000u, kMan = 0x007FFFFFu;
constexpr uint32_t kOne = 0x3F800000u, kMaxFinite = 0x7F7FFFFFu, kNaN = 0x7FC00000u;
constexpr int32_t kMinNormal = 0x00800000, kMinTrue = -0x3F800000;

inline float as_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

// Magnitude of a (x) b before the rules: ma + mb - 0x3F800000 lies in [-0x3F800000, 0xC07FFFFE];
// read as int32, the wrapped part (> INT32_MAX) lands below kMinTrue, so it is told apart.
inline int32_t raw_mag(uint32_t ua, uint32_t ub) {
    return (int32_t)((ua & kMag) + (ub & kMag) - kOne);
}

// Branch-free so that the loops over output columns vectorise.
inline uint32_t mogami_bits(uint32_t ua, uint32_t ub, uint32_t max_finite = kMaxFinite) {
    int32_t t = raw_mag(ua, ub);
    uint32_t sign = (ua ^ ub) & kSign;
    bool special = ((ua & kExp) == kExp) | ((ub & kExp) == kExp);
    bool zero_in = ((ua & kExp) == 0) | ((ub & kExp) == 0);
    bool over = (t >= (int32_t)kExp) | (t < kMinTrue);
    bool under = (t < kMinNormal) & !over;
    uint32_t r = (over | (t > (int32_t)max_finite)) ? max_finite : (uint32_t)t;
    r = (under | zero_in) ? 0u : r;
    r |= sign;
    return special ? kNaN : r;
}

// d(x (x) y)/dy as fp32 bits: sign(x) * 2^(ex - 127 + carry), carry = mantissa-field overflow;
// zero where the product is flushed, saturated or NaN (the product is constant there).
inline uint32_t mogami_dy_bits(uint32_t ux, uint32_t uy) {
    int32_t t = raw_mag(ux, uy);
    bool special = ((ux & kExp) == kExp) | ((uy & kExp) == kExp);
    bool zero_in = ((ux & kExp) == 0) | ((uy & kExp) == 0);
    bool over = (t >= (int32_t)kExp) | (t < kMinTrue);
    bool under = (t < kMinNormal) & !over;
    uint32_t carry = ((ux & kMan) + (uy & kMan)) >> 23;
    uint32_t d = (ux & kSign) | ((ux & kExp) + (carry << 23));
    return (special | zero_in | over | under) ? 0u : d;
}

// The general GEMM (any operands): the product rules evaluated per product; layout as mogami_gemm.
void mogami_gemm_general(const uint32_t* A, const uint32_t* B, float* C, int64_t batch, int64_t m_rows,
                         int64_t n_cols, int64_t k_red, int64_t sab, int64_t sam, int64_t sbb, int reduce_batch,
                         uint32_t max_finite) {
    const int64_t outer = reduce_batch ? m_rows : batch * m_rows;
#pragma omp parallel for schedule(dynamic, 16)
    for (int64_t o = 0; o < outer; ++o) {
        const int64_t m = reduce_batch ? o : o % m_rows;
        float* c = C + o * n_cols;
        for (int64_t n = 0; n < n_cols; ++n) c[n] = 0.0f;
        const int64_t b0 = reduce_batch ? 0 : o / m_rows, b1 = reduce_batch ? batch : b0 + 1;
        for (int64_t b = b0; b < b1; ++b) {
            const uint32_t* arow = A + b * sab + m * sam;
            for (int64_t k = 0; k < k_red; ++k) {
                const uint32_t ua = arow[k];
                if ((ua & kExp) == 0) continue;  // zero/subnormal: every product is a signed zero
                const uint32_t* brow = B + b * sbb + k * n_cols;
#pragma omp simd
                for (int64_t n = 0; n < n_cols; ++n) c[n] += as_float(mogami_bits(ua, brow[n], max_finite));
            }
        }
    }
}

// ---- the fast path ----------------------------------------------------------------------
// Where no operand is Inf/NaN and no product can pass max_finite (decided once per call from the
// largest magnitude patterns: |a|max + |b|max - kOne <= max_finite), the product of a normal a
// and a normal b is
//   bits(a (x) b) = (ub + ma') mod 2^32,   ma' = (ua & kMag) - kOne + (ua & kSign):
// the magnitude sum t = |ua| + |ub| - kOne lies in [0x00800000, max_finite] when the product is
// not flushed, so nothing carries into the sign bit, and adding the sign of a flips that of b.
// The product is flushed iff
//   |ub| <= thr(a) = max(0x007FFFFF - (|ua| - kOne), 0x007FFFFF)
// (t below the smallest normal, or b zero/subnormal); thr = INT32_MAX for a zero/subnormal a.
// A flushed product is added as +0 instead of its signed zero: the same sum (x + (+-0) == x for
// x != 0, and the accumulator, which starts at +0, never holds -0). So a product costs an add,
// a compare and an and, with (ma', thr) precomputed once per element of the broadcast operand
// ("packed"); the other operand is read as vectors of 8 outputs.

// (ma', thr) of one broadcast element.
inline void pack_one(uint32_t ua, int32_t* out) {
    const int64_t ma = (int64_t)(ua & kMag) - (int64_t)kOne;
    int64_t thr = (int64_t)kMinNormal - 1 - ma;
    if (thr < kMinNormal - 1) thr = kMinNormal - 1;
    if ((ua & kExp) == 0) thr = INT32_MAX;
    out[0] = (int32_t)(uint32_t)((uint32_t)ma + (ua & kSign));
    out[1] = (int32_t)thr;
}

constexpr int32_t kPadPair[2] = {0, INT32_MAX};  // the packed zero

// Largest magnitude pattern of n values (NaN/Inf patterns are >= kExp).
uint32_t max_mag_of(const uint32_t* p, int64_t n) {
    uint32_t best = 0;
#pragma omp parallel for reduction(max : best) schedule(static) if (n > (1 << 18))
    for (int64_t i = 0; i < n; ++i) {
        const uint32_t m = p[i] & kMag;
        best = m > best ? m : best;
    }
    return best;
}

inline bool fast_ok(uint32_t max_a, uint32_t max_b, uint32_t max_finite) {
    return max_a < kExp && max_b < kExp && (int64_t)max_a + max_b - kOne <= (int64_t)max_finite;
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
inline int64_t floor_mod(int64_t a, int64_t b) { return a - floor_div(a, b) * b; }

#define LB_INLINE inline __attribute__((always_inline))

// 8-lane vectors: AVX2, or plain arrays (same arithmetic) elsewhere.
#if defined(__AVX2__)
using vi = __m256i;
using vf = __m256;
LB_INLINE vi vi_set1(int32_t x) { return _mm256_set1_epi32(x); }
LB_INLINE vi vi_load(const uint32_t* p) { return _mm256_loadu_si256((const __m256i*)p); }
LB_INLINE vi vi_and(vi a, vi b) { return _mm256_and_si256(a, b); }
LB_INLINE vi vi_add(vi a, vi b) { return _mm256_add_epi32(a, b); }
LB_INLINE vi vi_gt(vi a, vi b) { return _mm256_cmpgt_epi32(a, b); }
LB_INLINE vi vi_lanes_below(int n) { return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)); }
LB_INLINE vi vi_maskload(const uint32_t* p, vi m) { return _mm256_maskload_epi32((const int*)p, m); }
LB_INLINE vf vf_zero() { return _mm256_setzero_ps(); }
LB_INLINE vf vf_add(vf a, vf b) { return _mm256_add_ps(a, b); }
LB_INLINE vf vf_bits(vi a) { return _mm256_castsi256_ps(a); }
LB_INLINE vf vf_load(const float* p) { return _mm256_loadu_ps(p); }
LB_INLINE void vf_store(float* p, vf a) { _mm256_storeu_ps(p, a); }
LB_INLINE void vf_maskstore(float* p, vi m, vf a) { _mm256_maskstore_ps(p, m, a); }
#else
struct vi { int32_t v[8]; };
struct vf { float v[8]; };
#define LB_MAP(T, expr) T r; for (int l = 0; l < 8; ++l) r.v[l] = (expr); return r
LB_INLINE vi vi_set1(int32_t x) { LB_MAP(vi, x); }
LB_INLINE vi vi_load(const uint32_t* p) { LB_MAP(vi, (int32_t)p[l]); }
LB_INLINE vi vi_and(vi a, vi b) { LB_MAP(vi, a.v[l] & b.v[l]); }
LB_INLINE vi vi_add(vi a, vi b) { LB_MAP(vi, (int32_t)((uint32_t)a.v[l] + (uint32_t)b.v[l])); }
LB_INLINE vi vi_gt(vi a, vi b) { LB_MAP(vi, a.v[l] > b.v[l] ? -1 : 0); }
LB_INLINE vi vi_lanes_below(int n) { LB_MAP(vi, l < n ? -1 : 0); }
LB_INLINE vi vi_maskload(const uint32_t* p, vi m) { LB_MAP(vi, m.v[l] ? (int32_t)p[l] : 0); }
LB_INLINE vf vf_zero() { LB_MAP(vf, 0.0f); }
LB_INLINE vf vf_add(vf a, vf b) { LB_MAP(vf, a.v[l] + b.v[l]); }
LB_INLINE vf vf_bits(vi a) { LB_MAP(vf, as_float((uint32_t)a.v[l])); }
LB_INLINE vf vf_load(const float* p) { LB_MAP(vf, p[l]); }
LB_INLINE void vf_store(float* p, vf a) { for (int l = 0; l < 8; ++l) p[l] = a.v[l]; }
LB_INLINE void vf_maskstore(float* p, vi m, vf a) { for (int l = 0; l < 8; ++l) if (m.v[l]) p[l] = a.v[l]; }
#undef LB_MAP
#endif

constexpr int kMR = 4;  // broadcast rows per tile (4 x 2 vectors: 8 accumulators of the 16 ymm)
constexpr int kNV = 2;  // vectors of 8 outputs per tile

struct LinOff {  // step s of the vector operand at s * step
    int64_t step;
    LB_INLINE int64_t operator()(int64_t s) const { return s * step; }
};
struct TabOff {  // ... at tab[s]
    const int64_t* tab;
    LB_INLINE int64_t operator()(int64_t s) const { return tab[s]; }
};

// The micro-kernel: acc[r][v] += SUM_s product(pa[r][s * astep], pb[v] + boff(s)) in increasing s.
// pa[r] points at packed (ma', thr) pairs; pb[v] at 8 vector-operand patterns; kMask: masked loads.
template <bool kMask, class BOff>
LB_INLINE void accumulate(vf (&acc)[kMR][kNV], const int32_t* const (&pa)[kMR], int64_t astep,
                          const uint32_t* const (&pb)[kNV], BOff boff, int64_t steps, const vi (&mask)[kNV]) {
    const vi mag = vi_set1((int32_t)kMag);
    for (int64_t s = 0; s < steps; ++s) {
        const int64_t o = boff(s);
        vi ub[kNV], mb[kNV];
        for (int v = 0; v < kNV; ++v) {
            ub[v] = kMask ? vi_maskload(pb[v] + o, mask[v]) : vi_load(pb[v] + o);
            mb[v] = vi_and(ub[v], mag);
        }
        for (int r = 0; r < kMR; ++r) {
            const int32_t* p = pa[r] + s * astep;
            const vi ma = vi_set1(p[0]), thr = vi_set1(p[1]);
            for (int v = 0; v < kNV; ++v)
                acc[r][v] = vf_add(acc[r][v], vf_bits(vi_and(vi_add(ub[v], ma), vi_gt(mb[v], thr))));
        }
    }
}

LB_INLINE void zero_acc(vf (&acc)[kMR][kNV]) {
    for (int r = 0; r < kMR; ++r)
        for (int v = 0; v < kNV; ++v) acc[r][v] = vf_zero();
}

// Stores acc rows r < mr to c[v] + r * ldc (8 lanes, or the first nvalid[v] lanes).
LB_INLINE void store_acc(const vf (&acc)[kMR][kNV], float* const (&c)[kNV], int64_t ldc, int mr,
                         const int (&nvalid)[kNV], const vi (&mask)[kNV]) {
    for (int r = 0; r < mr; ++r)
        for (int v = 0; v < kNV; ++v) {
            if (nvalid[v] == 8) vf_store(c[v] + r * ldc, acc[r][v]);
            else if (nvalid[v] > 0) vf_maskstore(c[v] + r * ldc, mask[v], acc[r][v]);
        }
}

// Packs rows m < m_rows of A(b, m, k) = A[b*sab + m*sam + k*sak] for b < nb into
// [b][m / kMR][k][kMR] (ma', thr) pairs; rows past m_rows get the packed zero (their products are
// +0 and never stored). Returns the largest magnitude pattern seen.
uint32_t pack_rows(const uint32_t* A, int32_t* pk, int64_t nb, int64_t m_rows, int64_t k_red, int64_t sab,
                   int64_t sam, int64_t sak) {
    const int64_t mblocks = ceil_div(m_rows, kMR);
    uint32_t best = 0;
#pragma omp parallel for collapse(2) reduction(max : best) schedule(static) if (nb * m_rows * k_red > (1 << 16))
    for (int64_t b = 0; b < nb; ++b)
        for (int64_t blk = 0; blk < mblocks; ++blk) {
            int32_t* out = pk + (b * mblocks + blk) * k_red * 2 * kMR;
            for (int r = 0; r < kMR; ++r) {
                const int64_t m = blk * kMR + r;
                for (int64_t k = 0; k < k_red; ++k) {
                    int32_t* o = out + k * 2 * kMR + 2 * r;
                    if (m >= m_rows) {
                        o[0] = kPadPair[0];
                        o[1] = kPadPair[1];
                        continue;
                    }
                    const uint32_t ua = A[b * sab + m * sam + k * sak];
                    const uint32_t mg = ua & kMag;
                    best = mg > best ? mg : best;
                    pack_one(ua, o);
                }
            }
        }
    return best;
}

// Scratch memory reused between calls of one calling thread (no fresh pages per call).
struct Scratch {
    void* p = nullptr;
    size_t n = 0;
    ~Scratch() { std::free(p); }
    template <class T>
    T* get(size_t count) {
        const size_t need = count * sizeof(T) + 64;
        if (need > n) {
            std::free(p);
            p = std::malloc(need);
            n = p ? need : 0;
        }
        return (T*)p;
    }
};
thread_local Scratch g_pack, g_big, g_big2;

// ---- the fast GEMM ---------------------------------------------------------------------------

// Returns false (nothing written) where the fast path does not apply.
bool mogami_gemm_fast(const uint32_t* A, const uint32_t* B, float* C, int64_t batch, int64_t m_rows, int64_t n_cols,
                      int64_t k_red, int64_t sab, int64_t sam, int64_t sbb, int reduce_batch, uint32_t max_finite,
                      uint32_t max_b) {
    if (max_b >= kExp) return false;  // also "unknown" (0xFFFFFFFF): the caller scans first
    const int64_t na = sab == 0 ? 1 : batch;
    const int64_t mblocks = ceil_div(m_rows, kMR), nstrips = ceil_div(n_cols, 8 * kNV);
    int32_t* pk = g_pack.get<int32_t>((size_t)(na * mblocks * k_red * 2 * kMR));
    if (pk == nullptr) return false;
    if (!fast_ok(pack_rows(A, pk, na, m_rows, k_red, sab, sam, 1), max_b, max_finite)) return false;
    const int64_t pk_block = k_red * 2 * kMR, pk_batch = mblocks * pk_block;
    // one tile: rows blk*kMR.., columns of strip s; sums over batches b0..b1-1 in order
    auto tile = [&](int64_t b0, int64_t b1, int64_t blk, int64_t s, float* c) {
        const int mr = (int)std::min<int64_t>(kMR, m_rows - blk * kMR);
        int nvalid[kNV];
        vi mask[kNV];
        float* cp[kNV];
        bool full = true;
        for (int v = 0; v < kNV; ++v) {
            const int64_t col = s * 8 * kNV + 8 * v;
            nvalid[v] = (int)std::max<int64_t>(0, std::min<int64_t>(8, n_cols - col));
            mask[v] = vi_lanes_below(nvalid[v]);
            cp[v] = c + 8 * v;
            full &= nvalid[v] == 8;
        }
        vf acc[kMR][kNV];
        zero_acc(acc);
        for (int64_t b = b0; b < b1; ++b) {
            const int32_t* base = pk + (sab == 0 ? 0 : b) * pk_batch + blk * pk_block;
            const int32_t* pa[kMR];
            for (int r = 0; r < kMR; ++r) pa[r] = base + 2 * r;
            const uint32_t* pb[kNV];
            for (int v = 0; v < kNV; ++v) pb[v] = B + b * sbb + s * 8 * kNV + (nvalid[v] > 0 ? 8 * v : 0);
            if (full) accumulate<false>(acc, pa, 2 * kMR, pb, LinOff{n_cols}, k_red, mask);
            else accumulate<true>(acc, pa, 2 * kMR, pb, LinOff{n_cols}, k_red, mask);
        }
        store_acc(acc, cp, n_cols, mr, nvalid, mask);
    };
    if (!reduce_batch) {
        // task = (b, strip); the strip of B stays in L1 across the m-blocks
#pragma omp parallel for schedule(static)
        for (int64_t t = 0; t < batch * nstrips; ++t) {
            const int64_t b = t / nstrips, s = t % nstrips;
            for (int64_t blk = 0; blk < mblocks; ++blk)
                tile(b, b + 1, blk, s, C + (b * m_rows + blk * kMR) * n_cols + s * 8 * kNV);
        }
    } else {
        // task = (strip, m-block), each over the whole batch in order
#pragma omp parallel for schedule(static)
        for (int64_t t = 0; t < nstrips * mblocks; ++t) {
            const int64_t s = t / mblocks, blk = t % mblocks;
            tile(0, batch, blk, s, C + blk * kMR * n_cols + s * 8 * kNV);
        }
    }
    return true;
}

// ---- direct convolutions (no im2col, no col2im) -----------------------------------------------
// x [N, C, H, W], w [Co, C, kh, kw], output / dz [N, Co, ho, wo]; k = (c, i, j) as F.unfold,
// l = (oy, ox). The input is laid out padded and split by column phase:
//   xs[n][c][yp][q][xq] = x[n][c][yp - ph][xq*sw + q - pw]  (zero outside),
// so that for every kernel column j the inputs of 8 consecutive ox are 8 consecutive xq.

struct Geo {
    int64_t n, c, h, w, co, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo;
    int64_t K() const { return c * kh * kw; }
    // padded, phase-split input layout
    int64_t hp() const { return (ho - 1) * sh + (kh - 1) * dh + 1; }
    int64_t wq() const { return ceil_div(wo, 8 * kNV) * 8 * kNV + ((kw - 1) * dw) / sw + 1; }
    int64_t rs() const { return sw * wq(); }     // row stride
    int64_t ps() const { return hp() * rs(); }  // plane stride
    // offset of kernel element k = (c, i, j) in xs, relative to (oy, ox) = (0, 0)
    int64_t koff(int64_t k) const {
        const int64_t ci = k / (kh * kw), i = (k / kw) % kh, j = k % kw;
        return ci * ps() + i * dh * rs() + ((j * dw) % sw) * wq() + (j * dw) / sw;
    }
};

// xs of x (raw patterns, or packed pairs when pairs = true: 2 ints per position); returns max |x|.
uint32_t layout_input(const uint32_t* x, int32_t* xs, const Geo& g, bool pairs) {
    const int64_t hp = g.hp(), wq = g.wq(), ps = g.ps(), rs = g.rs(), width = pairs ? 2 : 1;
    uint32_t best = 0;
#pragma omp parallel for collapse(2) reduction(max : best) schedule(static)
    for (int64_t n = 0; n < g.n; ++n)
        for (int64_t c = 0; c < g.c; ++c) {
            const uint32_t* plane = x + (n * g.c + c) * g.h * g.w;
            int32_t* out = xs + (n * g.c + c) * ps * width;
            for (int64_t yp = 0; yp < hp; ++yp) {
                const int64_t y = yp - g.ph;
                for (int64_t q = 0; q < g.sw; ++q) {
                    int32_t* o = out + (yp * rs + q * wq) * width;
                    for (int64_t xq = 0; xq < wq; ++xq) {
                        const int64_t xx = xq * g.sw + q - g.pw;
                        const bool in = y >= 0 && y < g.h && xx >= 0 && xx < g.w;
                        const uint32_t u = in ? plane[y * g.w + xx] : 0u;
                        const uint32_t m = u & kMag;
                        best = m > best ? m : best;
                        if (pairs) pack_one(u, o + 2 * xq);
                        else o[xq] = (int32_t)u;
                    }
                }
            }
        }
    return best;
}

// z[n, co, oy, ox] = SUM_k w[co, k] (x) x_col[n, k, (oy, ox)], k increasing.
int conv_forward(const uint32_t* x, const uint32_t* w, float* z, const Geo& g, uint32_t max_finite) {
    const int64_t K = g.K(), mblocks = ceil_div(g.co, kMR);
    int32_t* pk = g_pack.get<int32_t>((size_t)(mblocks * K * 2 * kMR + K * 2));
    int32_t* xs = g_big.get<int32_t>((size_t)(g.n * g.c * g.ps()));
    if (pk == nullptr || xs == nullptr) return 2;
    const uint32_t max_w = pack_rows(w, pk, 1, g.co, K, 0, K, 1);
    int64_t* off = (int64_t*)(pk + mblocks * K * 2 * kMR);
    for (int64_t k = 0; k < K; ++k) off[k] = g.koff(k);
    const uint32_t max_x = layout_input(x, xs, g, false);
    if (!fast_ok(max_w, max_x, max_finite)) return 1;
    const int64_t segs_row = ceil_div(g.wo, 8), segs = g.ho * segs_row, pairs = ceil_div(segs, kNV);
    const int64_t plane = g.ho * g.wo, rs = g.rs();
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < g.n * pairs; ++t) {
        const int64_t n = t / pairs, p = t % pairs;
        const uint32_t* pb[kNV];
        float* cp[kNV];
        int nvalid[kNV];
        vi mask[kNV];
        for (int v = 0; v < kNV; ++v) {
            const int64_t seg = std::min(p * kNV + v, segs - 1);
            const int64_t oy = seg / segs_row, ox0 = (seg % segs_row) * 8;
            pb[v] = (const uint32_t*)xs + n * g.c * g.ps() + oy * g.sh * rs + ox0;
            cp[v] = z + n * g.co * plane + oy * g.wo + ox0;
            nvalid[v] = p * kNV + v < segs ? (int)std::min<int64_t>(8, g.wo - ox0) : 0;
            mask[v] = vi_lanes_below(nvalid[v]);
        }
        for (int64_t blk = 0; blk < mblocks; ++blk) {
            const int32_t* pa[kMR];
            for (int r = 0; r < kMR; ++r) pa[r] = pk + blk * K * 2 * kMR + 2 * r;
            vf acc[kMR][kNV];
            zero_acc(acc);
            accumulate<false>(acc, pa, 2 * kMR, pb, TabOff{off}, K, mask);
            float* c[kNV];
            for (int v = 0; v < kNV; ++v) c[v] = cp[v] + blk * kMR * plane;
            store_acc(acc, c, plane, (int)std::min<int64_t>(kMR, g.co - blk * kMR), nvalid, mask);
        }
    }
    return 0;
}

// da += the dcols of one kernel element (a separate function: its accumulators get the registers).
__attribute__((noinline)) void add_dcol(float (*da)[kNV][8], const int32_t* const (&pa)[kMR],
                                        const uint32_t* const (&pb)[kNV], int64_t step, int64_t steps,
                                        const vi (&mask)[kNV]) {
    vf dcol[kMR][kNV];
    zero_acc(dcol);
    accumulate<false>(dcol, pa, 2 * kMR, pb, LinOff{step}, steps, mask);
    for (int r = 0; r < kMR; ++r)
        for (int v = 0; v < kNV; ++v) vf_store(da[r][v], vf_add(vf_load(da[r][v]), dcol[r][v]));
}

// dx = col2im(dcols), dcols[n, k, l] = SUM_co w[co, k] (x) dz[n, co, l] (co increasing): every
// input pixel adds the dcols that land on it in increasing k (= increasing (i, j) for its
// channel), from +0, as torch's col2im does. A vector covers 8 x of one row y and one column
// phase q (x = xq*sw + q); where a kernel element (i, j) reaches no output for it, the vector
// reads a zero row of dz instead: its dcol is +0, and adding +0 changes nothing (a pixel's sum
// starts at +0 and so never holds -0), as col2im's absent term.
int conv_backward_data(const uint32_t* dz, const uint32_t* w, float* dx, const Geo& g, uint32_t max_finite) {
    const int64_t khw = g.kh * g.kw, cblocks = ceil_div(g.c, kMR);
    const int64_t nxq = ceil_div(g.w, g.sw), segs_row = ceil_div(nxq, 8), xq_r = segs_row * 8;
    const int64_t segs = g.h * g.sw * segs_row, pairs = ceil_div(segs, kNV);
    // dz padded along ox, plus a zero row per plane: ez[n][co][oy < ho + 1][pl + ox]
    const int64_t pl = ((g.kw - 1) * g.dw) / g.sw + 1, ho1 = g.ho + 1;
    const int64_t we = pl + std::max<int64_t>(g.wo, xq_r + (g.sw - 1 + g.pw) / g.sw) + 1;
    // packed w^T: rows c (blocks of kMR) for each (i, j), reduction co: [ij][cblk][co][kMR] pairs
    int32_t* pk = g_pack.get<int32_t>((size_t)(khw * cblocks * g.co * 2 * kMR));
    uint32_t* ez = g_big.get<uint32_t>((size_t)(g.n * g.co * ho1 * we));
    const bool direct = g.sw == 1;  // else through a phase-split buffer
    float* buf = direct ? dx : g_big2.get<float>((size_t)(g.n * g.c * g.h * g.sw * xq_r));
    if (pk == nullptr || ez == nullptr || buf == nullptr) return 2;
    const uint32_t max_w = pack_rows(w, pk, khw, g.c, g.co, 1, khw, g.c * khw);
    uint32_t max_e = 0;
#pragma omp parallel for collapse(2) reduction(max : max_e) schedule(static)
    for (int64_t n = 0; n < g.n; ++n)
        for (int64_t co = 0; co < g.co; ++co) {
            const uint32_t* src = dz + (n * g.co + co) * g.ho * g.wo;
            uint32_t* dst = ez + (n * g.co + co) * ho1 * we;
            for (int64_t oy = 0; oy < ho1; ++oy)
                for (int64_t i = 0; i < we; ++i) {
                    const int64_t ox = i - pl;
                    const uint32_t u = (oy < g.ho && ox >= 0 && ox < g.wo) ? src[oy * g.wo + ox] : 0u;
                    const uint32_t m = u & kMag;
                    max_e = m > max_e ? m : max_e;
                    dst[oy * we + i] = u;
                }
        }
    if (!fast_ok(max_w, max_e, max_finite)) return 1;
    const int64_t ldo = direct ? g.h * g.w : g.h * g.sw * xq_r;  // channel stride of buf
    // rows[y * kh + i]: the dz row oy of input row y and kernel row i, or ho (the zero row);
    // cols[q * kw + j]: ox - xq for column phase q and kernel column j, or kNoCol
    constexpr int64_t kNoCol = INT64_MIN;
    std::vector<int64_t> rows(g.h * g.kh), cols(g.sw * g.kw);
    for (int64_t y = 0; y < g.h; ++y)
        for (int64_t i = 0; i < g.kh; ++i) {
            const int64_t ny = y + g.ph - i * g.dh;
            rows[y * g.kh + i] = (ny >= 0 && ny % g.sh == 0 && ny / g.sh < g.ho) ? ny / g.sh : g.ho;
        }
    for (int64_t q = 0; q < g.sw; ++q)
        for (int64_t j = 0; j < g.kw; ++j) {
            const int64_t nxx = q + g.pw - j * g.dw;
            cols[q * g.kw + j] = floor_mod(nxx, g.sw) == 0 ? floor_div(nxx, g.sw) : kNoCol;
        }
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < g.n * cblocks * pairs; ++t) {
        const int64_t p = t % pairs, cblk = (t / pairs) % cblocks, n = t / (pairs * cblocks);
        const int mr = (int)std::min<int64_t>(kMR, g.c - cblk * kMR);
        const int64_t *rowv[kNV], *colv[kNV];
        int64_t xq0[kNV];
        int nvalid[kNV];
        vi mask[kNV];
        float* cp[kNV];
        for (int v = 0; v < kNV; ++v) {
            const int64_t seg = std::min(p * kNV + v, segs - 1);
            const int64_t y = seg / (g.sw * segs_row), q = (seg / segs_row) % g.sw;
            xq0[v] = (seg % segs_row) * 8;
            rowv[v] = rows.data() + y * g.kh;
            colv[v] = cols.data() + q * g.kw;
            const int64_t nx_q = direct ? g.w : xq_r;  // columns stored for this row
            nvalid[v] = p * kNV + v < segs ? (int)std::min<int64_t>(8, nx_q - xq0[v]) : 0;
            mask[v] = vi_lanes_below(nvalid[v]);
            cp[v] = buf + (n * g.c + cblk * kMR) * ldo + (direct ? y * g.w : (y * g.sw + q) * xq_r) + xq0[v];
        }
        const uint32_t* en = ez + n * g.co * ho1 * we + pl;
        const int32_t* pkc = pk + cblk * g.co * 2 * kMR;
        // the pixel sums live in memory (L1): registers hold the dcol accumulators and operands
        alignas(32) float da[kMR][kNV][8];
        for (int r = 0; r < kMR; ++r)
            for (int v = 0; v < kNV; ++v) vf_store(da[r][v], vf_zero());
        for (int64_t i = 0; i < g.kh; ++i) {
            int64_t oy[kNV];
            bool any_row = false;
            for (int v = 0; v < kNV; ++v) {
                oy[v] = nvalid[v] > 0 ? rowv[v][i] : g.ho;
                any_row |= oy[v] != g.ho;
            }
            if (!any_row) continue;
            for (int64_t j = 0; j < g.kw; ++j) {
                const uint32_t* pb[kNV];
                bool any = false;
                for (int v = 0; v < kNV; ++v) {
                    const int64_t sh = colv[v][j];
                    const bool ok = oy[v] != g.ho && sh != kNoCol;
                    any |= ok;
                    pb[v] = en + (ok ? oy[v] * we + sh : g.ho * we) + xq0[v];
                }
                if (!any) continue;
                const int32_t* pa[kMR];
                for (int r = 0; r < kMR; ++r) pa[r] = pkc + (i * g.kw + j) * cblocks * g.co * 2 * kMR + 2 * r;
                add_dcol(da, pa, pb, ho1 * we, g.co, mask);
            }
        }
        vf sums[kMR][kNV];
        for (int r = 0; r < kMR; ++r)
            for (int v = 0; v < kNV; ++v) sums[r][v] = vf_load(da[r][v]);
        store_acc(sums, cp, ldo, mr, nvalid, mask);
    }
    if (!direct) {
#pragma omp parallel for collapse(2) schedule(static)
        for (int64_t nc = 0; nc < g.n * g.c; ++nc)
            for (int64_t y = 0; y < g.h; ++y) {
                const float* src = buf + nc * ldo + y * g.sw * xq_r;
                float* dst = dx + (nc * g.h + y) * g.w;
                for (int64_t xx = 0; xx < g.w; ++xx) dst[xx] = src[(xx % g.sw) * xq_r + xx / g.sw];
            }
    }
    return 0;
}

// dw[co, k] = SUM_n SUM_l dz[n, co, l] (x) x_col[n, k, l], (n, l) increasing. Vectors run over co
// (dz transposed to [n][l][co]); the packed side is the laid-out input.
int conv_weight_grad(const uint32_t* dz, const uint32_t* x, float* dw, const Geo& g, uint32_t max_finite) {
    const int64_t K = g.K(), L = g.ho * g.wo, cor = ceil_div(g.co, 8 * kNV) * 8 * kNV;
    const int64_t kblocks = ceil_div(K, kMR), cotiles = cor / (8 * kNV), tiles = kblocks * cotiles;
    int32_t* xs = g_big.get<int32_t>((size_t)(g.n * g.c * g.ps() * 2));
    uint32_t* et = g_big2.get<uint32_t>((size_t)(g.n * L * cor));
    float* acc_buf = g_pack.get<float>((size_t)(K * cor + K * 2));
    if (xs == nullptr || et == nullptr || acc_buf == nullptr) return 2;
    int64_t* off = (int64_t*)(acc_buf + K * cor);
    for (int64_t k = 0; k < K; ++k) off[k] = g.koff(k);
    uint32_t max_e = 0;
#pragma omp parallel for reduction(max : max_e) schedule(static)
    for (int64_t nl = 0; nl < g.n * L; ++nl) {
        const int64_t n = nl / L, l = nl % L;
        uint32_t* dst = et + nl * cor;
        for (int64_t co = 0; co < cor; ++co) {
            const uint32_t u = co < g.co ? dz[(n * g.co + co) * L + l] : 0u;
            const uint32_t m = u & kMag;
            max_e = m > max_e ? m : max_e;
            dst[co] = u;
        }
    }
    const uint32_t max_x = layout_input(x, xs, g, true);
    if (!fast_ok(max_x, max_e, max_finite)) return 1;
    const int64_t rs = g.rs(), ps = g.ps();
    vi mask[kNV];
    int nvalid[kNV];
    for (int v = 0; v < kNV; ++v) {
        mask[v] = vi_lanes_below(8);
        nvalid[v] = 8;
    }
#pragma omp parallel
    {
#if defined(_OPENMP)
        const int64_t nth = omp_get_num_threads(), th = omp_get_thread_num();
#else
        const int64_t nth = 1, th = 0;
#endif
        const int64_t t0 = tiles * th / nth, t1 = tiles * (th + 1) / nth;
        for (int64_t n = 0; n < g.n; ++n)
            for (int64_t t = t0; t < t1; ++t) {
                const int64_t kb = t / cotiles, ct = t % cotiles;
                float* cp[kNV];
                for (int v = 0; v < kNV; ++v) cp[v] = acc_buf + kb * kMR * cor + ct * 8 * kNV + 8 * v;
                vf acc[kMR][kNV];
                for (int r = 0; r < kMR; ++r)
                    for (int v = 0; v < kNV; ++v) acc[r][v] = n == 0 ? vf_zero() : vf_load(cp[v] + r * cor);
                int64_t kof[kMR];
                for (int r = 0; r < kMR; ++r) kof[r] = off[std::min(kb * kMR + r, K - 1)];
                const int32_t* xn = xs + n * g.c * ps * 2;
                const uint32_t* en = et + n * L * cor + ct * 8 * kNV;
                for (int64_t oy = 0; oy < g.ho; ++oy) {
                    const int32_t* pa[kMR];
                    for (int r = 0; r < kMR; ++r) pa[r] = xn + 2 * (kof[r] + oy * g.sh * rs);
                    const uint32_t* pb[kNV];
                    for (int v = 0; v < kNV; ++v) pb[v] = en + oy * g.wo * cor + 8 * v;
                    accumulate<false>(acc, pa, 2, pb, LinOff{cor}, g.wo, mask);
                }
                store_acc(acc, cp, cor, (int)std::min<int64_t>(kMR, K - kb * kMR), nvalid, mask);
            }
    }
#pragma omp parallel for schedule(static)
    for (int64_t co = 0; co < g.co; ++co)
        for (int64_t k = 0; k < K; ++k) dw[co * K + k] = acc_buf[k * cor + co];
    return 0;
}

}  // namespace

extern "C" {

// C(b, m, n) = SUM_k A(b, m, k) (x) B(b, k, n)
//   A(b, m, k) = A[b*sab + m*sam + k],  B(b, k, n) = B[b*sbb + k*n_cols + n]
// reduce_batch = 0: C[b*m_rows*n_cols + m*n_cols + n];  1: C[m*n_cols + n] sums over (b, k).
// max_finite: saturation value (bits), 0x7F7FFFFF for fp32, 0x7F7F0000 for bf16.
// max_b: an upper bound of the magnitude patterns (bits & 0x7FFFFFFF) in B, or 0xFFFFFFFF if not
// known (then B is scanned). Takes the fast path (above) where it applies, else the general loop.
void mogami_gemm(const uint32_t* A, const uint32_t* B, float* C, int64_t batch, int64_t m_rows,
                 int64_t n_cols, int64_t k_red, int64_t sab, int64_t sam, int64_t sbb, int reduce_batch,
                 uint32_t max_finite, uint32_t max_b) {
    if (max_b == 0xFFFFFFFFu) max_b = max_mag_of(B, batch * sbb);
    if (mogami_gemm_fast(A, B, C, batch, m_rows, n_cols, k_red, sab, sam, sbb, reduce_batch, max_finite, max_b))
        return;
    mogami_gemm_general(A, B, C, batch, m_rows, n_cols, k_red, sab, sam, sbb, reduce_batch, max_finite);
}

// Direct Mogami convolutions (fast path only): the same sums as the GEMMs on F.unfold columns and,
// for backward-data, F.fold of the column gradients. geo = {N, C, H, W, Co, kh, kw, sh, sw, ph, pw,
// dh, dw, ho, wo}. Return 0 when done, 1 where the fast path does not apply (use the GEMMs), 2
// when out of memory; nothing is written to the output unless 0.
int mogami_conv2d(int which, const uint32_t* p, const uint32_t* q, float* out, const int64_t* geo,
                  uint32_t max_finite) {
    const Geo g{geo[0], geo[1], geo[2], geo[3], geo[4], geo[5], geo[6], geo[7],
                geo[8], geo[9], geo[10], geo[11], geo[12], geo[13], geo[14]};
    switch (which) {
        case 0: return conv_forward(p, q, out, g, max_finite);        // p = x, q = w
        case 1: return conv_backward_data(p, q, out, g, max_finite);  // p = dz, q = w
        case 2: return conv_weight_grad(p, q, out, g, max_finite);    // p = dz, q = x
        default: return 3;
    }
}

// Exact backward-data: C(b, i, j) = SUM_r G(b, r, j) * d(P(i, r) (x) Q(b, i, j))/dQ
//   G[b*sgb + r*n_cols + j],  P[i*k_red + r],  Q[b*m_rows*n_cols + i*n_cols + j]
// The multiply by a power of two is exact in fp32 (an exponent add in hardware).
void mogami_grad_fixed_col(const float* G, const uint32_t* P, const uint32_t* Q, float* C, int64_t batch,
                           int64_t m_rows, int64_t n_cols, int64_t k_red, int64_t sgb) {
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t o = 0; o < batch * m_rows; ++o) {
        const int64_t b = o / m_rows, i = o % m_rows;
        float* c = C + o * n_cols;
        const uint32_t* q = Q + o * n_cols;
        for (int64_t j = 0; j < n_cols; ++j) c[j] = 0.0f;
        for (int64_t r = 0; r < k_red; ++r) {
            const uint32_t up = P[i * k_red + r];
            if ((up & kExp) == 0) continue;
            const float* g = G + b * sgb + r * n_cols;
#pragma omp simd
            for (int64_t j = 0; j < n_cols; ++j) c[j] += g[j] * as_float(mogami_dy_bits(up, q[j]));
        }
    }
}

// Exact weight gradient: C(i, j) = SUM_{b, r} G(b, i, r) * d(X(b, r, j) (x) W(i, j))/dW
//   G[b*sgb + i*sgi + r],  X[b*sxb + r*n_cols + j],  W[i*n_cols + j]
void mogami_grad_reduce(const float* G, const uint32_t* X, const uint32_t* W, float* C, int64_t batch,
                        int64_t m_rows, int64_t n_cols, int64_t k_red, int64_t sgb, int64_t sgi, int64_t sxb) {
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < m_rows; ++i) {
        float* c = C + i * n_cols;
        const uint32_t* w = W + i * n_cols;
        for (int64_t j = 0; j < n_cols; ++j) c[j] = 0.0f;
        for (int64_t b = 0; b < batch; ++b) {
            for (int64_t r = 0; r < k_red; ++r) {
                const float g = G[b * sgb + i * sgi + r];
                if (g == 0.0f) continue;  // adds only signed zeros (or NaN from Inf*0, excluded upstream)
                const uint32_t* x = X + b * sxb + r * n_cols;
#pragma omp simd
                for (int64_t j = 0; j < n_cols; ++j) c[j] += g * as_float(mogami_dy_bits(x[j], w[j]));
            }
        }
    }
}

// im2col of x [N, C, H, W] (zero padding), the layout of F.unfold: cols[n][k][l] with
// k = (c, i, j) and l = (oy, ox); transposed = 1 writes cols[n][l][k] instead (weight gradient).
void im2col(const float* x, float* cols, int64_t n_batch, int64_t channels, int64_t height, int64_t width,
            int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw,
            int64_t out_h, int64_t out_w, int transposed) {
    const int64_t k_len = channels * kh * kw, l_len = out_h * out_w;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t n = 0; n < n_batch; ++n) {
        for (int64_t k = 0; k < k_len; ++k) {
            const int64_t c = k / (kh * kw), i = (k / kw) % kh, j = k % kw;
            const float* plane = x + (n * channels + c) * height * width;
            float* out = cols + n * k_len * l_len;
            for (int64_t oy = 0; oy < out_h; ++oy) {
                const int64_t y = oy * sh - ph + i * dh;
                for (int64_t ox = 0; ox < out_w; ++ox) {
                    const int64_t xx = ox * sw - pw + j * dw;
                    const float v = (y >= 0 && y < height && xx >= 0 && xx < width) ? plane[y * width + xx] : 0.0f;
                    const int64_t l = oy * out_w + ox;
                    out[transposed ? l * k_len + k : k * l_len + l] = v;
                }
            }
        }
    }
}

// Elementwise products (tests and the scalar reference): out[i] = a[i] (x) b[i].
void mogami_mul_bits(const uint32_t* a, const uint32_t* b, uint32_t* out, int64_t n, uint32_t max_finite) {
    for (int64_t i = 0; i < n; ++i) out[i] = mogami_bits(a[i], b[i], max_finite);
}

}  // extern "C"
