// Mogami GEMMs: every product is the integer add of fp32 bit patterns,
//   a (x) b = bits(a) + bits(b) - 0x3F800000,
// with explicit rules (no real multiply), those of lowbit.mogami.mogami_mul: a zero/subnormal
// operand or a result below the smallest normal flushes to signed zero; a result past the
// largest finite saturates to the signed largest finite (``max_finite``: FLT_MAX, or the
// largest bf16 as fp32 bits for bf16 operands, whose products are the fp32 products of the
// widened patterns); an Inf/NaN operand gives NaN (mogami_mul raises instead).
//
// Summation order (fixed, documented in docs/layers.md): every output element is one fp32
// accumulator starting at +0.0f that adds its products in increasing reduction index
// (batch-major, then k). Skipping a zero product is exact (x + -0 == x and the accumulator
// never holds -0). Vectorisation runs over output columns, so the order per element is the
// scalar order; the file must not be built with -ffast-math.
#include <cstdint>
#include <cstring>

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

}  // namespace

extern "C" {

// C(b, m, n) = SUM_k A(b, m, k) (x) B(b, k, n)
//   A(b, m, k) = A[b*sab + m*sam + k],  B(b, k, n) = B[b*sbb + k*n_cols + n]
// reduce_batch = 0: C[b*m_rows*n_cols + m*n_cols + n];  1: C[m*n_cols + n] sums over (b, k).
// max_finite: saturation value (bits), 0x7F7FFFFF for fp32, 0x7F7F0000 for bf16.
void mogami_gemm(const uint32_t* A, const uint32_t* B, float* C, int64_t batch, int64_t m_rows,
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
