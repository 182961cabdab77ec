// The block-scaled low-bit GEMM kernel (v2): parses the wire header (lowbit/wire.hpp), keeps A on chip,
// computes C^T [N][M] fp32 on an output-stationary R x C PE array with S-wide K-SIMD, then sends the
// STATUS word (see host/lowbit/kernel/wire.py). docs/hardware.md describes the architecture.
//
//   C[m,n] = SUM_b ( Sa[m,b] Sb[n,b] SUM_{k in block b} A[m,k] B[n,k] )
//
// Summation order (the numpy reference in host/lowbit/kernel/reference.py repeats it):
//   intra-block: the policy's accumulator, k ascending (exact for MLS and PoT);
//   inter-block: fp32, out = ((+0.0f + v_0) + v_1) + ..., blocks ascending.
//
// Source: bool read(uint64_t&) (false once the input's TLAST has passed), bool ended(), void drain().
// Sink:   void write(uint64_t word, bool last).
#pragma once
#include <stdint.h>

#include <hls_stream.h>

#include "lowbit/board_config.hpp"
#include "lowbit/mac.hpp"
#include "lowbit/wire.hpp"

namespace lowbit {

// On-chip limits of one call beyond wire::MAX_* (buffer sizes of this build): the group scales of A
// and of B are held whole (M * nblocks and N * nblocks entries), A as M * K elements. They come from
// the board record (lowbit/board_config.hpp, generated from host/lowbit/kernel/boards.py; select a
// build with -DLOWBIT_BOARD=<name>); the emulation may override them (LOWBIT_SCALE_BUF/LOWBIT_A_ELEMS).
// The header check rejects calls that do not fit with BAD_DIMS, and the host tiles to fit.
#ifndef LOWBIT_SCALE_BUF
#define LOWBIT_SCALE_BUF (BoardConfig::SCALE_BUF)
#endif
#ifndef LOWBIT_A_ELEMS
#define LOWBIT_A_ELEMS (BoardConfig::A_ELEMS)
#endif
#ifndef LOWBIT_K_MAX
#define LOWBIT_K_MAX (BoardConfig::K_MAX)
#endif
#ifndef LOWBIT_A_BANKS
#define LOWBIT_A_BANKS (BoardConfig::ROWS)
#endif
struct KernelConfig {
    static const uint32_t SCALE_BUF = LOWBIT_SCALE_BUF;
    static const uint32_t A_ELEMS = LOWBIT_A_ELEMS;
    static const uint32_t K_MAX = LOWBIT_K_MAX;  // the longest K of one call (the B tiles' length)
    // A is held in A_BANKS row banks (row m in bank m % A_BANKS), so a call needs
    // ceil(M / A_BANKS) * A_BANKS * K <= A_ELEMS: a short M still takes a whole pass of the array.
    static const uint32_t A_BANKS = LOWBIT_A_BANKS;
    // The PE array (the board record's array of this build's family).
    static const unsigned ROWS = BoardConfig::ROWS, COLS = BoardConfig::COLS, SIMD = BoardConfig::SIMD,
                          INTERLEAVE = BoardConfig::INTERLEAVE;
    // Storage of this build (the emulation may check smaller limits against the same storage).
    static const uint32_t A_TILE_DEPTH = BoardConfig::A_ELEMS / BoardConfig::ROWS, B_TILE_DEPTH = BoardConfig::K_MAX;
    // The arithmetic this build carries (bit i: wire::Arith i) and its MLS format bounds.
    static const uint32_t ARITH_MASK = BoardConfig::ARITH_MASK;
    static const unsigned MLS_MAX_EX = BoardConfig::MLS_MAX_EX, MLS_MAX_MX = BoardConfig::MLS_MAX_MX;
};
static_assert(KernelConfig::A_ELEMS >= KernelConfig::K_MAX, "A must hold one row of the longest K-tile");
static_assert(KernelConfig::A_ELEMS <= wire::MAX_M * wire::MAX_K, "A larger than the protocol can fill");
static_assert(KernelConfig::SCALE_BUF >= wire::MAX_M, "one block per row of A must fit");
static_assert(KernelConfig::K_MAX >= 1 && KernelConfig::K_MAX <= wire::MAX_K, "K_MAX within the protocol");
static_assert(KernelConfig::K_MAX <= KernelConfig::B_TILE_DEPTH, "checked K-tiles fit the B tiles");
static_assert(KernelConfig::A_BANKS >= 1 && KernelConfig::ROWS >= 1 && KernelConfig::COLS >= 1 &&
              KernelConfig::SIMD >= 1 && KernelConfig::INTERLEAVE >= 1, "a PE array has at least one PE");

struct Header {
    uint32_t magic, version, op, arith, m, n, k, block;
    Format fmt;
};

inline uint32_t field(const uint64_t* w, unsigned word, unsigned lo, unsigned width) {
    return (uint32_t)((w[word] >> lo) & ((width >= 64) ? ~0ull : ((1ull << width) - 1)));
}

inline Header parse_header(const uint64_t* w) {
    using namespace wire;
    Header h;
    h.magic = field(w, HDR_MAGIC_WORD, HDR_MAGIC_LO, HDR_MAGIC_WIDTH);
    h.version = field(w, HDR_VERSION_WORD, HDR_VERSION_LO, HDR_VERSION_WIDTH);
    h.op = field(w, HDR_OP_WORD, HDR_OP_LO, HDR_OP_WIDTH);
    h.arith = field(w, HDR_ARITH_WORD, HDR_ARITH_LO, HDR_ARITH_WIDTH);
    h.m = field(w, HDR_M_WORD, HDR_M_LO, HDR_M_WIDTH);
    h.n = field(w, HDR_N_WORD, HDR_N_LO, HDR_N_WIDTH);
    h.k = field(w, HDR_K_WORD, HDR_K_LO, HDR_K_WIDTH);
    h.block = field(w, HDR_BLOCK_WORD, HDR_BLOCK_LO, HDR_BLOCK_WIDTH);
    h.fmt.ex = field(w, HDR_EX_WORD, HDR_EX_LO, HDR_EX_WIDTH);
    h.fmt.mx = field(w, HDR_MX_WORD, HDR_MX_LO, HDR_MX_WIDTH);
    h.fmt.eg = field(w, HDR_EG_WORD, HDR_EG_LO, HDR_EG_WIDTH);
    h.fmt.mg = field(w, HDR_MG_WORD, HDR_MG_LO, HDR_MG_WIDTH);
    return h;
}

inline uint32_t nblocks_of(const Header& h) { return (h.k + h.block - 1) / h.block; }

inline unsigned lane_bits_of(const Header& h) {
    if (h.arith == wire::ARITH_POT) return 8;
    if (h.arith == wire::ARITH_MOGAMI_FP32) return 32;
    if (h.arith == wire::ARITH_MOGAMI_BF16) return 16;
    unsigned code_bits = 1 + h.fmt.ex + h.fmt.mx;
    return code_bits <= 4 ? 4 : code_bits <= 8 ? 8 : 16;
}

inline uint32_t check_header(const Header& h) {
    using namespace wire;
    if (h.magic != MAGIC) return STATUS_BAD_MAGIC;
    if (h.version != WIRE_VERSION) return STATUS_BAD_VERSION;
    if (h.arith > ARITH_MOGAMI_BF16 || h.op > OP_WEIGHT_GRAD) return STATUS_BAD_FORMAT;
    if (h.arith == ARITH_MLS) {
        const Format& f = h.fmt;
        if (f.ex > MLS_MAX_EX || f.mx > MLS_MAX_MX || f.ex + f.mx < 1 || f.eg > MLS_MAX_EG || f.mg > MLS_MAX_MG)
            return STATUS_BAD_FORMAT;
    }
    // A well-formed header for an arithmetic or format this bitstream was not built with.
    if (!((KernelConfig::ARITH_MASK >> h.arith) & 1)) return STATUS_BAD_FORMAT;
    if (h.arith == ARITH_MLS && (h.fmt.ex > KernelConfig::MLS_MAX_EX || h.fmt.mx > KernelConfig::MLS_MAX_MX))
        return STATUS_BAD_FORMAT;
    if (h.m < 1 || h.m > MAX_M || h.n < 1 || h.n > MAX_N || h.k < 1 || h.k > MAX_K) return STATUS_BAD_DIMS;
    if (h.k > KernelConfig::K_MAX) return STATUS_BAD_DIMS;
    // block > k is one partial block (the last K-tile of a tiled GEMM can be shorter than a block)
    if (h.block < 1 || h.block > MAX_K) return STATUS_BAD_DIMS;
    if (h.arith != ARITH_MLS && h.block != h.k) return STATUS_BAD_DIMS;
    if (h.arith == ARITH_MLS) {
        uint32_t nb = nblocks_of(h);
        if ((uint64_t)h.m * nb > KernelConfig::SCALE_BUF || (uint64_t)h.n * nb > KernelConfig::SCALE_BUF)
            return STATUS_BAD_DIMS;
    }
    const uint64_t a_rows = (uint64_t)(h.m + KernelConfig::A_BANKS - 1) / KernelConfig::A_BANKS * KernelConfig::A_BANKS;
    if (a_rows * h.k > KernelConfig::A_ELEMS) return STATUS_BAD_DIMS;
    return STATUS_OK;
}

inline uint64_t status_word(uint32_t status) { return ((uint64_t)wire::MAGIC << 32) | status; }

// Where a reader stands in a run of lanes: the current word and the next lane in it.
struct LanePlace {
    uint64_t word;
    unsigned lane;
};

// Reads lanes of one section; each section starts on a fresh word. A section read in several parts
// (B, one column group at a time) carries the reader's place over with place()/resume().
template <class Src>
struct LaneReader {
    Src& src;
    uint64_t word;
    unsigned lane, per_word, bits;
    bool ok;

