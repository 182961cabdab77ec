/* Fused CPU kernels of lowbit: MLS and PoT quantizers, bf16 rounding, Mogami products and wire
 * packing of codes, all bit-exact with lowbit.numerics.reference (the definition).
 *
 * Quantizers: two passes over the input, block maxima (and a count of NaN/Inf), then one pass that
 * writes the int16 codes AND the dequantized fp32 values. Random numbers: the counter-based generator
 * r(i) = hash32(hash32(lo32(i) ^ k0) ^ hi32(i) ^ k1), so results do not depend on threads.
 * Loops are branch-free so that the compiler vectorises them; OpenMP splits them over cores.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Below this many elements one thread is faster than waking (and waiting for) a team. */
#define PARALLEL_MIN (1 << 15)

static inline uint32_t hash32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x846CA68Bu;
    x ^= x >> 16;
    return x;
}

/* The counter-based random bits of element lo32(i), with hi_key = hi32(i) ^ k1. */
static inline uint32_t counter_random(uint32_t lo, uint32_t k0, uint32_t hi_key) {
    return hash32(hash32(lo ^ k0) ^ hi_key);
}

static inline float bits_to_float(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint32_t float_to_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* 2^k for k in [-126, 127] */
static inline float pow2i(int32_t k) { return bits_to_float((uint32_t)(k + 127) << 23); }

/* floor(log2 v) for normal v >= 0; -127 for zero and subnormals */
static inline int32_t float_exponent(float v) { return (int32_t)((float_to_bits(v) >> 23) & 0xFF) - 127; }

/* Round y >= 0 (< 2^24): half to even, or floor(y + (r >> 8) / 2^24). */
static inline int32_t round_grid(float y, int stochastic, uint32_t r) {
    int32_t whole = (int32_t)y;
    int32_t frac24 = (int32_t)((y - (float)whole) * 16777216.0f);
    return stochastic ? whole + ((frac24 + (int32_t)(r >> 8)) >> 24) : (int32_t)rintf(y);
}

static inline int32_t clampi(int32_t v, int32_t lo, int32_t hi) { return v < lo ? lo : (v > hi ? hi : v); }

/* Elements [i0, i0 + count) must share the high word of their index (callers split at 2^32). */
#define FOR_COUNTER_RUNS(start, stop, body)                                                     \
    for (int64_t run = (start); run < (stop);) {                                                 \
        int64_t run_end = ((run >> 32) + 1) << 32;                                               \
        run_end = run_end < (stop) ? run_end : (stop);                                           \
        body(run, (int32_t)(run_end - run));                                                     \
        run = run_end;                                                                           \
    }

typedef struct {
    int32_t ex, mx, exmin, emax, code_max;
    float mag_max, st;
    uint32_t k0, k1;
} mls_params;

/* inv_e, sg_e: 1/(Sg St) and Sg of each element of the run (its group's).
 * With q the grid integer in binade e (q in [2^mx, 2^(mx+1)] above the underflow range), the
 * magnitude code is ((e - exmin) << mx) + q: q's leading bit lands in the exponent field, and a
 * carry to 2^(mx+1) is the next binade's code. Codes and magnitudes grow together, so saturation
 * is a min on each. */
static inline __attribute__((always_inline)) void mls_run(const float *x, const float *inv_e, const float *sg_e,
                                                         int16_t *codes, float *values, int64_t i0, int32_t count,
                                                         const mls_params *P, const int stochastic) {
    const int32_t ex = P->ex, mx = P->mx, exmin = P->exmin, emax = P->emax, code_max = P->code_max;
    const float mag_max = P->mag_max, st = P->st;
    const uint32_t lo0 = (uint32_t)i0, hi_key = (uint32_t)(i0 >> 32) ^ P->k1, k0 = P->k0;
    const float *xs = x + i0;
    int16_t *cs = codes + i0;
    float *vs = values + i0;
    for (int32_t j = 0; j < count; j++) {
        float v = xs[j];
        float ratio = fabsf(v) * inv_e[j];
        ratio = ratio < 2.0f ? ratio : 2.0f;
        int32_t e = clampi(float_exponent(ratio), exmin, emax);
        uint32_t r = stochastic ? counter_random(lo0 + (uint32_t)j, k0, hi_key) : 0u;
        int32_t q = round_grid(ratio * pow2i(mx - e), stochastic, r);
        int32_t code = ((e - exmin) << mx) + q;
        code = code < code_max ? code : code_max;
        int32_t sign = (v < 0.0f) & (code > 0);
        cs[j] = (int16_t)((sign << (ex + mx)) | code);
        float mag = (float)q * pow2i(e - mx);
        mag = mag < mag_max ? mag : mag_max;
        vs[j] = ((sign ? -mag : mag) * sg_e[j]) * st;
    }
}

static void mls_run_sr(const float *x, const float *inv_e, const float *sg_e, int16_t *c, float *v, int64_t i0,
                       int32_t n, const mls_params *P) {
    mls_run(x, inv_e, sg_e, c, v, i0, n, P, 1);
}

static void mls_run_rn(const float *x, const float *inv_e, const float *sg_e, int16_t *c, float *v, int64_t i0,
                       int32_t n, const mls_params *P) {
    mls_run(x, inv_e, sg_e, c, v, i0, n, P, 0);
}

/* Max |x| of each block of `block` elements along rows of length `len` ([rows][nblocks] out).
 * Returns the number of blocks holding NaN/Inf. The maximum is taken on the magnitude bits as
 * integers (the same order as the floats for finite values), which vectorises. */
#if defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>
#define VEC16 1
/* Rows of 16-element vectors that never straddle a block (len and block multiples of 16): each
 * block's maximum is an unsigned max over its vectors and one reduction. */
static int64_t block_absmax16(const uint32_t *u, int64_t rows, int64_t len, int64_t block, float *out) {
    const int64_t nblocks = (len + block - 1) / block;
    int64_t bad = 0;
#pragma omp parallel for schedule(static) reduction(+ : bad) if (rows * len >= PARALLEL_MIN)
    for (int64_t row = 0; row < rows; row++) {
        const uint32_t *p = u + row * len;
        const __m512i mask = _mm512_set1_epi32(0x7FFFFFFF);
        for (int64_t b = 0; b < nblocks; b++) {
            const int64_t stop = (b + 1) * block < len ? (b + 1) * block : len;
            __m512i m = _mm512_setzero_si512();
            for (int64_t j = b * block; j < stop; j += 16)
                m = _mm512_max_epu32(m, _mm512_and_si512(_mm512_loadu_si512((const void *)(p + j)), mask));
            const uint32_t mm = (uint32_t)_mm512_reduce_max_epu32(m);
            out[row * nblocks + b] = bits_to_float(mm);
            bad += mm >= 0x7F800000u;
        }
    }
    return bad;
}
#endif

int64_t lowbit_block_absmax(const float *x, int64_t rows, int64_t len, int64_t block, float *out) {
    int64_t nblocks = (len + block - 1) / block, bad = 0;
    const uint32_t *u = (const uint32_t *)(const void *)x;
#ifdef VEC16
    if (len % 16 == 0 && block % 16 == 0) return block_absmax16(u, rows, len, block, out);
#endif
#pragma omp parallel for schedule(dynamic, 16) reduction(+ : bad) if (rows * len >= PARALLEL_MIN)
    for (int64_t t = 0; t < rows * nblocks; t++) {
        int64_t row = t / nblocks, b = t % nblocks;
        int64_t start = b * block, stop = start + block < len ? start + block : len;
        const uint32_t *p = u + row * len;
        uint32_t m = 0;
        for (int64_t j = start; j < stop; j++) {
            uint32_t a = p[j] & 0x7FFFFFFFu;
            m = a > m ? a : m;
        }
        out[t] = bits_to_float(m);
        bad += m >= 0x7F800000u;
    }
    return bad;
}

static mls_params mls_make_params(float st, int ex, int mx, uint64_t seed) {
    const int32_t emax = ex >= 1 ? -1 : 0, qmax = ex >= 1 ? (2 << mx) - 1 : (1 << mx) - 1;
    const mls_params P = {ex, mx, 1 - (1 << ex), emax, (1 << (ex + mx)) - 1, (float)qmax * pow2i(emax - mx), st,
                          (uint32_t)seed, (uint32_t)(seed >> 32)};
    return P;
}

/* Elements per parallel task of the MLS quantizer: long enough that the vector loop's set-up is
 * paid once per task, not once per group (a 3x3 weight's groups hold 9 elements). */
#define MLS_CHUNK 4096

#ifdef VEC16
static void mls_quantize16(const float *x, int64_t rows, int64_t len, int64_t block, const float *inv,
                           const float *sg, const mls_params *P, int stochastic, int16_t *codes, float *values);
#endif

/* MLS elements. inv/sg: per (row, block), 1/(Sg*St) and Sg; st: tensor scale. Each task copies
 * its elements' group scales into per-element arrays, then runs one flat loop over them. */
static void mls_quantize(const float *x, int64_t rows, int64_t len, int64_t block, const float *inv,
                         const float *sg, float st, int ex, int mx, int stochastic, uint64_t seed,
                         int16_t *codes, float *values) {
    const mls_params P = mls_make_params(st, ex, mx, seed);
    const int64_t n = rows * len, nblocks = (len + block - 1) / block;
#ifdef VEC16
    if (len % 16 == 0 && block % 16 == 0) {
        mls_quantize16(x, rows, len, block, inv, sg, &P, stochastic, codes, values);
        return;
    }
#endif
#pragma omp parallel for schedule(dynamic, 4) if (n >= PARALLEL_MIN)
    for (int64_t start = 0; start < n; start += MLS_CHUNK) {
        const int64_t stop = start + MLS_CHUNK < n ? start + MLS_CHUNK : n;
        float inv_e[MLS_CHUNK], sg_e[MLS_CHUNK];
        int64_t row = start / len, col = start - row * len, b = col / block;
        for (int64_t i = start; i < stop;) { /* one group's stretch at a time */
            int64_t group_end = row * len + ((b + 1) * block < len ? (b + 1) * block : len);
            int64_t seg_end = group_end < stop ? group_end : stop;
            const float g_inv = inv[row * nblocks + b], g_sg = sg[row * nblocks + b];
            for (int64_t k = i - start; k < seg_end - start; k++) inv_e[k] = g_inv, sg_e[k] = g_sg;
            if (seg_end == group_end) {
                b += 1;
                if (b == nblocks) b = 0, row += 1;
            }
            i = seg_end;
        }
#define MLS_BODY(i0, cnt) \
    (stochastic ? mls_run_sr : mls_run_rn)(x, inv_e + ((i0) - start), sg_e + ((i0) - start), codes, values, i0, cnt, &P)
        FOR_COUNTER_RUNS(start, stop, MLS_BODY)
#undef MLS_BODY
    }
}

#ifdef VEC16
#define LANES _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)

static inline __m512i hash32_v(__m512i x) {
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32(0x7FEB352D));
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 15));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32((int32_t)0x846CA68Bu));
    return _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
}

