/* Fused CPU quantizers (MLS, PoT), bit-exact with lowbit.reference (the definition).
 *
 * Two passes over the input: block maxima (and a count of NaN/Inf), then one pass that writes
 * the int16 codes AND the dequantized fp32 values. Random numbers: the counter-based generator
 * r(i) = hash32(hash32(lo32(i) ^ k0) ^ hi32(i) ^ k1), so results do not depend on threads.
 * Loops are branch-free so that the compiler vectorises them; OpenMP splits them over cores.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

static inline uint32_t hash32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x846CA68Bu;
    x ^= x >> 16;
    return x;
}

static inline uint32_t random_bits(uint64_t i, uint32_t k0, uint32_t k1) {
    return hash32(hash32((uint32_t)i ^ k0) ^ (uint32_t)(i >> 32) ^ k1);
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
    int32_t sr = whole + ((frac24 + (int32_t)(r >> 8)) >> 24);
    int32_t rn = (int32_t)rintf(y);
    return stochastic ? sr : rn;
}

/* Max |x| of each block of `block` elements along rows of length `len` ([rows][nblocks] out).
 * Returns the number of NaN/Inf elements. */
int64_t lowbit_block_absmax(const float *x, int64_t rows, int64_t len, int64_t block, float *out) {
    int64_t nblocks = (len + block - 1) / block, bad = 0;
#pragma omp parallel for schedule(static) reduction(+ : bad)
    for (int64_t t = 0; t < rows * nblocks; t++) {
        int64_t row = t / nblocks, b = t % nblocks;
        int64_t start = b * block, stop = start + block < len ? start + block : len;
        const float *p = x + row * len;
        float m = 0.0f;
        int64_t nonfinite = 0;
        for (int64_t j = start; j < stop; j++) {
            float a = fabsf(p[j]);
            m = a > m ? a : m;
            nonfinite += !(a <= 3.4028234663852886e38f);
        }
        out[t] = m;
        bad += nonfinite;
    }
    return bad;
}

/* MLS elements. inv/sg: per (row, block), 1/(Sg*St) and Sg; st: tensor scale. */
void lowbit_mls_quantize(const float *x, int64_t rows, int64_t len, int64_t block, const float *inv,
                         const float *sg, float st, int ex, int mx, int stochastic, uint64_t seed,
                         int16_t *codes, float *values) {
    const int32_t exmin = 1 - (1 << ex), emax = ex >= 1 ? -1 : 0;
    const int32_t qmax = ex >= 1 ? (2 << mx) - 1 : (1 << mx) - 1;
    const float lsb = pow2i(exmin - mx);
    const uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    int64_t nblocks = (len + block - 1) / block;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < rows * nblocks; t++) {
        int64_t row = t / nblocks, b = t % nblocks;
        int64_t start = row * len + b * block;
        int64_t stop = row * len + (b * block + block < len ? b * block + block : len);
        const float g_inv = inv[t], g_sg = sg[t];
        for (int64_t i = start; i < stop; i++) {
            float v = x[i];
            float ratio = fminf(fabsf(v) * g_inv, 2.0f);
            int32_t e = float_exponent(ratio);
            e = e < exmin ? exmin : (e > emax ? emax : e);
            int32_t q = round_grid(ratio * pow2i(mx - e), stochastic, stochastic ? random_bits((uint64_t)i, k0, k1) : 0);
            int32_t carry = (q == (2 << mx)) & (e < emax);
            e += carry;
            q = carry ? (1 << mx) : q;
            q = (e == emax && q > qmax) ? qmax : q;
            int32_t normal = ex >= 1 && q >= (1 << mx);
            int32_t exp_code = normal ? e - exmin + 1 : 0;
            int32_t man = normal ? q - (1 << mx) : q;
            int32_t sign = (v < 0.0f) & (q > 0);
            codes[i] = (int16_t)((sign << (ex + mx)) | (exp_code << mx) | man);
            float mag = (float)(q << (e - exmin)) * lsb;
            values[i] = ((sign ? -mag : mag) * g_sg) * st;
        }
    }
}

/* PoT elements: z = |x| 2^-s (two exact steps, 2^half then 2^rest), codes 0..max_code. */
void lowbit_pot_quantize(const float *x, int64_t n, int32_t s, int32_t half, int max_code,
                         int stochastic, uint64_t seed, int16_t *codes, float *values) {
    const int32_t lowest = 1 - max_code;
    const float step1 = pow2i(half), step2 = pow2i(-s - half), scale = pow2i(s);
    const uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        float z = (fabsf(v) * step1) * step2;
        int32_t k = float_exponent(z);
        k = k < lowest - 1 ? lowest - 1 : (k > 0 ? 0 : k);
        int32_t below = k < lowest;
        float p = below ? z * pow2i(-lowest) : z * pow2i(-k) - 1.0f;
        uint32_t r = stochastic ? random_bits((uint64_t)i, k0, k1) : 0;
        int32_t up = stochastic ? ((float)(r >> 8) < p * 16777216.0f) : (p >= 0.5f);
        int32_t code = (below ? 0 : k + max_code) + up;
        code = k >= 0 ? max_code : code;
        int32_t sign = (v < 0.0f) & (code > 0);
        codes[i] = (int16_t)((sign << 4) | code);
        float mag = code == 0 ? 0.0f : pow2i(code - max_code);
        values[i] = (sign ? -mag : mag) * scale;
    }
}

/* Max |x| over the whole tensor; returns the number of NaN/Inf elements. */
int64_t lowbit_absmax(const float *x, int64_t n, float *out) {
    return lowbit_block_absmax(x, 1, n, n, out);
}
