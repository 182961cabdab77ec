// MAC policies of the block-scaled GEMM engine (hls4ml's `product` idiom: one type per arithmetic,
// the engine is templated on it). Every policy provides
//   Elem                      on-chip form of one element (decoded once, when it arrives)
//   Acc                       intra-block accumulator
//   decode(code, fmt)         lane value -> Elem
//   mac(acc, a, b)            acc + a*b, in the policy's arithmetic
//   block_value(acc, sa, sb, fmt)   the block's fp32 contribution (group scaling applied)
// The engine adds block values in fp32 in ascending block order, starting from +0.0f.
#pragma once
#include <ap_int.h>
#include <stdint.h>

#include "lowbit/wire.hpp"

namespace lowbit {

// Runtime number format, straight from header word 3.
struct Format {
    unsigned ex, mx, eg, mg;
};

// Reinterpret helpers (unions synthesise as wires).
inline float bits_to_f32(uint32_t u) {
    union { uint32_t u; float f; } c;
    c.u = u;
    return c.f;
}
inline uint32_t f32_to_bits(float f) {
    union { uint32_t u; float f; } c;
    c.f = f;
    return c.u;
}

// t * 2^e as fp32, e <= 0: t is rounded to fp32 once (round to nearest, ties to even, as an
// int64 -> float conversion does), then e is added to the exponent field. A result whose
// exponent field would drop to 0 or below is flushed to +0.0 (no subnormals, as fp cores do).
// The only rounding is the first one, so the numpy reference reproduces it bit for bit.
// Branch-free; t == 0 needs no case of its own: its field is 0, and e <= 0 flushes it.
inline float scaled_to_f32(int64_t t, int e) {
    uint32_t bits = f32_to_bits((float)t);
    int field = (int)((bits >> 23) & 0xFFu) + e;
    uint32_t keep = 0u - (uint32_t)(field > 0);
    return bits_to_f32(((bits & 0x807FFFFFu) | ((uint32_t)field << 23)) & keep);
}

// ----------------------------------------------------------------------------------------------
// MLS: sign-magnitude <Ex,Mx> elements; any format up to the policy's <EX, MX> at run time.
// Integer view (notes A.3b): magnitude = sig << sh, sig = m (e == 0) or 2^Mx + m, sh = max(e-1, 0),
// in units of 2^(Exmin - Mx). Widths from the bounds (Appendix B), for the protocol's <4, 7>:
//   significand Mx+1 = 8 bits, shift <= 2^Ex - 2 = 14, product <= 2*(Mx + 2^Ex - 1) = 44 bits,
//   block sum over <= MAX_K = 2^13 products: 57 bits + sign; a board build's <2, 4>: 5, 2, 14, 28.
// ----------------------------------------------------------------------------------------------
// The format ranges are lowbit.numerics.formats', generated into wire.hpp (the same constants, not copies).
using wire::MLS_MAX_EX;
using wire::MLS_MAX_MX;
using wire::MLS_MAX_EG;
using wire::MLS_MAX_MG;
static const unsigned LOG2_MAX_K = 13;
static_assert((1u << LOG2_MAX_K) >= wire::MAX_K, "LOG2_MAX_K must cover MAX_K");

template <unsigned EX, unsigned MX>
struct MlsWidths {
    static const unsigned SIG_W = MX + 1;
    static const unsigned SHIFT_MAX = (1u << EX) - 2;
    static const unsigned SHIFT_W = SHIFT_MAX < 2 ? 1 : SHIFT_MAX < 4 ? 2 : SHIFT_MAX < 8 ? 3 : 4;
    static const unsigned PROD_W = 2 * (MX + (1u << EX) - 1);
    static const unsigned ACC_W = PROD_W + LOG2_MAX_K + 1;
    // Group scaling multiplies by (2^Mg + ma)(2^Mg + mb) <= 9 < 2^4 with shifts and adds.
    static const unsigned SCALED_W = ACC_W + 4;
    static_assert(PROD_W == 2 * SIG_W + 2 * SHIFT_MAX, "product = significand product + two shifts");
    static_assert(SCALED_W <= 64, "scaled MLS block sum must fit int64");
};
static const unsigned MLS_ACC_W = MlsWidths<MLS_MAX_EX, MLS_MAX_MX>::ACC_W;
static const unsigned MLS_SCALED_W = MlsWidths<MLS_MAX_EX, MLS_MAX_MX>::SCALED_W;
static_assert(MLS_ACC_W <= 64, "MLS block accumulator must fit the int64 conversion");

template <unsigned EX, unsigned MX>
struct MlsElemOf {
    ap_uint<1> sign;
    ap_uint<MlsWidths<EX, MX>::SIG_W> sig;
    ap_uint<MlsWidths<EX, MX>::SHIFT_W> sh;
};

typedef MlsElemOf<MLS_MAX_EX, MLS_MAX_MX> MlsElem;  // the protocol-wide element

// Parts of the MLS policy that do not depend on the element types.
struct MlsScale {
    static int exponent(uint16_t sa, uint16_t sb, const Format& f, unsigned* ma, unsigned* mb) {
        unsigned mmask = (1u << f.mg) - 1, emask = (1u << f.eg) - 1;
        *ma = sa & mmask;
        *mb = sb & mmask;
        int ega = (sa >> f.mg) & emask, egb = (sb >> f.mg) & emask;
        int exmin = 1 - (1 << f.ex);
        return 2 * (exmin - (int)f.mx) - 2 * (int)f.mg - ega - egb;
    }
};

// LOWBIT_FAST_CSIM (the emulation backend's build, never synthesis): the same integer arithmetic
// on native types, elements pre-decoded to their signed integer value (sign * sig << sh) and one
// int64 multiply-add per product. Equal to the ap_int path because every intermediate fits the
// widths asserted above (<= 64 bits); the C-sim testbenches build the ap_int path.
#if defined(LOWBIT_FAST_CSIM) && !defined(__SYNTHESIS__)
template <unsigned EX = MLS_MAX_EX, unsigned MX = MLS_MAX_MX>
struct MlsMacOf {
    typedef int32_t Elem;
    typedef int64_t Acc;
    static const bool PAIRED = false;