/* mls_run on 16 elements of one group (inverse scale g_inv, scale g_sg): the same operations in
 * the same order, written with AVX-512 intrinsics so that no per-element scale arrays are needed. */
static inline __attribute__((always_inline)) void mls_vec16(const float *xs, int16_t *cs, float *vs, __m512i idx,
                                                           uint32_t hi_key, __m512 g_inv, __m512 g_sg,
                                                           const mls_params *P, const int stochastic) {
    const __m512i mx = _mm512_set1_epi32(P->mx), exmin = _mm512_set1_epi32(P->exmin);
    const __m512i bias = _mm512_set1_epi32(127);
    const __m512 v = _mm512_loadu_ps(xs);
    __m512 ratio = _mm512_min_ps(_mm512_mul_ps(_mm512_abs_ps(v), g_inv), _mm512_set1_ps(2.0f));
    __m512i e = _mm512_sub_epi32(_mm512_srli_epi32(_mm512_castps_si512(ratio), 23), bias); /* ratio >= 0 */
    e = _mm512_min_epi32(_mm512_max_epi32(e, exmin), _mm512_set1_epi32(P->emax));
    const __m512 y = _mm512_mul_ps(ratio, _mm512_castsi512_ps(_mm512_slli_epi32(
                                              _mm512_add_epi32(_mm512_sub_epi32(mx, e), bias), 23)));
    __m512i q;
    if (stochastic) {
        const __m512i r = hash32_v(_mm512_xor_si512(hash32_v(_mm512_xor_si512(idx, _mm512_set1_epi32((int32_t)P->k0))),
                                                    _mm512_set1_epi32((int32_t)hi_key)));
        const __m512i whole = _mm512_cvttps_epi32(y);
        const __m512i frac24 = _mm512_cvttps_epi32(
            _mm512_mul_ps(_mm512_sub_ps(y, _mm512_cvtepi32_ps(whole)), _mm512_set1_ps(16777216.0f)));
        q = _mm512_add_epi32(whole, _mm512_srai_epi32(_mm512_add_epi32(frac24, _mm512_srli_epi32(r, 8)), 24));
    } else {
        q = _mm512_cvt_roundps_epi32(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); /* rintf: half to even */
    }
    __m512i code = _mm512_add_epi32(_mm512_sllv_epi32(_mm512_sub_epi32(e, exmin), mx), q);
    code = _mm512_min_epi32(code, _mm512_set1_epi32(P->code_max));
    const __mmask16 sign = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ) &
                           _mm512_cmpgt_epi32_mask(code, _mm512_setzero_si512());
    const __m512i signed_code = _mm512_mask_or_epi32(code, sign, code, _mm512_set1_epi32(1 << (P->ex + P->mx)));
    _mm256_storeu_si256((__m256i *)(void *)cs, _mm512_cvtepi32_epi16(signed_code));
    __m512 mag = _mm512_mul_ps(_mm512_cvtepi32_ps(q), _mm512_castsi512_ps(_mm512_slli_epi32(
                                                      _mm512_add_epi32(_mm512_sub_epi32(e, mx), bias), 23)));
    mag = _mm512_min_ps(mag, _mm512_set1_ps(P->mag_max));
    mag = _mm512_castsi512_ps(_mm512_mask_xor_epi32(_mm512_castps_si512(mag), sign, _mm512_castps_si512(mag),
                                                    _mm512_set1_epi32((int32_t)0x80000000u)));
    _mm512_storeu_ps(vs, _mm512_mul_ps(_mm512_mul_ps(mag, g_sg), _mm512_set1_ps(P->st)));
}