    LaneReader(Src& s, unsigned lane_bits) : src(s), word(0), lane(0), per_word(64 / lane_bits), bits(lane_bits), ok(true) {
        lane = per_word;
    }
    LanePlace place() const { return LanePlace{word, lane}; }
    void resume(const LanePlace& p) {
        word = p.word;
        lane = p.lane;
    }
    uint32_t next() {
        if (lane == per_word) {
            ok = ok && src.read(word);
            lane = 0;
        }
        uint32_t v = (uint32_t)((word >> (lane * bits)) & ((bits == 32) ? 0xFFFFFFFFull : ((1ull << bits) - 1)));
        lane++;
        return ok ? v : 0;
    }
};

// Packs fp32 outputs two per word, lane 0 = lower index.
template <class Snk>
struct OutPacker {
    Snk& snk;
    uint64_t pending;
    bool half;
    explicit OutPacker(Snk& s) : snk(s), pending(0), half(false) {}
    void push(float v) {
        uint64_t bits = f32_to_bits(v);
        if (!half) {
            pending = bits;
            half = true;
        } else {
            snk.write(pending | (bits << 32), false);
            half = false;
        }
    }
    void flush() {
        if (half) snk.write(pending, false);
        half = false;
    }
};

// Reads one section's words from an hls::stream (the router below has already handled TLAST).
struct WordStream {
    hls::stream<uint64_t>& s;
    explicit WordStream(hls::stream<uint64_t>& st) : s(st) {}
    bool read(uint64_t& w) {
        w = s.read();
        return true;
    }
};

// C-simulation keeps the dataflow loop's tiles off the stack (a U50 B tile is megabytes there);
// synthesis sees the canonical local (non-static) arrays that become ping-pong buffers.
#ifdef __SYNTHESIS__
#define LOWBIT_CSIM_STATIC
#else
#define LOWBIT_CSIM_STATIC static
#endif
// Output idx of a pass in the finishers' storage (see finish).
#if defined(LOWBIT_FAST_CSIM) && !defined(__SYNTHESIS__)
#define OUT(idx) out[idx]
#define LOWBIT_REAL(rows, all) (rows)  // the emulation touches the real rows only
#else
#define OUT(idx) out[(idx) % F][(idx) / F]
#define LOWBIT_REAL(rows, all) (all)  // hardware: every PE row, unrolled
#endif

// Two MACs of one PE column (rows r, r + 1) on one multiplier where the policy has it (PAIRED).
template <class Policy, bool = Policy::PAIRED>
struct PairOf {
    template <class Acc, class Elem>
    static void mac(Acc& acc0, Acc& acc1, const Elem& a0, const Elem& a1, const Elem& b) {
        Policy::mac_pair(acc0, acc1, a0, a1, b);
    }
};
template <class Policy>
struct PairOf<Policy, false> {
    template <class Acc, class Elem>
    static void mac(Acc& acc0, Acc& acc1, const Elem& a0, const Elem& a1, const Elem& b) {
        acc0 = Policy::mac(acc0, a0, b);
        acc1 = Policy::mac(acc1, a1, b);
    }
};
template <class Policy, class Acc, class Elem>
inline void mac_pair(Acc& acc0, Acc& acc1, const Elem& a0, const Elem& a1, const Elem& b) {
    PairOf<Policy>::mac(acc0, acc1, a0, a1, b);
}

// The v2 engine of one arithmetic family (Policy), on the build's PE array:
//
//   route ──A part──> load_a: A scales, A (R row banks), B scales          (once per call)
//         ──B part──> per column group g (DATAFLOW loop, tiles ping-pong between iterations):
//                     load_b(g) -> compute(g) -> finish(g) -> drain(g) ──> pack ──> out
//
// A column group is C x I rows of B (I = INTERLEAVE); a pass is R rows of A. PE (r, c) owns the
// outputs (row p*R + r, columns c*I .. c*I + I - 1 of the group). The k loop visits each block on
// its own, ceil(len / S) steps of S lanes (lanes past the block's end masked), so a SIMD word never
// straddles two blocks and each block sum is exact before it leaves the array.
template <class Policy>
struct ArrayEngine {
    typedef typename Policy::Elem Elem;
    typedef typename Policy::Acc Acc;
    static const unsigned R = KernelConfig::ROWS, C = KernelConfig::COLS, S = KernelConfig::SIMD,
                          I = KernelConfig::INTERLEAVE, NC = C * I;
    // Tiles are split into S lane memories along k (element k in memory k % S, word k / S), so any
    // S-wide window [k0, k0 + S) reads each lane memory exactly once: a block may start anywhere.
    static const uint32_t A_WORDS = KernelConfig::A_TILE_DEPTH / S + 2, B_WORDS = KernelConfig::B_TILE_DEPTH / S + 2;
    // Block finishers shared round-robin by the R x NC sums of a block: the record's FINISHERS (0 for
    // Mogami, whose PEs add in place: its one "finisher" only turns -0.0 into +0.0 once per output).
    static const unsigned F = BoardConfig::FINISHERS > 0 ? BoardConfig::FINISHERS : 1, Q = (R * NC + F - 1) / F;

