// Equivalence of the RTL datapaths (hls/rtl/*.v, compiled by Verilator) and the HLS MAC policies
// (hls/include/lowbit/mac.hpp, the ap_int path that synthesis sees), compared with ==.
// Built and run by lowbit.kernel.rtl (tests/hls/test_rtl.py); one line per check:
//   PASS <name> <count>      or      FAIL <name> <first mismatch>
// Usage: equiv SEED [SCALE]   (SCALE multiplies the random counts; exhaustive sets stay whole)
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#include "lowbit/mac.hpp"
#include "Vfp32_add.h"
#include "Vfp32_add_dsp.h"
#include "Vmls24_pe3.h"
#include "Vmls24_pack1.h"
#include "Vmls24_pack3.h"
#include "Vmls21_finish_dsp.h"
#include "Vmls24_finish_dsp.h"
#include "Vpot_finish_dsp.h"
#include "Vmogami_mac32_dsp.h"
#include "Vmogami_mac16_dsp.h"
#include "Vfp32_add_ftz.h"
#include "Vfp32_mac_ftz.h"
#include "Vfp32_mul_ftz.h"
#include "Vfp32_mac.h"
#include "Vfp32_mul.h"
#include "Vint8_mac.h"
#include "Vmls21_pe1.h"
#include "Vmls21_pe16.h"
#include "Vmls21_pe4.h"
#include "Vmls21_finish.h"
#include "Vmls24_pe1.h"
#include "Vmls24_pe16.h"
#include "Vmls24_pe4.h"
#include "Vmls24_finish.h"
#include "Vmlsrt_decode.h"
#include "Vmlsrt_finish.h"
#include "Vmlsrt_pe1.h"
#include "Vmlsrt_pe16.h"
#include "Vmlsrt_pe4.h"
#include "Vmlsrt_scale.h"
#include "Vmogami_mac16.h"
#include "Vmogami_mac32.h"
#include "Vmogami_mul16.h"
#include "Vmogami_mul32.h"
#include "Vpot_finish.h"
#include "Vpot_pe1.h"
#include "Vpot_pe16.h"
#include "Vpot_pe4.h"
#include "Vscaled_to_f32.h"