/* Rows of 2-D operands with len and block multiples of 16 (no vector straddles a group or a
 * 2^32 counter run): one group scale pair per block, broadcast. */
static inline __attribute__((always_inline)) void mls_rows16(const float *x, int64_t row0, int64_t row1, int64_t len,
                                                            int64_t block, const float *inv, const float *sg,
                                                            int16_t *codes, float *values, const mls_params *P,
                                                            const int stochastic) {
    const int64_t nblocks = (len + block - 1) / block;
    for (int64_t row = row0; row < row1; row++)
        for (int64_t b = 0; b < nblocks; b++) {
            const __m512 g_inv = _mm512_set1_ps(inv[row * nblocks + b]), g_sg = _mm512_set1_ps(sg[row * nblocks + b]);
            const int64_t stop = row * len + ((b + 1) * block < len ? (b + 1) * block : len);
            for (int64_t i = row * len + b * block; i < stop; i += 16)
                mls_vec16(x + i, codes + i, values + i, _mm512_add_epi32(_mm512_set1_epi32((int32_t)i), LANES),
                          (uint32_t)(i >> 32) ^ P->k1, g_inv, g_sg, P, stochastic);
        }
}

static void mls_quantize16(const float *x, int64_t rows, int64_t len, int64_t block, const float *inv,
                           const float *sg, const mls_params *P, int stochastic, int16_t *codes, float *values) {
    const int64_t step = len >= MLS_CHUNK ? 1 : MLS_CHUNK / len; /* rows per task */
#pragma omp parallel for schedule(dynamic, 4) if (rows * len >= PARALLEL_MIN)
    for (int64_t row0 = 0; row0 < rows; row0 += step) {
        const int64_t row1 = row0 + step < rows ? row0 + step : rows;
        if (stochastic)
            mls_rows16(x, row0, row1, len, block, inv, sg, codes, values, P, 1);
        else
            mls_rows16(x, row0, row1, len, block, inv, sg, codes, values, P, 0);
    }
}

/* The operand x^T of x [B][R][C] read in place (C a multiple of 16): the logical operand is the
 * [B*C][R] matrix of the layers' transposed views, grouped along R in blocks of `block`.
 * Block maxima as lowbit_block_absmax gives them for the contiguous copy: out [B*C][nblocks]. Rows
 * are read in order, 256 columns at a time (16 vector maxima held while a block's rows stream by). */
static int64_t cols_block_absmax(const uint32_t *u, int64_t B, int64_t R, int64_t C, int64_t block, float *out) {
    const int64_t nb = (R + block - 1) / block;
    int64_t bad = 0;
#pragma omp parallel for schedule(static) reduction(+ : bad) if (B * R * C >= PARALLEL_MIN)
    for (int64_t t = 0; t < B * nb; t++) {
        const int64_t b = t / nb, blk = t % nb, r0 = blk * block, r1 = r0 + block < R ? r0 + block : R;
        const uint32_t *rows = u + b * R * C;
        for (int64_t c0 = 0; c0 < C; c0 += 256) {
            const int nv = (int)((C - c0 < 256 ? C - c0 : 256) / 16);
            __m512i m[16];
            for (int v = 0; v < nv; v++) m[v] = _mm512_setzero_si512();
            for (int64_t r = r0; r < r1; r++)
                for (int v = 0; v < nv; v++)
                    m[v] = _mm512_max_epu32(m[v], _mm512_and_si512(_mm512_loadu_si512((const void *)(rows + r * C + c0 + 16 * v)),
                                                                   _mm512_set1_epi32(0x7FFFFFFF)));
            for (int v = 0; v < nv; v++) {
                uint32_t lane[16];
                _mm512_storeu_si512((void *)lane, m[v]);
                for (int j = 0; j < 16; j++) {
                    out[(b * C + c0 + 16 * v + j) * nb + blk] = bits_to_float(lane[j]);
                    bad += lane[j] >= 0x7F800000u;
                }
            }
        }
    }
    return bad;
}

/* Elements of rows t in [t0, t1) of x viewed [B*R][C]; inv_t, sg_t: each group's scales laid out
 * [B][nblocks][C], so that a row's 16 neighbouring columns load theirs as one vector. Element
 * (b, c, r) of the logical operand has the counter (b C + c) R + r (below 2^32). */