    struct Sums {  // one block's sums of one pass, [column][row]
        Acc v[NC][R];
    };

    struct Call {  // what every process needs from the header
        Header h;
        uint32_t nb, passes, groups, wpb;  // blocks, row passes, column groups, SIMD words per full block
        bool scaled;
        unsigned lane_bits;
    };

    static Call call_of(const Header& h) {
        Call c;
        c.h = h;
        c.scaled = h.arith == wire::ARITH_MLS;
        c.nb = c.scaled ? nblocks_of(h) : 1;
        c.passes = (h.m + R - 1) / R;
        c.groups = (h.n + NC - 1) / NC;
        c.wpb = ((c.scaled ? h.block : h.k) + S - 1) / S;
        c.lane_bits = lane_bits_of(h);
        return c;
    }

    // The S lanes of bank `bank` at [k, k + S): one read per lane memory (its own word address), then
    // a rotation by k % S, the array edge's only multiplexer.
    template <uint32_t WORDS, unsigned BANKS>
    static void window(const Elem tile[S][WORDS][BANKS], uint32_t k, unsigned bank, Elem out[S]) {
#pragma HLS INLINE
        const unsigned off = k % S;
        Elem v[S];
    lane_memories:
        for (unsigned l = 0; l < S; l++) {
#pragma HLS UNROLL
            v[l] = tile[l][(k + (l + S - off) % S) / S][bank];
        }
    rotate:
        for (unsigned s = 0; s < S; s++) {
#pragma HLS UNROLL
            out[s] = v[(off + s) % S];
        }
    }