    static Elem decode(uint32_t code, const Format& f) {
        uint32_t e = (code >> f.mx) & ((1u << f.ex) - 1), m = code & ((1u << f.mx) - 1);
        int32_t mag = (e == 0) ? (int32_t)m : (int32_t)((m | (1u << f.mx)) << (e - 1));
        return ((code >> (f.ex + f.mx)) & 1) ? -mag : mag;
    }
    static Acc zero() { return 0; }
    static Acc mac(Acc acc, Elem a, Elem b) { return acc + (int64_t)a * b; }
    // The shift-add product of the ap_int path, as one native multiply (same value, no branches).
    static int64_t shift_add_scale(Acc p, unsigned ma, unsigned mb, unsigned mg) {
        return p * (int64_t)(((1u << mg) + ma) * ((1u << mg) + mb));
    }
#else
template <unsigned EX = MLS_MAX_EX, unsigned MX = MLS_MAX_MX>
struct MlsMacOf {
    typedef MlsWidths<EX, MX> W;
    typedef MlsElemOf<EX, MX> Elem;
    typedef ap_int<W::ACC_W> Acc;

    static Elem decode(uint32_t code, const Format& f) {
        const unsigned code_bits = 1 + f.ex + f.mx;
        ap_uint<4> e = (code >> f.mx) & ((1u << f.ex) - 1);
        ap_uint<W::SIG_W> m = code & ((1u << f.mx) - 1);
        Elem out;
        out.sign = (code >> (code_bits - 1)) & 1;
        out.sig = (e == 0) ? m : (ap_uint<W::SIG_W>)(m | (1u << f.mx));
        out.sh = (e == 0) ? (ap_uint<W::SHIFT_W>)0 : (ap_uint<W::SHIFT_W>)(e - 1);
        return out;
    }

    static Acc zero() { return 0; }

    static Acc mac(Acc acc, const Elem& a, const Elem& b) {
        return add_product(acc, a.sig * b.sig, a, b);  // (Mx+1) x (Mx+1)-bit product
    }

    static Acc add_product(Acc acc, ap_uint<2 * W::SIG_W> sig, const Elem& a, const Elem& b) {
        ap_uint<W::PROD_W> mag = (ap_uint<W::PROD_W>)sig << (a.sh + b.sh);
        return (a.sign ^ b.sign) ? (Acc)(acc - mag) : (Acc)(acc + mag);
    }