static inline __attribute__((always_inline)) void cols_rows16(const float *x, int64_t R, int64_t C, int64_t block,
                                                             const float *inv_t, const float *sg_t, int16_t *codes,
                                                             float *values, const mls_params *P, int64_t t0,
                                                             int64_t t1, const int stochastic) {
    const int64_t nb = (R + block - 1) / block;
    const __m512i lane_step = _mm512_mullo_epi32(LANES, _mm512_set1_epi32((int32_t)R));
    for (int64_t t = t0; t < t1; t++) {
        const int64_t b = t / R, r = t % R, g = (b * nb + r / block) * C;
        for (int64_t c = 0; c < C; c += 16) {
            const __m512i idx = _mm512_add_epi32(_mm512_set1_epi32((int32_t)(uint32_t)((b * C + c) * R + r)), lane_step);
            mls_vec16(x + t * C + c, codes + t * C + c, values + t * C + c, idx, P->k1, _mm512_loadu_ps(inv_t + g + c),
                      _mm512_loadu_ps(sg_t + g + c), P, stochastic);
        }
    }
}

static void mls_cols_quantize16(const float *x, int64_t B, int64_t R, int64_t C, int64_t block, const float *inv_t,
                                const float *sg_t, const mls_params *P, int stochastic, int16_t *codes,
                                float *values) {
    const int64_t step = C >= MLS_CHUNK ? 1 : MLS_CHUNK / C; /* rows per task */
#pragma omp parallel for schedule(dynamic, 4) if (B * R * C >= PARALLEL_MIN)
    for (int64_t t0 = 0; t0 < B * R; t0 += step) {
        const int64_t t1 = t0 + step < B * R ? t0 + step : B * R;
        if (stochastic)
            cols_rows16(x, R, C, block, inv_t, sg_t, codes, values, P, t0, t1, 1);
        else
            cols_rows16(x, R, C, block, inv_t, sg_t, codes, values, P, t0, t1, 0);
    }
}
#endif

/* PoT elements: z = |x| 2^-s (two exact steps, 2^half then 2^rest), codes 0..max_code. */
typedef struct {
    int32_t max_code;
    float step1, step2, scale;
    uint32_t k0, k1;
} pot_params;

static inline __attribute__((always_inline)) void pot_run(const float *x, int16_t *codes, float *values,
                                                         int64_t i0, int32_t count, const pot_params *P,
                                                         const int stochastic) {
    const int32_t max_code = P->max_code, lowest = 1 - P->max_code;
    const float step1 = P->step1, step2 = P->step2, scale = P->scale, below_scale = pow2i(-lowest);
    const uint32_t lo0 = (uint32_t)i0, hi_key = (uint32_t)(i0 >> 32) ^ P->k1, k0 = P->k0;
    const float *xs = x + i0;
    int16_t *cs = codes + i0;
    float *vs = values + i0;
    for (int32_t j = 0; j < count; j++) {
        float v = xs[j];
        float z = (fabsf(v) * step1) * step2;
        int32_t k = clampi(float_exponent(z), lowest - 1, 0);
        int32_t below = k < lowest;
        float p = below ? z * below_scale : z * pow2i(-k) - 1.0f;
        uint32_t r = stochastic ? counter_random(lo0 + (uint32_t)j, k0, hi_key) : 0u;
        int32_t up = stochastic ? ((float)(int32_t)(r >> 8) < p * 16777216.0f) : (p >= 0.5f);
        int32_t code = (below ? 0 : k + max_code) + up;
        code = k >= 0 ? max_code : code;
        int32_t sign = (v < 0.0f) & (code > 0);
        cs[j] = (int16_t)((sign << 4) | code);
        uint32_t mag_bits = code == 0 ? 0u : (uint32_t)(code - max_code + 127) << 23;
        vs[j] = bits_to_float(mag_bits | ((uint32_t)sign << 31)) * scale;
    }
}

#ifdef VEC16
/* pot_run on 16 elements, on the bit pattern of z = |x| 2^-s (the same two exact steps). With e the
 * biased exponent of z, on the grid (lowest <= e - 127 < 0) p = mantissa / 2^23 exactly, so
 * "p >= 0.5" is mantissa bit 22 and "r24 < p 2^24" is r24 < 2 mantissa; below the grid the scalar
 * comparison stays, p 2^24 = z 2^(24 - lowest) being exact; e - 127 >= 0 saturates. The same codes
 * and values as pot_run for every finite input (compared on all 2^32 bit patterns at eight scale
 * exponents from -126 to 127 when written; nearest runs 1.9x faster, stochastic as fast: the hash dominates). */
static inline __attribute__((always_inline)) void pot_vec16(const float *xs, int16_t *cs, float *vs, uint32_t lo,
                                                            uint32_t hi_key, const pot_params *P, const int stochastic) {
    const int32_t max_code = P->max_code, lowest = 1 - max_code;
    const __m512i v = _mm512_loadu_si512((const void *)xs);
    const __m512 z = _mm512_mul_ps(_mm512_mul_ps(_mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(0x7FFFFFFF))),
                                                 _mm512_set1_ps(P->step1)), _mm512_set1_ps(P->step2));
    const __m512i zb = _mm512_castps_si512(z);
    /* biased exponent of z: e - 127 = k before clamping; below the grid: e - 127 < lowest */
    const __m512i e = _mm512_srli_epi32(zb, 23);
    __m512i code;
    if (stochastic) {
        const __m512i idx = _mm512_add_epi32(_mm512_set1_epi32((int32_t)lo), LANES);
        const __m512i r24 = _mm512_srli_epi32(hash32_v(_mm512_xor_si512(
            hash32_v(_mm512_xor_si512(idx, _mm512_set1_epi32((int32_t)P->k0))), _mm512_set1_epi32((int32_t)hi_key))), 8);
        /* on the grid: p 2^24 = 2 * mantissa (exact); below: p 2^24 = z 2^(24 - lowest) (exact) */
        const __mmask16 up_grid = _mm512_cmplt_epu32_mask(
            r24, _mm512_slli_epi32(_mm512_and_si512(zb, _mm512_set1_epi32(0x7FFFFF)), 1));
        const __mmask16 up_below = _mm512_cmp_ps_mask(_mm512_cvtepi32_ps(r24),
                                                      _mm512_mul_ps(z, _mm512_set1_ps(pow2i(24 - lowest))), _CMP_LT_OQ);
        const __mmask16 below = _mm512_cmplt_epi32_mask(e, _mm512_set1_epi32(127 + lowest));
        code = _mm512_add_epi32(e, _mm512_set1_epi32(max_code - 127));
        code = _mm512_mask_add_epi32(code, up_grid, code, _mm512_set1_epi32(1));
        code = _mm512_mask_mov_epi32(code, below, _mm512_maskz_set1_epi32(up_below, 1));
    } else {
        /* linear-domain nearest: up when z >= 1.5 2^k, i.e. mantissa bit 22 (the add carries it into the
         * exponent); below the grid everything from 2^(lowest - 1) rounds up to 2^lowest */
        code = _mm512_add_epi32(_mm512_srli_epi32(_mm512_add_epi32(zb, _mm512_set1_epi32(0x400000)), 23),
                                _mm512_set1_epi32(max_code - 127));
        code = _mm512_mask_max_epi32(code, _mm512_cmpge_epi32_mask(zb, _mm512_set1_epi32((127 + lowest - 1) << 23)),
                                     code, _mm512_set1_epi32(1));
    }
    code = _mm512_min_epi32(_mm512_max_epi32(code, _mm512_setzero_si512()), _mm512_set1_epi32(max_code));
    const __mmask16 nonzero = _mm512_test_epi32_mask(code, code);
    const __m512i sign = _mm512_maskz_srli_epi32(nonzero, v, 31); /* -0.0 keeps no sign: code 0 */
    _mm256_storeu_si256((__m256i *)(void *)cs, _mm512_cvtepi32_epi16(_mm512_or_si512(code, _mm512_slli_epi32(sign, 4))));
    const __m512i mag = _mm512_maskz_slli_epi32(nonzero, _mm512_add_epi32(code, _mm512_set1_epi32(127 - max_code)), 23);
    _mm512_storeu_ps(vs, _mm512_mul_ps(_mm512_castsi512_ps(_mm512_or_si512(mag, _mm512_slli_epi32(sign, 31))),
                                       _mm512_set1_ps(P->scale)));
}
#endif