    // One element into bank `bank` of a word of BANKS banks: a compile-time bank index with a run-time
    // write enable per bank (the emulation writes the one bank directly).
    template <unsigned BANKS>
    static void put_bank(Elem word[BANKS], unsigned bank, const Elem& e) {
#pragma HLS INLINE
#if defined(LOWBIT_FAST_CSIM) && !defined(__SYNTHESIS__)
        word[bank] = e;
#else
    banks:
        for (unsigned b = 0; b < BANKS; b++) {
#pragma HLS UNROLL
            if (b == bank) word[b] = e;
        }
#endif
    }

    static uint32_t words_of(uint64_t lanes, unsigned bits) { return (uint32_t)((lanes * bits + 63) / 64); }

    // The only reader of the input: exactly the words the header announces, A part then B part. After
    // an early end (TLAST) it supplies zero words, so every process still runs its count and the call
    // terminates with TRUNCATED; a stream longer than announced is drained (BAD_DIMS).
    template <class Src>
    static void route(Src& in, const Call& c, hls::stream<uint64_t>& a_part, hls::stream<uint64_t>& b_part,
                      uint32_t& status) {
        const Header& h = c.h;
        const uint32_t scale_nb = c.scaled ? c.nb : 0;
        const uint32_t a_words = words_of((uint64_t)h.m * scale_nb, 16) + words_of((uint64_t)h.m * h.k, c.lane_bits) +
                                 words_of((uint64_t)h.n * scale_nb, 16);
        const uint32_t total = a_words + words_of((uint64_t)h.n * h.k, c.lane_bits);
        bool short_stream = false;
    route_words:
        for (uint32_t i = 0; i < total; i++) {
#pragma HLS LOOP_TRIPCOUNT min=2 max=65536
#pragma HLS PIPELINE II=1
            uint64_t w = 0;
            if (!in.read(w)) {
                w = 0;
                short_stream = true;
            }
            if (i < a_words) a_part.write(w);
            else b_part.write(w);
        }
        bool long_stream = !in.ended();
        in.drain();
        status = short_stream ? wire::STATUS_TRUNCATED : long_stream ? wire::STATUS_BAD_DIMS : wire::STATUS_OK;
    }