    // Two PEs of one column (rows r, r + 1: the same b) share one multiplier: the two significands
    // packed as (a0 << G) + a1 with G = 2 (Mx+1) + 1, so a1 * b (< 2^(2 Mx + 2)) never reaches the
    // bits of a0 * b; for <2, 4> that is one 16 x 5-bit product, one DSP for two MACs.
    static const bool PAIRED = true;
    static void mac_pair(Acc& acc0, Acc& acc1, const Elem& a0, const Elem& a1, const Elem& b) {
        static const unsigned G = 2 * W::SIG_W + 1;
        const ap_uint<G + W::SIG_W> packed = ((ap_uint<G + W::SIG_W>)a0.sig << G) | a1.sig;
        const ap_uint<G + 2 * W::SIG_W> both = packed * b.sig;
        acc0 = add_product(acc0, both >> G, a0, b);
        acc1 = add_product(acc1, both & ((ap_uint<G + 2 * W::SIG_W>)1 << (2 * W::SIG_W)) - 1, a1, b);
    }

    // Scale code [eg_code | mbit]: value (1 + mbit/2^Mg) * 2^-eg_code. The fraction product
    // (2^Mg + ma)(2^Mg + mb) / 2^(2Mg) is 1, 1.5 or 2.25 for Mg = 1: applied as P<<2, (P<<2)+(P<<1),
    // (P<<3)+P, never a multiply; the exponents become one shift of the fp32 result.
    static ap_int<W::SCALED_W> shift_add_scale(Acc p, unsigned ma, unsigned mb, unsigned mg) {
        ap_int<W::SCALED_W> t = p;
        if (mg == 0) return t;
        ap_int<W::SCALED_W> ta = (t << 1) + (ma ? t : (ap_int<W::SCALED_W>)0);
        return (ta << 1) + (mb ? ta : (ap_int<W::SCALED_W>)0);
    }
#endif

    static float block_value(Acc p, uint16_t sa, uint16_t sb, const Format& f) {
        unsigned ma, mb;
        int e = MlsScale::exponent(sa, sb, f, &ma, &mb);
        return scaled_to_f32((int64_t)shift_add_scale(p, ma, mb, f.mg), e);
    }
};
// The protocol-wide policy (every format lowbit accepts): the emulation build and the exact tests.
typedef MlsMacOf<> MlsMac;

// ----------------------------------------------------------------------------------------------
// PoT MF-MAC: code [sign | c], c in 1..15 is 2^(c - 15) (times the tensor scale), c = 0 is zero.
// Product: sign XOR, INT4 add ca + cb in [2, 30]; the term 1 << (ca + cb - 2) is added into a
// wide integer, exact; value = acc * 2^-28, converted to fp32 once per output.
// ----------------------------------------------------------------------------------------------
static const unsigned POT_MAX_SHIFT = 28;
static const unsigned POT_ACC_W = POT_MAX_SHIFT + LOG2_MAX_K + 2;  // 2^28 * 2^13 = 2^41 needs 42 bits + sign
static_assert(POT_ACC_W <= 64, "PoT accumulator must fit int64");

#if defined(LOWBIT_FAST_CSIM) && !defined(__SYNTHESIS__)
// Fast C-sim: a code as the signed integer +-2^(c-1), so a product is +-2^(ca+cb-2) exactly.
struct PotMac {
    typedef int32_t Elem;
    typedef int64_t Acc;
    static const bool PAIRED = false;

    static Elem decode(uint32_t code, const Format&) {
        uint32_t c = code & 0xF;
        int32_t mag = c ? (int32_t)(1u << (c - 1)) : 0;
        return (code & 0x10) ? -mag : mag;
    }
    static Acc zero() { return 0; }
    static Acc mac(Acc acc, Elem a, Elem b) { return acc + (int64_t)a * b; }
    static float block_value(Acc acc, uint16_t, uint16_t, const Format&) {
        return scaled_to_f32(acc, -(int)POT_MAX_SHIFT);
    }
};
#else
struct PotMac {
    typedef ap_uint<5> Elem;
    typedef ap_int<POT_ACC_W> Acc;
    static const bool PAIRED = false;

    static Elem decode(uint32_t code, const Format&) { return code & 0x1F; }
    static Acc zero() { return 0; }

    static Acc mac(Acc acc, Elem a, Elem b) {
        ap_uint<4> ca = a(3, 0), cb = b(3, 0);
        if (ca == 0 || cb == 0) return acc;
        ap_uint<5> shift = (ap_uint<5>)ca + (ap_uint<5>)cb - 2;  // the INT4 add
        ap_int<POT_ACC_W> term = (ap_int<POT_ACC_W>)1 << shift;
        return (a[4] ^ b[4]) ? (Acc)(acc - term) : (Acc)(acc + term);
    }