using lowbit::Format;

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------
static uint64_t rng_state;
static uint64_t next_u64() {  // splitmix64
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static uint64_t bits(unsigned w) { return w >= 64 ? next_u64() : next_u64() & ((1ull << w) - 1); }
static uint64_t below(uint64_t n) { return next_u64() % n; }
static double scale_factor = 1.0;
static long count(long n) { return std::max(1L, (long)(n * scale_factor)); }

static int64_t sext(uint64_t v, unsigned w) {
    return w >= 64 ? (int64_t)v : (int64_t)(v << (64 - w)) >> (64 - w);
}
static uint64_t mask(unsigned w) { return w >= 64 ? ~0ull : ((1ull << w) - 1); }

template <class T>
static typename std::enable_if<std::is_integral<T>::value>::type put(T& port, unsigned lsb, unsigned w, uint64_t v) {
    uint64_t m = mask(w) << lsb;
    port = (T)(((uint64_t)port & ~m) | ((v << lsb) & m));
}
template <std::size_t N>
static void put(VlWide<N>& port, unsigned lsb, unsigned w, uint64_t v) {
    for (unsigned i = 0; i < w; i++) {
        unsigned b = lsb + i;
        uint32_t m = 1u << (b & 31);
        if ((v >> i) & 1) port[b >> 5] |= m; else port[b >> 5] &= ~m;
    }
}

template <class M>
static void tick(M* m) {
    m->clk = 0;
    m->eval();
    m->clk = 1;
    m->eval();
}

static float f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static uint32_t u32(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float flush(float f) { return fpclassify(f) == FP_SUBNORMAL ? copysignf(0.0f, f) : f; }
static bool is_nan(uint32_t u) { return (u & 0x7F800000u) == 0x7F800000u && (u & 0x7FFFFFu); }
// IEEE fixes no NaN payload or sign: NaN results agree by class, every other result bit for bit.
static bool same_f32(uint32_t rtl, uint32_t golden) {
    return is_nan(golden) ? rtl == 0x7FC00000u : rtl == golden;
}

struct Check {
    std::string name;
    long n = 0;
    bool failed = false;
    char first[512] = {0};
    explicit Check(const std::string& s) : name(s) {}
    void fail(const char* msg) {
        if (!failed) snprintf(first, sizeof first, "%s", msg);
        failed = true;
    }
    bool report() const {
        if (failed) printf("FAIL\t%s\t%s\n", name.c_str(), first);
        else printf("PASS\t%s\t%ld\n", name.c_str(), n);
        fflush(stdout);
        return !failed;
    }
};

// ---------------------------------------------------------------------------------------------
// PoT MF-MAC: PotMac::decode + PotMac::mac, ap_int<43> accumulator.
// ---------------------------------------------------------------------------------------------
template <class M>
static bool check_pot_pe(const char* name, unsigned S) {
    Check c(name);
    M* m = new M;
    std::vector<uint32_t> pairs;  // every (a, b) of 5-bit codes
    for (uint32_t a = 0; a < 32; a++)
        for (uint32_t b = 0; b < 32; b++) pairs.push_back(a << 5 | b);
    Format f = {0, 0, 0, 0};
    lowbit::PotMac::Acc acc = 0;
    auto run = [&](const std::vector<uint32_t>& seq, long max_cycles_per_block) {
        long left = 0;
        for (size_t i = 0; i < seq.size(); i += S) {
            bool first = left == 0;
            if (first) left = 1 + (long)below(max_cycles_per_block);
            left--;
            m->first = first;
            if (first) acc = 0;
            for (unsigned l = 0; l < S; l++) {
                uint32_t p = seq[(i + l) % seq.size()];
                put(m->a, 5 * l, 5, p >> 5);
                put(m->b, 5 * l, 5, p & 31);
                acc = lowbit::PotMac::mac(acc, lowbit::PotMac::decode(p >> 5, f), lowbit::PotMac::decode(p & 31, f));
            }
            tick(m);
            c.n += S;
            uint64_t want = (uint64_t)acc.to_int64() & mask(lowbit::POT_ACC_W);
            if ((uint64_t)m->acc != want) {
                char msg[256];
                snprintf(msg, sizeof msg, "cycle %zu rtl=0x%llx golden=0x%llx", i / S,
                         (unsigned long long)m->acc, (unsigned long long)want);
                c.fail(msg);
            }
        }
    };
    for (int pass = 0; pass < 16; pass++) {  // every pair, 16 orders, random block lengths
        std::vector<uint32_t> seq = pairs;
        for (size_t i = seq.size() - 1; i > 0; i--) std::swap(seq[i], seq[below(i + 1)]);
        run(seq, 1 + 64 / S);
    }
    for (uint32_t sign = 0; sign < 2; sign++) {  // the widest block: MAX_K products of 2^28
        std::vector<uint32_t> seq(lowbit::wire::MAX_K, ((15u | sign << 4) << 5) | 15u);
        acc = 0;
        for (size_t i = 0; i < seq.size(); i += S) {
            m->first = i == 0;
            for (unsigned l = 0; l < S; l++) {
                put(m->a, 5 * l, 5, seq[i + l] >> 5);
                put(m->b, 5 * l, 5, seq[i + l] & 31);
                acc = lowbit::PotMac::mac(acc, seq[i + l] >> 5, seq[i + l] & 31);
            }
            tick(m);
            c.n += S;
        }
        uint64_t want = (uint64_t)acc.to_int64() & mask(lowbit::POT_ACC_W);
        if ((uint64_t)m->acc != want || acc.to_int64() != (sign ? -1 : 1) * ((int64_t)lowbit::wire::MAX_K << 28))
            c.fail("widest block");
    }
    delete m;
    return c.report();
}

// ---------------------------------------------------------------------------------------------
// MLS, one fixed format on codes (mls_code_pe): MlsMac::decode + MlsMac::mac (ap_int<58>); the
// RTL accumulator is narrower (PW + 14 bits) and must hold every block of up to MAX_K products.
// ---------------------------------------------------------------------------------------------
template <class M>
static bool check_mls_code_pe(const char* name, unsigned ex, unsigned mx, unsigned S) {
    Check c(name);
    M* m = new M;
    const unsigned cw = 1 + ex + mx, acc_w = 2 * (mx + (1u << ex) - 1) + 14;
    Format f = {ex, mx, 8, 1};
    std::vector<uint32_t> pairs;
    for (uint32_t a = 0; a < (1u << cw); a++)
        for (uint32_t b = 0; b < (1u << cw); b++) pairs.push_back(a << cw | b);
    lowbit::MlsMac::Acc acc = 0;
    auto lane = [&](unsigned l, uint32_t p) {
        uint32_t a = p >> cw, b = p & ((1u << cw) - 1);
        put(m->a, cw * l, cw, a);
        put(m->b, cw * l, cw, b);
        acc = lowbit::MlsMac::mac(acc, lowbit::MlsMac::decode(a, f), lowbit::MlsMac::decode(b, f));
    };
    auto compare = [&](const char* what, long cycle) {
        int64_t got = sext((uint64_t)m->acc, acc_w);
        if (got != acc.to_int64()) {
            char msg[256];
            snprintf(msg, sizeof msg, "%s cycle %ld rtl=%lld golden=%lld", what, cycle, (long long)got,
                     (long long)acc.to_int64());
            c.fail(msg);
        }
    };
    int passes = cw <= 4 ? 64 : 8;
    for (int pass = 0; pass < passes; pass++) {
        std::vector<uint32_t> seq = pairs;
        for (size_t i = seq.size() - 1; i > 0; i--) std::swap(seq[i], seq[below(i + 1)]);
        long left = 0;
        for (size_t i = 0; i < seq.size(); i += S) {
            bool first = left == 0;
            if (first) left = 1 + (long)below(1 + 64 / S);
            left--;
            m->first = first;
            if (first) acc = 0;
            for (unsigned l = 0; l < S; l++) lane(l, seq[(i + l) % seq.size()]);
            tick(m);
            c.n += S;
            compare("pairs", (long)(i / S));
        }
    }
    const uint32_t top = (1u << (cw - 1)) - 1;  // largest magnitude
    for (uint32_t sign = 0; sign < 2; sign++) {
        acc = 0;
        for (uint32_t i = 0; i < lowbit::wire::MAX_K; i += S) {
            m->first = i == 0;
            for (unsigned l = 0; l < S; l++) lane(l, ((top | sign << (cw - 1)) << cw) | top);
            tick(m);
            c.n += S;
        }
        compare("widest block", lowbit::wire::MAX_K / S);
    }
    delete m;
    return c.report();
}

// The packing of two significand products in one multiplier (mls_pack_term): for every pair of
// <2,4> significands sharing one operand, ((a1 << 11) + a2) * b holds a1 * b at bit 11 and a2 * b
// in bits 0-9, and the guard bit 10 is 0 (the products never overlap).
static bool check_pack_guard(const char* name, unsigned sigw) {
    Check c(name);
    const unsigned g = 2 * sigw + 1;
    for (uint32_t a1 = 0; a1 < (1u << sigw); a1++)
        for (uint32_t a2 = 0; a2 < (1u << sigw); a2++)
            for (uint32_t b = 0; b < (1u << sigw); b++, c.n++) {
                uint64_t both = (((uint64_t)a1 << g) + a2) * b;
                if ((both >> g) != a1 * b || (both & ((1u << (g - 1)) - 1)) != a2 * b || (both >> (g - 1) & 1))
                    c.fail("packed products overlap");
            }
    return c.report();
}

// A PE pair (mls_pack_pe): rows a1 and a2 against one b, two accumulators, each equal to its own
// MlsMac accumulator. S = 1: every (a1, a2, b) code triple; then random triples at random block
// lengths and the widest block of largest magnitudes.
template <class M>
static bool check_mls_pack_pe(const char* name, unsigned ex, unsigned mx, unsigned S, long random_steps) {
    Check c(name);
    M* m = new M;
    const unsigned cw = 1 + ex + mx, acc_w = 2 * (mx + (1u << ex) - 1) + 14;
    const uint32_t codes = 1u << cw;
    Format f = {ex, mx, 8, 1};
    lowbit::MlsMac::Acc acc1 = 0, acc2 = 0;
    auto lane = [&](unsigned l, uint32_t a1, uint32_t a2, uint32_t b) {
        put(m->a1, cw * l, cw, a1);
        put(m->a2, cw * l, cw, a2);
        put(m->b, cw * l, cw, b);
        acc1 = lowbit::MlsMac::mac(acc1, lowbit::MlsMac::decode(a1, f), lowbit::MlsMac::decode(b, f));
        acc2 = lowbit::MlsMac::mac(acc2, lowbit::MlsMac::decode(a2, f), lowbit::MlsMac::decode(b, f));
    };
    auto compare = [&](const char* what, long step) {
        int64_t g1 = sext((uint64_t)m->acc1, acc_w), g2 = sext((uint64_t)m->acc2, acc_w);
        if (g1 != acc1.to_int64() || g2 != acc2.to_int64()) {
            char msg[256];
            snprintf(msg, sizeof msg, "%s step %ld rtl=(%lld,%lld) golden=(%lld,%lld)", what, step, (long long)g1,
                     (long long)g2, (long long)acc1.to_int64(), (long long)acc2.to_int64());
            c.fail(msg);
        }
    };
    const long triples = (long)codes * codes * codes;
    const long steps = S == 1 ? triples : count(random_steps);
    long left = 0;
    for (long i = 0; i < steps; i++) {
        bool first = left == 0;
        if (first) left = 1 + (long)below(1 + 64 / S);
        left--;
        m->first = first;
        if (first) acc1 = acc2 = 0;
        for (unsigned l = 0; l < S; l++) {
            long t = S == 1 ? i : (long)below((uint64_t)triples);
            lane(l, (uint32_t)(t / codes / codes), (uint32_t)(t / codes % codes), (uint32_t)(t % codes));
        }
        tick(m);
        c.n += S;
        compare("triples", i);
    }
    const uint32_t top = codes / 2 - 1;
    for (uint32_t sign = 0; sign < 2; sign++) {
        acc1 = acc2 = 0;
        for (uint32_t i = 0; i < lowbit::wire::MAX_K; i += S) {
            m->first = i == 0;
            for (unsigned l = 0; l < S; l++) lane(l, top | sign << (cw - 1), top, top | sign << (cw - 1));
            tick(m);
            c.n += S;
        }
        compare("widest block", lowbit::wire::MAX_K / S);
    }
    delete m;
    return c.report();
}

// ---------------------------------------------------------------------------------------------
// MLS at the run-time envelope: mls_rt_decode (codes -> elements) and mls_pe (SIGW 8, SHW 4,
// PW 44, 58-bit accumulator) against MlsMac::decode / MlsMac::mac, for every valid format.
// ---------------------------------------------------------------------------------------------
static std::vector<Format> mls_formats() {
    std::vector<Format> out;
    for (unsigned ex = 0; ex <= lowbit::MLS_MAX_EX; ex++)
        for (unsigned mx = 0; mx <= lowbit::MLS_MAX_MX; mx++)
            if (ex + mx >= 1) out.push_back(Format{ex, mx, 8, 1});
    return out;
}

template <class D>
static bool decode_rt(D* d, Check& c, uint32_t code, const Format& f, lowbit::MlsElem& e) {
    d->code = code;
    d->ex = f.ex;
    d->mx = f.mx;
    d->eval();
    e = lowbit::MlsMac::decode(code, f);
    if (d->sign != e.sign.to_uint() || d->sig != e.sig.to_uint() || d->sh != e.sh.to_uint()) {
        char msg[256];
        snprintf(msg, sizeof msg, "decode <%u,%u> code 0x%x rtl=(%u,%u,%u) golden=(%u,%u,%u)", f.ex, f.mx, code,
                 d->sign, d->sig, d->sh, e.sign.to_uint(), e.sig.to_uint(), e.sh.to_uint());
        c.fail(msg);
        return false;
    }
    return true;
}

template <class D>
static bool check_mls_rt_decode(const char* name) {
    Check c(name);
    D* d = new D;
    lowbit::MlsElem e;
    for (const Format& f : mls_formats())
        for (uint32_t code = 0; code < 4096; code++, c.n++) decode_rt(d, c, code, f, e);
    delete d;
    return c.report();
}

template <class D, class M>
static bool check_mls_rt_pe(const char* name, unsigned S, long random_pairs) {
    Check c(name);
    D* d = new D;
    M* m = new M;
    for (const Format& f : mls_formats()) {
        const unsigned cw = 1 + f.ex + f.mx;
        const bool exhaustive = S == 1 && cw <= 8;
        const long n = exhaustive ? (1L << (2 * cw)) : count(random_pairs / 10);
        lowbit::MlsMac::Acc acc = 0;
        long left = 0;
        for (long i = 0; i < n; i += S) {
            bool first = left == 0;
            if (first) left = 1 + (long)below(1 + 64 / S);
            left--;
            m->first = first;
            if (first) acc = 0;
            for (unsigned l = 0; l < S; l++) {
                // exhaustive: pair i + l; random: any 12-bit codes (bits above the format ignored)
                uint32_t a = exhaustive ? (uint32_t)((i + l) >> cw) & ((1u << cw) - 1) : (uint32_t)bits(12);
                uint32_t b = exhaustive ? (uint32_t)(i + l) & ((1u << cw) - 1) : (uint32_t)bits(12);
                lowbit::MlsElem ea, eb;
                decode_rt(d, c, a, f, ea);
                decode_rt(d, c, b, f, eb);
                put(m->sign_a, l, 1, ea.sign.to_uint());
                put(m->sign_b, l, 1, eb.sign.to_uint());
                put(m->sig_a, 8 * l, 8, ea.sig.to_uint());
                put(m->sig_b, 8 * l, 8, eb.sig.to_uint());
                put(m->sh_a, 4 * l, 4, ea.sh.to_uint());
                put(m->sh_b, 4 * l, 4, eb.sh.to_uint());
                acc = lowbit::MlsMac::mac(acc, ea, eb);
            }
            tick(m);
            c.n += S;
            int64_t got = sext((uint64_t)m->acc, lowbit::MLS_ACC_W);
            if (got != acc.to_int64()) {
                char msg[256];
                snprintf(msg, sizeof msg, "<%u,%u> step %ld rtl=%lld golden=%lld", f.ex, f.mx, i, (long long)got,
                         (long long)acc.to_int64());
                c.fail(msg);
            }
        }
    }
    // The widest block: MAX_K products of the largest <4,7> magnitudes.
    Format f = {4, 7, 8, 1};
    for (uint32_t sign = 0; sign < 2; sign++) {
        lowbit::MlsMac::Acc acc = 0;
        lowbit::MlsElem e = lowbit::MlsMac::decode(0x7FF | sign << 11, f), p = lowbit::MlsMac::decode(0x7FF, f);
        for (uint32_t i = 0; i < lowbit::wire::MAX_K; i += S) {
            m->first = i == 0;
            for (unsigned l = 0; l < S; l++) {
                put(m->sign_a, l, 1, e.sign.to_uint());
                put(m->sign_b, l, 1, 0);
                put(m->sig_a, 8 * l, 8, e.sig.to_uint());
                put(m->sig_b, 8 * l, 8, p.sig.to_uint());
                put(m->sh_a, 4 * l, 4, e.sh.to_uint());
                put(m->sh_b, 4 * l, 4, p.sh.to_uint());
                acc = lowbit::MlsMac::mac(acc, e, p);
            }
            tick(m);
            c.n += S;
        }
        if (sext((uint64_t)m->acc, lowbit::MLS_ACC_W) != acc.to_int64()) c.fail("widest block");
    }
    delete d;
    delete m;
    return c.report();
}

// ---------------------------------------------------------------------------------------------
// Group scaling and block finishers: MlsMac::shift_add_scale, MlsMac::block_value,
// PotMac::block_value, then the engine's fp32 `out += value` from +0.0.
// ---------------------------------------------------------------------------------------------
static int64_t random_int(unsigned w) {  // signed, w bits, magnitudes spread over all bit lengths
    unsigned len = (unsigned)below(w);
    int64_t v = (int64_t)bits(len);
    if (below(8) == 0) v = (int64_t)mask(len);  // all ones: rounding carries
    return below(2) ? -v : v;
}

template <class M>
static bool check_mls_scale(const char* name, long n) {
    Check c(name);
    M* m = new M;
    const unsigned w = lowbit::MLS_ACC_W;
    for (long i = 0; i < count(n); i++, c.n++) {
        int64_t p = i < 4 ? (i & 1 ? -(1ll << (w - 1)) : (1ll << (w - 1)) - 1) : random_int(w);
        unsigned ma = (unsigned)bits(1), mb = (unsigned)bits(1), mg = i < 4 ? 1 : (unsigned)bits(1);
        m->p = (uint64_t)p & mask(w);
        m->ma = ma;
        m->mb = mb;
        m->mg = mg;
        m->eval();
        int64_t want = lowbit::MlsMac::shift_add_scale((lowbit::MlsMac::Acc)p, ma, mb, mg).to_int64();
        if (sext((uint64_t)m->t, lowbit::MLS_SCALED_W) != want) {
            char msg[256];
            snprintf(msg, sizeof msg, "p=%lld ma=%u mb=%u mg=%u", (long long)p, ma, mb, mg);
            c.fail(msg);
        }
    }
    delete m;
    return c.report();
}

// One finisher sequence: blocks of `per_output` values per output, out from +0.0.
static float plain_add(float out, float v) { return out + v; }

template <class M, class Drive, class Value, class Add = float (*)(float, float)>
static void finish_sequence(M* m, Check& c, long n, Drive drive, Value value, Add add = plain_add) {
    float out = 0.0f;
    long left = 0;
    for (long i = 0; i < n; i++) {
        bool first = left == 0;
        if (first) left = 1 + (long)below(16);
        left--;
        m->first = first;
        drive(i);
        float v = value();
        out = add(first ? 0.0f : out, v);
        tick(m);
        c.n++;
        if (!same_f32(m->out, u32(out))) {
            char msg[256];
            snprintf(msg, sizeof msg, "step %ld value 0x%08x rtl=0x%08x golden=0x%08x", i, u32(v), (unsigned)m->out,
                     u32(out));
            c.fail(msg);
        }
    }
}

template <class M>
static bool check_mls_finish(const char* name, unsigned ex, unsigned mx, long n) {
    Check c(name);
    M* m = new M;
    Format f = {ex, mx, 8, 1};
    const unsigned acc_w = 2 * (mx + (1u << ex) - 1) + 14;
    int64_t p = 0;
    uint16_t sa = 0, sb = 0;
    finish_sequence(m, c, count(n),
        [&](long i) {
            p = i < 2 ? (i ? -(1ll << (acc_w - 1)) : (1ll << (acc_w - 1)) - 1) : random_int(acc_w);
            sa = (uint16_t)bits(9);
            sb = (uint16_t)(below(4) ? bits(9) : bits(2));  // small exponent codes: large values
            m->p = (uint64_t)p & mask(acc_w);
            m->sa = sa;
            m->sb = sb;
        },
        [&]() { return lowbit::MlsMac::block_value((lowbit::MlsMac::Acc)p, sa, sb, f); });
    delete m;
    return c.report();
}

template <class M>
static bool check_mls_rt_finish(const char* name, long n) {
    Check c(name);
    M* m = new M;
    std::vector<Format> fmts;
    for (const Format& f0 : mls_formats())
        for (unsigned eg = 0; eg <= lowbit::MLS_MAX_EG; eg++)
            for (unsigned mg = 0; mg <= lowbit::MLS_MAX_MG; mg++) fmts.push_back(Format{f0.ex, f0.mx, eg, mg});
    Format f = fmts[0];
    int64_t p = 0;
    uint16_t sa = 0, sb = 0;
    finish_sequence(m, c, count(n),
        [&](long i) {
            if (i % 64 == 0) f = fmts[below(fmts.size())];
            p = random_int(lowbit::MLS_ACC_W);
            sa = (uint16_t)bits(16);  // bits above eg + mg are ignored
            sb = (uint16_t)(below(4) ? bits(16) : bits(3));
            m->p = (uint64_t)p & mask(lowbit::MLS_ACC_W);
            m->sa = sa;
            m->sb = sb;
            m->ex = f.ex;
            m->mx = f.mx;
            m->eg = f.eg;
            m->mg = f.mg;
        },
        [&]() { return lowbit::MlsMac::block_value((lowbit::MlsMac::Acc)p, sa, sb, f); });
    delete m;
    return c.report();
}

template <class M>
static bool check_pot_finish(const char* name, long n) {
    Check c(name);
    M* m = new M;
    Format f = {0, 0, 0, 0};
    int64_t p = 0;
    finish_sequence(m, c, count(n),
        [&](long i) {
            p = i < 2 ? (i ? -(1ll << 42) : (1ll << 42) - 1) : random_int(lowbit::POT_ACC_W);
            m->p = (uint64_t)p & mask(lowbit::POT_ACC_W);
        },
        [&]() { return lowbit::PotMac::block_value((lowbit::PotMac::Acc)p, 0, 0, f); });
    delete m;
    return c.report();
}

template <class M>
static bool check_scaled_to_f32(const char* name, long n) {
    Check c(name);
    M* m = new M;
    for (long i = 0; i < count(n); i++, c.n++) {
        int64_t t = random_int(62);
        if (i % 3 == 0) {  // exact ties and near-ties of the 24-bit rounding
            unsigned k = 1 + (unsigned)below(36);
            t = (int64_t)((bits(24) | 1u << 23) << k) + ((1ll << (k - 1)) + (int64_t)below(3) - 1);
            if (below(2)) t = -t;
        }
        int e = i % 5 == 0 ? -(int)below(200) : -(int)below(600);
        m->t = (uint64_t)t & mask(62);
        m->e = (uint32_t)e & 0x7FF;
        m->eval();
        uint32_t want = u32(lowbit::scaled_to_f32(t, e));
        if (m->y != want) {
            char msg[256];
            snprintf(msg, sizeof msg, "t=%lld e=%d rtl=0x%08x golden=0x%08x", (long long)t, e, (unsigned)m->y, want);
            c.fail(msg);
        }
    }
    delete m;
    return c.report();
}

// ---------------------------------------------------------------------------------------------
// fp32 pieces, Mogami, baselines
// ---------------------------------------------------------------------------------------------
static uint32_t edge_f32(long i) {
    static const uint32_t edges[] = {0x00000000u, 0x80000000u, 0x00000001u, 0x80000001u, 0x007FFFFFu, 0x00800000u,
                                     0x00800001u, 0x3F800000u, 0xBF800000u, 0x3F800001u, 0x7F7FFFFFu, 0xFF7FFFFFu,
                                     0x7F800000u, 0xFF800000u, 0x7FC00000u, 0xFFC00001u, 0x7F800001u, 0x3F7FFFFFu,
                                     0x34000000u, 0x33800000u, 0x0C000000u, 0x40000000u};
    return edges[i % (sizeof edges / sizeof edges[0])];
}

// Operands that reach every path: uniform patterns, near-equal exponents (cancellation),
// subnormals, and the edges.
static void operand_pair(long i, uint32_t& a, uint32_t& b) {
    a = (uint32_t)bits(32);
    b = (uint32_t)bits(32);
    switch (i % 6) {
        case 0: break;
        case 1: b = (a & 0xFF800000u) ^ (uint32_t)bits(23) ^ ((uint32_t)bits(1) << 31) ^ ((uint32_t)below(3) << 23); break;
        case 2: a &= 0x807FFFFFu; if (below(2)) b &= 0x80FFFFFFu; break;
        case 3: a = edge_f32((long)below(1000)); break;
        case 4: a = edge_f32((long)below(1000)); b = edge_f32((long)below(1000)); break;
        default: b = (a ^ 0x80000000u) + (uint32_t)below(5) - 2; break;
    }
}

template <class M, class Op>
static bool check_f32_binary(const char* name, long n, Op op) {
    Check c(name);
    M* m = new M;
    for (long i = 0; i < count(n); i++, c.n++) {
        uint32_t a, b;
        operand_pair(i, a, b);
        m->a = a;
        m->b = b;
        m->eval();
        uint32_t want = u32(op(f32(a), f32(b)));
        if (!same_f32(m->y, want)) {
            char msg[256];
            snprintf(msg, sizeof msg, "a=0x%08x b=0x%08x rtl=0x%08x golden=0x%08x", a, b, (unsigned)m->y, want);
            c.fail(msg);
        }
    }
    delete m;
    return c.report();
}

// Mogami operands: random patterns plus the rule's boundaries (zeros, subnormals, Inf/NaN, sums
// at the underflow and saturation edges).
static uint32_t mogami_operand(long i, uint32_t other, unsigned b) {
    const uint32_t bias = b == 32 ? 0x3F800000u : 0x3F80u, minn = b == 32 ? 0x00800000u : 0x80u;
    const uint32_t maxf = b == 32 ? 0x7F7FFFFFu : 0x7F7Fu, sign = b == 32 ? 0x80000000u : 0x8000u;
    uint32_t s = (uint32_t)bits(1) ? sign : 0, mo = other & (sign - 1);
    switch (i % 5) {
        case 0: return (uint32_t)bits(b);
        case 1: return s | ((bias + minn - mo + (uint32_t)below(5) - 2) & (sign - 1));  // underflow edge
        case 2: return s | ((maxf + bias - mo + (uint32_t)below(5) - 2) & (sign - 1));  // saturation edge
        case 3: return b == 32 ? edge_f32((long)below(1000)) : edge_f32((long)below(1000)) >> 16;
        default: return s | (uint32_t)bits(b == 32 ? 23 : 7);  // zero or subnormal
    }
}

template <class M, unsigned B>
static bool check_mogami_mul(const char* name, long n) {
    Check c(name);
    M* m = new M;
    for (long i = 0; i < count(n); i++, c.n++) {
        uint32_t a = (uint32_t)bits(B), b = mogami_operand(i, a, B);
        if (below(2)) std::swap(a, b);
        m->a = a;
        m->b = b;
        m->eval();
        uint32_t want = lowbit::mogami_mul_bits<B>(a, b);
        if (m->y != want) {
            char msg[256];
            snprintf(msg, sizeof msg, "a=0x%x b=0x%x rtl=0x%x golden=0x%x", a, b, (unsigned)m->y, want);
            c.fail(msg);
        }
    }
    delete m;
    return c.report();
}

template <class M, unsigned B>
static bool check_mogami_mac(const char* name, long n) {
    Check c(name);
    M* m = new M;
    uint32_t a = 0, b = 0;
    finish_sequence(m, c, count(n),
        [&](long i) {
            a = (uint32_t)bits(B);
            b = mogami_operand(i, a, B);
            if (i % 7 < 5) {  // mostly operands of ordinary size, so that sums do cancel
                a = (a & ~(0xFFu << (B - 9))) | ((120u + (uint32_t)below(16)) << (B - 9));
                b = (b & ~(0xFFu << (B - 9))) | ((120u + (uint32_t)below(16)) << (B - 9));
            }
            m->a = a;
            m->b = b;
        },
        [&]() { return lowbit::MogamiRule<B>::to_f32(lowbit::mogami_mul_bits<B>(a, b)); });
    delete m;
    return c.report();
}

// The Mogami MAC's accumulator at its edges: blocks that start tiny (products near the smallest
// normal), near saturation, ordinary or special, whose later products mostly cancel the previous
// one (the same operands, a's sign flipped, b a few ulps off): subnormal and zero sums, Inf
// accumulators (two saturated products), NaN after Inf - Inf, the near path at every shift.
template <class M, unsigned B>
static bool check_mogami_mac_edges(const char* name, long n) {
    Check c(name);
    M* m = new M;
    const unsigned fw = B - 9;
    const uint32_t sign = 1u << (B - 1);
    uint32_t a = 0, b = 0, mode = 0;
    auto field = [&](uint32_t v, uint32_t e) { return (v & ~(0xFFu << fw)) | (e << fw); };
    finish_sequence(m, c, count(n),
        [&](long i) {
            if (m->first || below(4) == 0) {
                if (m->first) mode = (uint32_t)below(4);
                a = (uint32_t)bits(B);
                b = mogami_operand(i, a, B);
                if (mode == 0) {  // ea + eb - 127 in 1..8: products near the smallest normal
                    uint32_t ea = 60 + (uint32_t)below(8);
                    a = field(a, ea);
                    b = field(b, 128 - ea + (uint32_t)below(8));
                } else if (mode == 1) {  // at the saturation edge (case 2 of mogami_operand)
                    b = mogami_operand(5 * i + 2, a, B);
                } else if (mode == 2) {
                    a = field(a, 120 + (uint32_t)below(16));
                    b = field(b, 120 + (uint32_t)below(16));
                }
            } else {  // cancel the previous product, or nearly
                a ^= sign;
                b = (b & sign) | ((b + (uint32_t)below(7) - 3) & (sign - 1));
            }
            m->a = a;
            m->b = b;
        },
        [&]() { return lowbit::MogamiRule<B>::to_f32(lowbit::mogami_mul_bits<B>(a, b)); });
    delete m;
    return c.report();
}

template <class M>
static bool check_fp32_mac(const char* name, long n, bool ftz) {
    Check c(name);
    M* m = new M;
    uint32_t a = 0, b = 0;
    auto fl = [ftz](float f) { return ftz ? flush(f) : f; };
    finish_sequence(m, c, count(n),
        [&](long i) {
            operand_pair(i, a, b);
            if (i % 4 != 3) {  // keep most products finite so that sums matter
                a = (a & 0x807FFFFFu) | ((100u + (uint32_t)below(56)) << 23);
                b = (b & 0x807FFFFFu) | ((100u + (uint32_t)below(56)) << 23);
            }
            m->a = a;
            m->b = b;
        },
        [&]() { return fl(fl(f32(a)) * fl(f32(b))); },
        [&](float out, float v) { return fl(out + v); });
    delete m;
    return c.report();
}

template <class M>
static bool check_int8_mac(const char* name) {
    Check c(name);
    M* m = new M;
    int32_t acc = 0;
    long left = 0;
    for (int pass = 0; pass < 4; pass++)
        for (uint32_t i = 0; i < 65536; i++, c.n++) {
            bool first = left == 0;
            if (first) left = 1 + (long)below(pass < 2 ? 64 : 100000);
            left--;
            int8_t a = (int8_t)(i >> 8), b = (int8_t)(i & 0xFF);
            m->first = first;
            m->a = (uint8_t)a;
            m->b = (uint8_t)b;
            acc = (int32_t)((uint32_t)(first ? 0 : acc) + (uint32_t)((int32_t)a * b));
            tick(m);
            if (m->out != (uint32_t)acc) c.fail("int8 pair");
        }
    delete m;
    return c.report();
}

int main(int argc, char** argv) {
    rng_state = argc > 1 ? strtoull(argv[1], 0, 0) : 1;
    scale_factor = argc > 2 ? atof(argv[2]) : 1.0;
    bool ok = true;
    ok &= check_pot_pe<Vpot_pe1>("pot:4 lanes=1", 1);
    ok &= check_pot_pe<Vpot_pe4>("pot:4 lanes=4", 4);
    ok &= check_pot_pe<Vpot_pe16>("pot:4 lanes=16", 16);
    ok &= check_mls_code_pe<Vmls21_pe1>("mls:2,1 lanes=1", 2, 1, 1);
    ok &= check_mls_code_pe<Vmls21_pe4>("mls:2,1 lanes=4", 2, 1, 4);
    ok &= check_mls_code_pe<Vmls21_pe16>("mls:2,1 lanes=16", 2, 1, 16);
    ok &= check_mls_code_pe<Vmls24_pe1>("mls:2,4 lanes=1", 2, 4, 1);
    ok &= check_mls_code_pe<Vmls24_pe3>("mls:2,4 lanes=3", 2, 4, 3);
    ok &= check_mls_code_pe<Vmls24_pe4>("mls:2,4 lanes=4", 2, 4, 4);
    ok &= check_pack_guard("mls:2,4-pack/guard", 5);
    ok &= check_mls_pack_pe<Vmls24_pack1>("mls:2,4-pack lanes=2", 2, 4, 1, 0);
    ok &= check_mls_pack_pe<Vmls24_pack3>("mls:2,4-pack lanes=6", 2, 4, 3, 300000);
    ok &= check_mls_code_pe<Vmls24_pe16>("mls:2,4 lanes=16", 2, 4, 16);
    ok &= check_mls_rt_decode<Vmlsrt_decode>("mls:4,7/decode");
    ok &= check_mls_rt_pe<Vmlsrt_decode, Vmlsrt_pe1>("mls:4,7 lanes=1", 1, 3000000);
    ok &= check_mls_rt_pe<Vmlsrt_decode, Vmlsrt_pe4>("mls:4,7 lanes=4", 4, 1000000);
    ok &= check_mls_rt_pe<Vmlsrt_decode, Vmlsrt_pe16>("mls:4,7 lanes=16", 16, 1000000);
    ok &= check_mls_scale<Vmlsrt_scale>("mls:4,7/scale", 1000000);
    ok &= check_mls_finish<Vmls21_finish>("mls:2,1/finish", 2, 1, 1000000);
    ok &= check_mls_finish<Vmls24_finish>("mls:2,4/finish", 2, 4, 1000000);
    ok &= check_mls_finish<Vmls21_finish_dsp>("mls:2,1/finish-dsp", 2, 1, 1000000);
    ok &= check_mls_finish<Vmls24_finish_dsp>("mls:2,4/finish-dsp", 2, 4, 1000000);
    ok &= check_mls_rt_finish<Vmlsrt_finish>("mls:4,7/finish", 2000000);
    ok &= check_pot_finish<Vpot_finish>("pot:4/finish", 1000000);
    ok &= check_pot_finish<Vpot_finish_dsp>("pot:4/finish-dsp", 1000000);
    ok &= check_scaled_to_f32<Vscaled_to_f32>("scaled_to_f32", 2000000);
    ok &= check_f32_binary<Vfp32_add>("fp32 add", 3000000, [](float a, float b) { return a + b; });
    ok &= check_f32_binary<Vfp32_add_dsp>("fp32-dsp add", 3000000, [](float a, float b) { return a + b; });
    ok &= check_f32_binary<Vfp32_mul>("fp32 mul", 3000000, [](float a, float b) { return a * b; });
    ok &= check_mogami_mul<Vmogami_mul32, 32>("mogami:fp32/mul", 3000000);
    ok &= check_mogami_mul<Vmogami_mul16, 16>("mogami:bf16/mul", 3000000);
    ok &= check_mogami_mac<Vmogami_mac32, 32>("mogami:fp32 lanes=1", 1000000);
    ok &= check_mogami_mac<Vmogami_mac16, 16>("mogami:bf16 lanes=1", 1000000);
    ok &= check_mogami_mac<Vmogami_mac32_dsp, 32>("mogami:fp32-dsp lanes=1", 1000000);
    ok &= check_mogami_mac<Vmogami_mac16_dsp, 16>("mogami:bf16-dsp lanes=1", 1000000);
    ok &= check_mogami_mac_edges<Vmogami_mac32, 32>("mogami:fp32/edges", 1000000);
    ok &= check_mogami_mac_edges<Vmogami_mac32_dsp, 32>("mogami:fp32-dsp/edges", 1000000);
    ok &= check_mogami_mac_edges<Vmogami_mac16_dsp, 16>("mogami:bf16-dsp/edges", 1000000);
    ok &= check_f32_binary<Vfp32_add_ftz>("fp32-ftz add", 2000000,
                                          [](float a, float b) { return flush(flush(a) + flush(b)); });
    ok &= check_f32_binary<Vfp32_mul_ftz>("fp32-ftz mul", 2000000,
                                          [](float a, float b) { return flush(flush(a) * flush(b)); });
    ok &= check_fp32_mac<Vfp32_mac>("fp32 lanes=1", 1000000, false);
    ok &= check_fp32_mac<Vfp32_mac_ftz>("fp32-ftz lanes=1", 1000000, true);
    ok &= check_int8_mac<Vint8_mac>("int8 lanes=1");
    printf("%s\n", ok ? "ALL PASS" : "SOME FAILED");
    return ok ? 0 : 1;
}