    // A scales, A codes decoded into the R row banks (row m: bank m % R at (m / R) * K + k), B scales.
    static void load_a(hls::stream<uint64_t>& words, const Call& c, Elem a_tile[S][A_WORDS][R], uint16_t a_scale[],
                       uint16_t b_scale[]) {
        const Header& h = c.h;
        WordStream ws(words);
        if (c.scaled) read_scales(ws, h.m * c.nb, a_scale);
        LaneReader<WordStream> rd(ws, c.lane_bits);
        uint32_t row = 0, k = 0, base = 0;
    load_a_codes:
        for (uint32_t i = 0; i < h.m * h.k; i++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=1048576
#pragma HLS PIPELINE II=1
            const Elem e = Policy::decode(rd.next(), h.fmt);
            put_bank<R>(a_tile[(base + k) % S][(base + k) / S], row % R, e);
            if (++k == h.k) {
                k = 0;
                if (++row % R == 0) base += h.k;
            }
        }
        if (c.scaled) read_scales(ws, h.n * c.nb, b_scale);
    }

    static void read_scales(WordStream& ws, uint32_t count, uint16_t out[]) {
        LaneReader<WordStream> rd(ws, 16);
    read_scale_lanes:
        for (uint32_t i = 0; i < count; i++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=65536
#pragma HLS PIPELINE II=1
            out[i] = rd.next();
        }
    }

    // One column group's rows of B into the NC column banks. The B section is one run of lanes, so the
    // reader's place in the current word carries over from the previous group (static state).
    static void load_b(hls::stream<uint64_t>& words, const Call& c, uint32_t g, Elem b_tile[S][B_WORDS][NC]) {
        static LanePlace carried;
        const Header& h = c.h;
        WordStream ws(words);
        LaneReader<WordStream> rd(ws, c.lane_bits);
        if (g != 0) rd.resume(carried);
        const uint32_t n0 = g * NC, rows = h.n - n0 < NC ? h.n - n0 : NC;
        uint32_t col = 0, k = 0;
    load_b_codes:
        for (uint32_t i = 0; i < rows * h.k; i++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=65536
#pragma HLS PIPELINE II=1
            const Elem e = Policy::decode(rd.next(), h.fmt);
            put_bank<NC>(b_tile[k % S][k / S], col, e);
            if (++k == h.k) {
                k = 0;
                col++;
            }
        }
        carried = rd.place();
    }