/* A counter run [i0, i0 + count): 16-element vectors where AVX-512 is there, pot_run for the rest. */
static inline __attribute__((always_inline)) void pot_span(const float *x, int16_t *codes, float *values, int64_t i0,
                                                          int32_t count, const pot_params *P, const int stochastic) {
    int32_t done = 0;
#ifdef VEC16
    const uint32_t hi_key = (uint32_t)(i0 >> 32) ^ P->k1;
    for (; done + 16 <= count; done += 16)
        pot_vec16(x + i0 + done, codes + i0 + done, values + i0 + done, (uint32_t)(i0 + done), hi_key, P, stochastic);
#endif
    if (done < count) pot_run(x, codes, values, i0 + done, count - done, P, stochastic);
}

static void pot_run_sr(const float *x, int16_t *c, float *v, int64_t i0, int32_t n, const pot_params *P) {
    pot_span(x, c, v, i0, n, P, 1);
}

static void pot_run_rn(const float *x, int16_t *c, float *v, int64_t i0, int32_t n, const pot_params *P) {
    pot_span(x, c, v, i0, n, P, 0);
}

void lowbit_pot_quantize(const float *x, int64_t n, int32_t s, int32_t half, int max_code,
                         int stochastic, uint64_t seed, int16_t *codes, float *values) {
    const pot_params P = {max_code, pow2i(half), pow2i(-s - half), pow2i(s), (uint32_t)seed, (uint32_t)(seed >> 32)};
    const int64_t chunk = 1 << 14;
#pragma omp parallel for schedule(dynamic, 4) if (n >= PARALLEL_MIN)
    for (int64_t start = 0; start < n; start += chunk) {
        int64_t stop = start + chunk < n ? start + chunk : n;
#define POT_BODY(i0, cnt) (stochastic ? pot_run_sr : pot_run_rn)(x, codes, values, i0, cnt, &P)
        FOR_COUNTER_RUNS(start, stop, POT_BODY)
#undef POT_BODY
    }
}

/* s = ceil(log2(clip * max|x|)) (the product in fp32), clipped to [-126, 127]; -126 for zero. */
static int32_t pot_scale_exponent(float absmax, float clip) {
    float m = absmax * clip;
    if (m == 0.0f) return -126;
    int e;
    float man = frexpf(m, &e); /* m = man 2^e, man in [0.5, 1) */
    int32_t s = man == 0.5f ? e - 1 : e;
    return clampi(s, -126, 127);
}

/* The whole PoT quantizer in one call: max |x|, the scale exponent (*s_out) and the elements.
 * Returns -1 when x holds NaN/Inf (nothing else written), else 0. */
int lowbit_pot(const float *x, int64_t n, float clip, int max_code, int stochastic, uint64_t seed, int32_t *s_out,
               int16_t *codes, float *values) {
    const int64_t chunk = 1 << 16;
    uint32_t m = 0;
    int64_t bad = 0;
#pragma omp parallel for schedule(static) reduction(max : m) reduction(+ : bad) if (n >= PARALLEL_MIN)
    for (int64_t start = 0; start < n; start += chunk) {
        const int64_t stop = start + chunk < n ? start + chunk : n;
        const uint32_t *u = (const uint32_t *)(const void *)x;
        uint32_t cm = 0;
        for (int64_t i = start; i < stop; i++) {
            uint32_t a = u[i] & 0x7FFFFFFFu;
            cm = a > cm ? a : cm;
        }
        m = cm > m ? cm : m;
        bad += cm >= 0x7F800000u;
    }
    if (bad) return -1;
    const int32_t s = pot_scale_exponent(bits_to_float(m), clip);
    const int32_t neg = -s, half = (neg - (neg & 1)) / 2; /* floor(-s / 2) */
    lowbit_pot_quantize(x, n, s, half, max_code, stochastic, seed, codes, values);
    *s_out = s;
    return 0;
}

/* 8 x 8 transposes of a view read along r (sr == 1): block rows are 8 consecutive r of one c,
 * written as 8 consecutive c of one r. SIMD where the compiler targets it, else element copies. */
#if defined(__AVX__)
#include <immintrin.h>
static inline void transpose8_f32(const float *src, int64_t sc, float *dst, int64_t C) {
    __m256 r[8], t[8], u[8];
    for (int k = 0; k < 8; k++) r[k] = _mm256_loadu_ps(src + k * sc);
    for (int k = 0; k < 8; k += 2) t[k] = _mm256_unpacklo_ps(r[k], r[k + 1]), t[k + 1] = _mm256_unpackhi_ps(r[k], r[k + 1]);
    for (int k = 0; k < 8; k += 4) {
        u[k] = _mm256_shuffle_ps(t[k], t[k + 2], 0x44), u[k + 1] = _mm256_shuffle_ps(t[k], t[k + 2], 0xEE);
        u[k + 2] = _mm256_shuffle_ps(t[k + 1], t[k + 3], 0x44), u[k + 3] = _mm256_shuffle_ps(t[k + 1], t[k + 3], 0xEE);
    }
    for (int k = 0; k < 4; k++) {
        _mm256_storeu_ps(dst + k * C, _mm256_permute2f128_ps(u[k], u[k + 4], 0x20));
        _mm256_storeu_ps(dst + (k + 4) * C, _mm256_permute2f128_ps(u[k], u[k + 4], 0x31));
    }
}
#else
static inline void transpose8_f32(const float *src, int64_t sc, float *dst, int64_t C) {
    for (int j = 0; j < 8; j++)
        for (int k = 0; k < 8; k++) dst[j * C + k] = src[k * sc + j];
}
#endif