    static float block_value(Acc acc, uint16_t, uint16_t, const Format&) {
        return scaled_to_f32((int64_t)acc, -(int)POT_MAX_SHIFT);
    }
};
#endif

// ----------------------------------------------------------------------------------------------
// Mogami: a (x) b = bits(a) + bits(b) - bias on the magnitudes, sign = XOR. Zero or subnormal
// operands and results below the smallest normal give signed zero; results past the largest
// finite value saturate to it (keeping the sign); an Inf/NaN operand gives the quiet NaN.
// The rule is defined by lowbit.numerics.reference.mogami_mul (numpy); tests/kernel/test_reference.py
// checks this body against it bit for bit.
// fp32 accumulation in k order.
// ----------------------------------------------------------------------------------------------
// Unsigned W-bit integer: ap_uint<W> for synthesis and the C-sim testbenches, uint64_t in the
// fast emulation build (W <= 33 here, so the values are identical).
#if defined(LOWBIT_FAST_CSIM) && !defined(__SYNTHESIS__)
template <int W>
struct UInt { typedef uint64_t type; };
#else
template <int W>
struct UInt { typedef ap_uint<W> type; };
#endif

template <int BITS>
struct MogamiRule;

template <>
struct MogamiRule<32> {
    static const uint32_t BIAS = 0x3F800000u, EXP_MASK = 0x7F800000u, MAG_MASK = 0x7FFFFFFFu;
    static const uint32_t MIN_NORMAL = 0x00800000u, MAX_FINITE = 0x7F7FFFFFu, SIGN = 0x80000000u;
    static const uint32_t QNAN = 0x7FC00000u;
    static float to_f32(uint32_t u) { return bits_to_f32(u); }
};

template <>
struct MogamiRule<16> {
    static const uint32_t BIAS = 0x3F80u, EXP_MASK = 0x7F80u, MAG_MASK = 0x7FFFu;
    static const uint32_t MIN_NORMAL = 0x0080u, MAX_FINITE = 0x7F7Fu, SIGN = 0x8000u;
    static const uint32_t QNAN = 0x7FC0u;
    static float to_f32(uint32_t u) { return bits_to_f32(u << 16); }
};

// Written as selects, not early returns: one adder and a few comparators in hardware, and a loop
// over the output lanes that the C-sim compiler can vectorise.
template <int BITS>
inline uint32_t mogami_mul_bits(uint32_t a, uint32_t b) {
    typedef MogamiRule<BITS> R;
    typedef typename UInt<BITS + 1>::type U;
    uint32_t sign = (a ^ b) & R::SIGN;
    U ma = a & R::MAG_MASK, mb = b & R::MAG_MASK;
    bool special = ((ma & R::EXP_MASK) == R::EXP_MASK) | ((mb & R::EXP_MASK) == R::EXP_MASK);
    bool zero = ((ma & R::EXP_MASK) == 0) | ((mb & R::EXP_MASK) == 0);
    U sum = ma + mb;  // one integer adder; the bias test needs no subtract first
    bool under = sum < (U)(R::BIAS + R::MIN_NORMAL);
    U mag = sum - R::BIAS;
    mag = (mag > (U)R::MAX_FINITE) ? (U)R::MAX_FINITE : mag;
    uint32_t r = (zero | under) ? sign : (sign | (uint32_t)mag);
    return special ? R::QNAN : r;
}

template <int BITS>
struct MogamiMac {
#if defined(LOWBIT_FAST_CSIM) && !defined(__SYNTHESIS__)
    typedef uint32_t Elem;
#else
    typedef ap_uint<BITS> Elem;
#endif
    typedef float Acc;
    static const bool PAIRED = false;

    static Elem decode(uint32_t code, const Format&) { return code; }
    static Acc zero() { return 0.0f; }

    static Acc mac(Acc acc, Elem a, Elem b) {
        return acc + MogamiRule<BITS>::to_f32(mogami_mul_bits<BITS>((uint32_t)a, (uint32_t)b));
    }

    static float block_value(Acc acc, uint16_t, uint16_t, const Format&) { return acc; }
};

}  // namespace lowbit