    // One step of every PE: S lanes of the window at a_k (A) and b_k (B), columns c * I + i.
    static void pe_step(const Elem a_tile[S][A_WORDS][R], const Elem b_tile[S][B_WORDS][NC], uint32_t a_k,
                        uint32_t b_k, unsigned i, uint32_t lanes, Acc acc[NC][R]) {
#pragma HLS INLINE
        Elem aw[R][S];
    edge_rows:
        for (unsigned r = 0; r < R; r++) {
#pragma HLS UNROLL
            window(a_tile, a_k, r, aw[r]);
        }
    pe_cols:
        for (unsigned cc = 0; cc < C; cc++) {
#pragma HLS UNROLL
            const unsigned n = cc * I + i;
            Elem bw[S];
            window(b_tile, b_k, n, bw);
            if (Policy::PAIRED && R % 2 == 0) {
            pe_row_pairs:
                for (unsigned r = 0; r < R; r += 2) {
#pragma HLS UNROLL
                    for (unsigned s = 0; s < S; s++) {
#pragma HLS UNROLL
                        if (s < lanes) mac_pair<Policy>(acc[n][r], acc[n][r + 1], aw[r][s], aw[r + 1][s], bw[s]);
                    }
                }
            } else {
            pe_rows:
                for (unsigned r = 0; r < R; r++) {
#pragma HLS UNROLL
                    Acc v = acc[n][r];
                simd:
                    for (unsigned s = 0; s < S; s++) {
#pragma HLS UNROLL
                        if (s < lanes) v = Policy::mac(v, aw[r][s], bw[s]);
                    }
                    acc[n][r] = v;
                }
            }
        }
    }

    // The same step for S = 1 (no window, no mask): one MAC per PE.
    static void pe_step1(const Elem a_tile[S][A_WORDS][R], const Elem b_tile[S][B_WORDS][NC], uint32_t a_k,
                         uint32_t b_k, unsigned i, unsigned rows, Acc acc[NC][R]) {
#pragma HLS INLINE
    pe1_cols:
        for (unsigned cc = 0; cc < C; cc++) {
#pragma HLS UNROLL
            const unsigned n = cc * I + i;
            const Elem bv = b_tile[0][b_k][n];
#if defined(LOWBIT_FAST_CSIM) && !defined(__SYNTHESIS__)
            // The emulation's form of the row loop, one the host compiler vectorises: the same MACs per
            // accumulator in the same order, over the pass's real rows only (padded rows are never drained).
            Acc* __restrict row = acc[n];
            const Elem* __restrict a = a_tile[0][a_k];
#pragma GCC ivdep
            for (unsigned r = 0; r < rows; r++) row[r] = Policy::mac(row[r], a[r], bv);
#else
        pe1_rows:
            for (unsigned r = 0; r < R; r++) {
#pragma HLS UNROLL
                acc[n][r] = Policy::mac(acc[n][r], a_tile[0][a_k][r], bv);
            }
#endif
        }
    }

    // The PE array over one column group: per pass, one flattened pipeline over (block, SIMD word,
    // interleaved column) with the block-boundary flag from counters; every R x NC x S MAC of a step
    // reads banks whose numbers are compile-time constants.
    static void compute(const Elem a_tile[S][A_WORDS][R], const Elem b_tile[S][B_WORDS][NC], const Call& c,
                        hls::stream<Sums>& sums) {
        const Header& h = c.h;
        const uint32_t block = c.scaled ? h.block : h.k;
        const uint32_t last_len = h.k - (c.nb - 1) * block;
        const uint32_t steps = ((c.nb - 1) * c.wpb + (last_len + S - 1) / S) * I;
    passes:
        for (uint32_t p = 0; p < c.passes; p++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=8
            Acc acc[NC][R];
#pragma HLS ARRAY_PARTITION variable=acc complete dim=0
            const uint32_t base = p * h.k, rows = h.m - p * R < R ? h.m - p * R : R;
        clear:
            for (unsigned n = 0; n < NC; n++)
                for (unsigned r = 0; r < LOWBIT_REAL(rows, R); r++) acc[n][r] = Policy::zero();
            uint32_t b = 0, j = 0, i = 0, k0 = 0;
            uint32_t block_end = block < h.k ? block : h.k, words_here = block_end < h.k ? c.wpb : (last_len + S - 1) / S;
        k_steps:
            for (uint32_t t = 0; t < steps; t++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=65536
#pragma HLS PIPELINE II=1
#pragma HLS DEPENDENCE variable=acc inter false
                if (S == 1) {
                    pe_step1(a_tile, b_tile, base + k0, k0, i, rows, acc);
                } else {
                    pe_step(a_tile, b_tile, base + k0, k0, i, block_end - k0 < S ? block_end - k0 : S, acc);
                }
                if (++i == I) {  // the interleaved columns of this SIMD word are done
                    i = 0;
                    k0 += S;
                    if (++j == words_here) {  // block boundary: the sums leave, the accumulators restart
                        Sums out;
                        for (unsigned n = 0; n < NC; n++)
                            for (unsigned r = 0; r < LOWBIT_REAL(rows, R); r++) {
                                out.v[n][r] = acc[n][r];
                                acc[n][r] = Policy::zero();
                            }
                        sums.write(out);
                        j = 0;
                        b++;
                        k0 = b * block;
                        block_end = k0 + block < h.k ? k0 + block : h.k;
                        words_here = block_end < h.k ? c.wpb : (last_len + S - 1) / S;
                    }
                }
            }
        }
    }