#if defined(__SSE2__)
#include <emmintrin.h>
static inline void transpose8_i16(const int16_t *src, int64_t sc, int16_t *dst, int64_t C) {
    __m128i a[8], b[8], c[8];
    for (int k = 0; k < 8; k++) a[k] = _mm_loadu_si128((const __m128i *)(const void *)(src + k * sc));
    for (int k = 0; k < 8; k += 2) b[k] = _mm_unpacklo_epi16(a[k], a[k + 1]), b[k + 1] = _mm_unpackhi_epi16(a[k], a[k + 1]);
    for (int k = 0; k < 8; k += 4) {
        c[k] = _mm_unpacklo_epi32(b[k], b[k + 2]), c[k + 1] = _mm_unpackhi_epi32(b[k], b[k + 2]);
        c[k + 2] = _mm_unpacklo_epi32(b[k + 1], b[k + 3]), c[k + 3] = _mm_unpackhi_epi32(b[k + 1], b[k + 3]);
    }
    for (int k = 0; k < 4; k++) {
        _mm_storeu_si128((__m128i *)(void *)(dst + 2 * k * C), _mm_unpacklo_epi64(c[k], c[k + 4]));
        _mm_storeu_si128((__m128i *)(void *)(dst + (2 * k + 1) * C), _mm_unpackhi_epi64(c[k], c[k + 4]));
    }
}
#else
static inline void transpose8_i16(const int16_t *src, int64_t sc, int16_t *dst, int64_t C) {
    for (int j = 0; j < 8; j++)
        for (int k = 0; k < 8; k++) dst[j * C + k] = src[k * sc + j];
}
#endif

/* Copy the strided view [B][R][C] (element strides sb, sr, sc) into the contiguous out. A view
 * whose last dim is not contiguous (a transpose) is copied in GATHER_TILE x GATHER_TILE tiles,
 * so that the lines a tile touches stay in L1 until all their elements are used; inside a tile
 * a view read along r (sr == 1: every transpose the layers make) moves in 8 x 8 register
 * transposes, other strides element by element along the side with the shorter stride. */
#define GATHER_TILE 32
#define GATHER_KERNEL(NAME, T, TRANSPOSE8)                                                                \
    void NAME(const T *x, int64_t B, int64_t R, int64_t C, int64_t sb, int64_t sr, int64_t sc, T *out) {  \
        const int64_t rt = (R + GATHER_TILE - 1) / GATHER_TILE;                                          \
        _Pragma("omp parallel for schedule(static) if (B * R * C >= PARALLEL_MIN)")                     \
        for (int64_t t = 0; t < B * rt; t++) {                                                            \
            const int64_t b = t / rt, r0 = (t % rt) * GATHER_TILE;                                        \
            const int64_t r1 = r0 + GATHER_TILE < R ? r0 + GATHER_TILE : R;                               \
            const T *src = x + b * sb;                                                                    \
            T *dst = out + b * R * C;                                                                     \
            if (sc == 1) {                                                                                \
                for (int64_t r = r0; r < r1; r++) memcpy(dst + r * C, src + r * sr, (size_t)C * sizeof(T)); \
                continue;                                                                                 \
            }                                                                                             \
            for (int64_t c0 = 0; c0 < C; c0 += GATHER_TILE) {                                             \
                const int64_t c1 = c0 + GATHER_TILE < C ? c0 + GATHER_TILE : C;                           \
                int64_t r8 = r0, c8 = c0; /* [r0, r8) x [c0, c8): done by 8 x 8 blocks */                 \
                if (sr == 1) {                                                                            \
                    r8 = r0 + ((r1 - r0) & ~(int64_t)7), c8 = c0 + ((c1 - c0) & ~(int64_t)7);             \
                    for (int64_t r = r0; r < r8; r += 8)                                                  \
                        for (int64_t c = c0; c < c8; c += 8) TRANSPOSE8(src + r + c * sc, sc, dst + r * C + c, C); \
                }                                                                                         \
                for (int64_t r = r0; r < r1; r++)                                                         \
                    for (int64_t c = (r < r8 ? c8 : c0); c < c1; c++) dst[r * C + c] = src[r * sr + c * sc]; \
            }                                                                                             \
        }                                                                                                 \
    }

GATHER_KERNEL(lowbit_gather_f32, float, transpose8_f32)
GATHER_KERNEL(lowbit_gather_i16, int16_t, transpose8_i16)

/* fp32 -> bf16 bit patterns: nearest even, or stochastic (add r >> 16 below the cut);
 * saturates at the largest finite bf16. Returns the number of NaN/Inf inputs. */
int64_t lowbit_bf16_round(const float *x, int64_t n, int stochastic, uint64_t seed, int16_t *codes, float *values) {
    const uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    const int64_t chunk = 1 << 14;
    int64_t bad = 0;
#pragma omp parallel for schedule(dynamic, 4) reduction(+ : bad) if (n >= PARALLEL_MIN)
    for (int64_t start = 0; start < n; start += chunk) {
        int64_t stop = start + chunk < n ? start + chunk : n;
        for (int64_t run = start; run < stop;) {
            int64_t run_end = ((run >> 32) + 1) << 32;
            run_end = run_end < stop ? run_end : stop;
            const uint32_t lo0 = (uint32_t)run, hi_key = (uint32_t)(run >> 32) ^ k1;
            const int32_t count = (int32_t)(run_end - run);
            int64_t nonfinite = 0;
            for (int32_t j = 0; j < count; j++) {
                uint32_t bits = float_to_bits(x[run + j]);
                uint32_t mag = bits & 0x7FFFFFFFu;
                nonfinite += mag >= 0x7F800000u;
                uint32_t add = stochastic ? counter_random(lo0 + (uint32_t)j, k0, hi_key) >> 16
                                          : 0x7FFFu + ((mag >> 16) & 1u);
                uint32_t top = (mag + add) >> 16;
                top = top > 0x7F7Fu ? 0x7F7Fu : top;
                uint32_t out = ((bits >> 16) & 0x8000u) | top;
                codes[run + j] = (int16_t)out;
                values[run + j] = bits_to_float(out << 16);
            }
            bad += nonfinite;
            run = run_end;
        }
    }
    return bad;
}