    // Block values (group scales by shift-add, int -> fp32) added per output in ascending block order
    // from +0.0f; F finishers take the R x NC sums of a block round-robin. Padded rows and columns are
    // finished with scale 0 and never drained.
    static void finish(hls::stream<Sums>& sums, const uint16_t a_scale[], const uint16_t b_scale[], const Call& c,
                       uint32_t g, float tile[NC][wire::MAX_M]) {
        const Header& h = c.h;
        const uint32_t n0 = g * NC;
    finish_passes:
        for (uint32_t p = 0; p < c.passes; p++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=8
            const unsigned rows = h.m - p * R < R ? h.m - p * R : R, cols = h.n - n0 < NC ? h.n - n0 : NC;
#if defined(LOWBIT_FAST_CSIM) && !defined(__SYNTHESIS__)
            float out[NC * R];  // the emulation finishes the real outputs only, in a loop it vectorises
#else
            float out[F][Q];  // output idx = n * R + r lives in finisher idx % F's bank, word idx / F
#pragma HLS ARRAY_PARTITION variable=out complete dim=1
#endif
            for (unsigned n = 0; n < NC; n++)
                for (unsigned r = 0; r < LOWBIT_REAL(rows, R); r++) OUT(n * R + r) = 0.0f;
        finish_blocks:
            for (uint32_t b = 0; b < c.nb; b++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=1024
                const Sums s = sums.read();
                uint16_t sa[R], sb[NC];
            finish_scales:
                for (unsigned r = 0; r < LOWBIT_REAL(rows, R); r++)
                    sa[r] = c.scaled && r < rows ? a_scale[(p * R + r) * c.nb + b] : 0;
                for (unsigned n = 0; n < NC; n++) sb[n] = c.scaled && n < cols ? b_scale[(n0 + n) * c.nb + b] : 0;
#if defined(LOWBIT_FAST_CSIM) && !defined(__SYNTHESIS__)
                for (unsigned n = 0; n < cols; n++)
                    for (unsigned r = 0; r < rows; r++) out[n * R + r] += Policy::block_value(s.v[n][r], sa[r], sb[n], h.fmt);
#else
            finishers:
                for (unsigned q = 0; q < Q; q++) {
#pragma HLS PIPELINE II=1
                    for (unsigned f = 0; f < F; f++) {
#pragma HLS UNROLL
                        const unsigned idx = q * F + f, n = idx / R, r = idx % R;
                        if (idx < R * NC) out[f][q] += Policy::block_value(s.v[n][r], sa[r], sb[n], h.fmt);
                    }
                }
#endif
            }
        finish_store:
            for (unsigned n = 0; n < cols; n++)
                for (unsigned r = 0; r < rows; r++) tile[n][p * R + r] = OUT(n * R + r);
        }
    }

    // The group's outputs in wire order (C^T: column n's M values, n ascending).
    static void drain(const float tile[NC][wire::MAX_M], const Call& c, uint32_t g, hls::stream<float>& values) {
        const uint32_t n0 = g * NC, cols = c.h.n - n0 < NC ? c.h.n - n0 : NC;
    drain_cols:
        for (uint32_t n = 0; n < cols; n++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=16
        drain_rows:
            for (uint32_t m = 0; m < c.h.m; m++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=128
#pragma HLS PIPELINE II=1
                values.write(tile[n][m]);
            }
        }
    }

    // A on chip, then the column groups: the canonical dataflow loop (UG1399), one iteration per group;
    // the tiles are its local arrays, so load_b(g + 1) fills one buffer while compute(g) reads the other.
    static void engine(hls::stream<uint64_t>& a_part, hls::stream<uint64_t>& b_part, const Call& c,
                       hls::stream<float>& values) {
        static Elem a_tile[S][A_WORDS][R];  // S x R memories (lane, row bank), A_WORDS deep
#pragma HLS ARRAY_PARTITION variable=a_tile complete dim=1
#pragma HLS ARRAY_PARTITION variable=a_tile complete dim=3
        static uint16_t a_scale[KernelConfig::SCALE_BUF], b_scale[KernelConfig::SCALE_BUF];
        load_a(a_part, c, a_tile, a_scale, b_scale);
    column_groups:
        for (uint32_t g = 0; g < c.groups; g++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=4096
#pragma HLS DATAFLOW
            LOWBIT_CSIM_STATIC Elem b_tile[S][B_WORDS][NC];  // S x C memories (lane, PE column: I rows each)
#pragma HLS ARRAY_PARTITION variable=b_tile complete dim=1
#pragma HLS ARRAY_PARTITION variable=b_tile block factor=C dim=3
            LOWBIT_CSIM_STATIC float tile[NC][wire::MAX_M];
            hls::stream<Sums> sums("sums");
#pragma HLS STREAM variable=sums depth=4
            load_b(b_part, c, g, b_tile);
            compute(a_tile, b_tile, c, sums);
            finish(sums, a_scale, b_scale, c, g, tile);
            drain(tile, c, g, values);
        }
    }

    template <class Snk>
    static void pack(hls::stream<float>& values, uint32_t count, Snk& out) {
        OutPacker<Snk> packer(out);
    pack_values:
        for (uint32_t i = 0; i < count; i++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=65536
#pragma HLS PIPELINE II=1
            packer.push(values.read());
        }
        packer.flush();
    }

    // One checked call: the top-level DATAFLOW region route -> engine -> pack.
    template <class Src, class Snk>
    static uint32_t run(const Header& h, Src& in, Snk& out) { return region(call_of(h), in, out); }

    template <class Src, class Snk>
    static uint32_t region(const Call c, Src& in, Snk& out) {
#pragma HLS DATAFLOW
        hls::stream<uint64_t> a_part("a_part"), b_part("b_part");
        hls::stream<float> values("values");
#pragma HLS STREAM variable=a_part depth=64
#pragma HLS STREAM variable=b_part depth=512
#pragma HLS STREAM variable=values depth=512
        uint32_t status;
        route(in, c, a_part, b_part, status);
        engine(a_part, b_part, c, values);
        pack(values, c.h.m * c.h.n, out);
        return status;
    }
};

// The engine of an arithmetic this build carries; the others are never instantiated, so a board build
// synthesises one family (check_header has already answered BAD_FORMAT for the rest).
template <class Policy, unsigned ARITH, bool ON = ((KernelConfig::ARITH_MASK >> ARITH) & 1) != 0>
struct Carried {
    template <class Src, class Snk>
    static uint32_t run(const Header& h, Src& in, Snk& out) { return ArrayEngine<Policy>::run(h, in, out); }
};
template <class Policy, unsigned ARITH>
struct Carried<Policy, ARITH, false> {
    template <class Src, class Snk>
    static uint32_t run(const Header&, Src&, Snk&) { return wire::STATUS_BAD_FORMAT; }
};

// The MLS policy at this build's format bounds (a board's <2, 4> datapath is narrower than <4, 7>).
typedef MlsMacOf<KernelConfig::MLS_MAX_EX, KernelConfig::MLS_MAX_MX> BuildMls;

// One kernel invocation: header, check, compute, status word (always last, with TLAST).
template <class Src, class Snk>
uint32_t run_gemm(Src& in, Snk& out) {
    uint64_t hw[wire::HEADER_WORDS];
    bool ok = true;
read_header:
    for (unsigned i = 0; i < wire::HEADER_WORDS; i++) ok = ok && in.read(hw[i]);
    uint32_t status = wire::STATUS_TRUNCATED;
    if (ok) {
        Header h = parse_header(hw);
        status = check_header(h);
        if (status == wire::STATUS_OK) {
            switch (h.arith) {
                case wire::ARITH_MLS: status = Carried<BuildMls, wire::ARITH_MLS>::run(h, in, out); break;
                case wire::ARITH_POT: status = Carried<PotMac, wire::ARITH_POT>::run(h, in, out); break;
                case wire::ARITH_MOGAMI_FP32:
                    status = Carried<MogamiMac<32>, wire::ARITH_MOGAMI_FP32>::run(h, in, out);
                    break;
                default: status = Carried<MogamiMac<16>, wire::ARITH_MOGAMI_BF16>::run(h, in, out); break;
            }
        }
    }
    in.drain();
    out.write(status_word(status), true);
    return status;
}

}  // namespace lowbit