/* Mogami products on bit patterns (width 32: fp32, 16: bf16): the rule of lowbit.numerics.reference.mogami_mul
 * (the definition) on finite operands. Returns the number of operands with an all-ones exponent (NaN/Inf);
 * the output is then invalid and lowbit.mogami_mul raises, so this loop skips the definition's quiet-NaN case.
 * csrc/mogami_gemm.cpp (mogami_bits) spells the same rule for the software backend's GEMMs: the two stay
 * separate because they are built into two libraries (this C quantizer library and that C++ one) from
 * one source file each, and this loop runs on native 16-bit lanes for bf16 while that one is inlined into
 * the GEMM's fp32-pattern vector loops with a run-time saturation value; a shared header would join both
 * build keys and package data, and the GEMM would need its speed re-measured. Both are tested equal to the
 * definition (tests/numerics/test_mogami.py, tests/backends/test_software.py). */
#define MOGAMI_KERNEL(NAME, T, ONE, MIN_NORMAL, MAX_FINITE, SIGN, EXP_ALL)                           \
    int64_t NAME(const T *a, const T *b, int64_t n, T *out) {                                           \
        int64_t bad = 0;                                                                                \
        _Pragma("omp parallel for schedule(dynamic, 16384) reduction(+ : bad) if (n >= PARALLEL_MIN)")                         \
        for (int64_t i = 0; i < n; i++) {                                                               \
            uint32_t ma = a[i] & (SIGN - 1u), mb = b[i] & (SIGN - 1u);                                  \
            bad += (ma >= EXP_ALL) + (mb >= EXP_ALL);                                                   \
            uint32_t sum = ma + mb; /* < 2^32: each magnitude is below the sign bit */                  \
            uint32_t zero = (ma < MIN_NORMAL) | (mb < MIN_NORMAL) | (sum < ONE + MIN_NORMAL);           \
            uint32_t mag = sum - ONE > MAX_FINITE ? MAX_FINITE : sum - ONE;                             \
            mag = zero ? 0u : mag;                                                                      \
            out[i] = (T)(((a[i] ^ b[i]) & SIGN) | mag);                                                 \
        }                                                                                               \
        return bad;                                                                                     \
    }

MOGAMI_KERNEL(lowbit_mogami_mul_f32, uint32_t, 0x3F800000u, 0x00800000u, 0x7F7FFFFFu, 0x80000000u, 0x7F800000u)
MOGAMI_KERNEL(lowbit_mogami_mul_bf16, uint16_t, 0x3F80u, 0x0080u, 0x7F7Fu, 0x8000u, 0x7F80u)

/* Element codes -> wire lanes of 4, 8 or 16 bits (lane 0 lowest, little-endian bytes), one pass.
 * `out` receives ceil(n * lane_bits / 8) bytes. Returns how many codes do not fit `code_bits`. */
int64_t lowbit_pack_codes(const uint16_t *codes, int64_t n, int lane_bits, int code_bits, uint8_t *out) {
    const uint32_t limit = code_bits >= 16 ? 0x10000u : (1u << code_bits);
    const int64_t chunk = 1 << 16; /* even, so 4-bit pairs never straddle chunks */
    int64_t bad = 0;
#pragma omp parallel for schedule(dynamic, 4) reduction(+ : bad) if (n >= PARALLEL_MIN)
    for (int64_t start = 0; start < n; start += chunk) {
        int64_t stop = start + chunk < n ? start + chunk : n;
        int64_t over = 0;
        if (lane_bits == 16) {
            uint16_t *o = (uint16_t *)(void *)out;
            for (int64_t i = start; i < stop; i++) {
                over += codes[i] >= limit;
                o[i] = codes[i];
            }
        } else if (lane_bits == 8) {
            for (int64_t i = start; i < stop; i++) {
                over += codes[i] >= limit;
                out[i] = (uint8_t)codes[i];
            }
        } else {
            int64_t pairs = (stop - start) / 2;
            const uint16_t *c = codes + start;
            uint8_t *o = out + start / 2;
            for (int64_t j = 0; j < pairs; j++) {
                over += (c[2 * j] >= limit) + (c[2 * j + 1] >= limit);
                o[j] = (uint8_t)((c[2 * j] & 0xF) | ((c[2 * j + 1] & 0xF) << 4));
            }
            if ((stop - start) & 1) {
                over += c[2 * pairs] >= limit;
                o[pairs] = (uint8_t)(c[2 * pairs] & 0xF);
            }
        }
        bad += over;
    }
    return bad;
}

/* Scale code, Sg and 1/(Sg St) of groups with maxima gmax[0, n) under the tensor scale st: the
 * group's ratio gmax / st rounded UP to <eg, mg>. Branch-free so that it vectorises: a subnormal
 * ratio is scaled by 2^64 (exact) to read its significand; 2^k is pow2_any's value (subnormal
 * for k in [-149, -127], 0 below). */
static void mls_group_scales(const float *gmax, int64_t n, float st, int eg, int mg, int16_t *codes, float *sg,
                             float *inv) {
    const int32_t low = 1 - (1 << eg), one = 1 << mg;
    const float div = st > 0.0f ? st : 1.0f, unit = (float)(1 << mg);
    for (int64_t t = 0; t < n; t++) {
        float ratio = gmax[t] / div;
        uint32_t u = float_to_bits(ratio);
        int32_t sub = (u >> 23) == 0;
        uint32_t w = sub ? float_to_bits(ratio * 18446744073709551616.0f) : u; /* ratio 2^64 */
        int32_t exp = (int32_t)(w >> 23) - 127 - (sub ? 64 : 0);
        uint32_t m24 = (w & 0x7FFFFFu) | 0x800000u; /* ratio = m24 2^(exp - 23) */
        int32_t q = (int32_t)((m24 + (1u << (23 - mg)) - 1u) >> (23 - mg)); /* ceil to mg fraction bits */
        int32_t carry = q == (2 << mg);
        q = carry ? one : q;
        exp += carry;
        int32_t floor_it = (exp < low) | (ratio == 0.0f);
        exp = floor_it ? low : exp;
        q = floor_it ? one : q;
        int32_t code = ((-exp) << mg) | (q - one);
        codes[t] = (int16_t)code;
        float frac = 1.0f + (float)(code & (one - 1)) / unit;
        int32_t k = -(code >> mg); /* = exp */
        uint32_t sub_bits = 1u << ((k + 149) & 31);
        float p2 = k >= -126 ? pow2i(k >= -126 ? k : 0) : (k >= -149 ? bits_to_float(sub_bits) : 0.0f);
        float g = frac * p2;
        float iv = 1.0f / (g * st);
        sg[t] = g;
        inv[t] = iv < 3.4028234663852886e38f ? iv : 3.4028234663852886e38f;
    }
}

/* MLS group scales from block maxima bmax [P][Q] (4-D: [N][C]; 2-D: [rows][nblocks]).
 * group: 0 nc, 1 n, 2 c, 3 none. Writes St, the scale codes in the QTensor layout
 * [P|1][Q|1], and per (p, q) block Sg and 1/(Sg St) (clamped to the largest float).
 * Returns -2 when out of memory. */
static int mls_scales(const float *bmax, int64_t P, int64_t Q, int group, int eg, int mg, float *st_out,
                      int16_t *scale_codes, float *sg_full, float *inv_full) {
    const int keep_p = group == 0 || group == 1, keep_q = group == 0 || group == 2;
    const int64_t gp = keep_p ? P : 1, gq = keep_q ? Q : 1;
    const uint32_t *bits = (const uint32_t *)(const void *)bmax; /* maxima >= 0: integer order is float order */
    uint32_t stb = 0;
    for (int64_t t = 0; t < P * Q; t++) stb = bits[t] > stb ? bits[t] : stb;
    const float st = bits_to_float(stb);
    *st_out = st;
    if (keep_p && keep_q) {
        mls_group_scales(bmax, P * Q, st, eg, mg, scale_codes, sg_full, inv_full);
        return 0;
    }
    float *tmp = (float *)malloc((size_t)(3 * gp * gq) * sizeof(float));
    if (tmp == NULL) return -2;
    float *gmax = tmp, *sg = tmp + gp * gq, *inv = tmp + 2 * gp * gq;
    for (int64_t t = 0; t < gp * gq; t++) gmax[t] = 0.0f;
    for (int64_t p = 0; p < P; p++) /* each group's maximum over the blocks it spans */
        for (int64_t q = 0; q < Q; q++) {
            float *m = gmax + (keep_p ? p : 0) * gq + (keep_q ? q : 0);
            *m = bmax[p * Q + q] > *m ? bmax[p * Q + q] : *m;
        }
    mls_group_scales(gmax, gp * gq, st, eg, mg, scale_codes, sg, inv);
    for (int64_t p = 0; p < P; p++)
        for (int64_t q = 0; q < Q; q++) {
            const int64_t g = (keep_p ? p : 0) * gq + (keep_q ? q : 0);
            sg_full[p * Q + q] = sg[g];
            inv_full[p * Q + q] = inv[g];
        }
    free(tmp);
    return 0;
}

/* The whole MLS quantizer in one call: block maxima, group scales, then the elements. The blocks
 * form the grid [P][Q] ([N][C] for 4-D sources, [rows][nblocks] for 2-D). Returns -1 when x holds
 * NaN/Inf (nothing else written), -2 when out of memory, else 0. */
int lowbit_mls(const float *x, int64_t rows, int64_t len, int64_t block, int64_t P, int64_t Q, int group, int eg,
               int mg, int ex, int mx, int stochastic, uint64_t seed, float *st_out, int16_t *scale_codes,
               int16_t *codes, float *values) {
    float *scratch = (float *)malloc((size_t)(3 * P * Q) * sizeof(float));
    if (scratch == NULL) return -2;
    float *bmax = scratch, *sg = scratch + P * Q, *inv = scratch + 2 * P * Q;
    int status = -1;
    if (lowbit_block_absmax(x, rows, len, block, bmax) == 0) {
        status = mls_scales(bmax, P, Q, group, eg, mg, st_out, scale_codes, sg, inv);
        if (status == 0) mls_quantize(x, rows, len, block, inv, sg, *st_out, ex, mx, stochastic, seed, codes, values);
    }
    free(scratch);
    return status;
}

/* lowbit_mls of the logical operand [B*C][R] (groups of `block` along R) that x [B][R][C] holds
 * transposed, read in place: the same St, scale codes, codes and values as lowbit_mls on the
 * contiguous copy, the codes and values written in x's layout. Returns -3 (nothing written) without
 * AVX-512, where C is not a multiple of 16 or B*R*C >= 2^32 (the caller copies and calls lowbit_mls),
 * -1 on NaN/Inf, -2 when out of memory, else 0. */
int lowbit_mls_cols(const float *x, int64_t B, int64_t R, int64_t C, int64_t block, int group, int eg, int mg, int ex,
                    int mx, int stochastic, uint64_t seed, float *st_out, int16_t *scale_codes, int16_t *codes,
                    float *values) {
#ifndef VEC16
    (void)x, (void)B, (void)R, (void)C, (void)block, (void)group, (void)eg, (void)mg, (void)ex, (void)mx;
    (void)stochastic, (void)seed, (void)st_out, (void)scale_codes, (void)codes, (void)values;
    return -3;
#else
    if (C % 16 != 0 || B * R * C >= ((int64_t)1 << 32)) return -3;
    const int64_t nb = (R + block - 1) / block, n = B * C * nb;
    float *scratch = (float *)malloc((size_t)(5 * n) * sizeof(float));
    if (scratch == NULL) return -2;
    float *bmax = scratch, *sg = scratch + n, *inv = scratch + 2 * n, *sg_t = scratch + 3 * n, *inv_t = scratch + 4 * n;
    int status = -1;
    if (cols_block_absmax((const uint32_t *)(const void *)x, B, R, C, block, bmax) == 0) {
        status = mls_scales(bmax, B * C, nb, group, eg, mg, st_out, scale_codes, sg, inv);
        if (status == 0) {
            for (int64_t b = 0; b < B; b++)
                for (int64_t c = 0; c < C; c++)
                    for (int64_t k = 0; k < nb; k++) {
                        sg_t[(b * nb + k) * C + c] = sg[(b * C + c) * nb + k];
                        inv_t[(b * nb + k) * C + c] = inv[(b * C + c) * nb + k];
                    }
            const mls_params P = mls_make_params(*st_out, ex, mx, seed);
            mls_cols_quantize16(x, B, R, C, block, inv_t, sg_t, &P, stochastic, codes, values);
        }
    }
    free(scratch);
    return status;
#endif
}
