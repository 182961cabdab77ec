// The block-scaled low-bit GEMM engine: parses the wire header (lowbit/wire.hpp), keeps A on chip,
// streams B row by row and emits C^T [N][M] fp32, then the STATUS word (see host/lowbit/kernel/wire.py).
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
struct KernelConfig {
    static const uint32_t SCALE_BUF = LOWBIT_SCALE_BUF;
    static const uint32_t A_ELEMS = LOWBIT_A_ELEMS;
    static const uint32_t K_MAX = LOWBIT_K_MAX;  // the longest K of one call (the B tiles' length)
    // The arithmetic this build carries (bit i: wire::Arith i) and its MLS format bounds.
    static const uint32_t ARITH_MASK = BoardConfig::ARITH_MASK;
    static const unsigned MLS_MAX_EX = BoardConfig::MLS_MAX_EX, MLS_MAX_MX = BoardConfig::MLS_MAX_MX;
};
static_assert(KernelConfig::A_ELEMS >= KernelConfig::K_MAX, "A must hold one row of the longest K-tile");
static_assert(KernelConfig::A_ELEMS <= wire::MAX_M * wire::MAX_K, "A larger than the protocol can fill");
static_assert(KernelConfig::SCALE_BUF >= wire::MAX_M, "one block per row of A must fit");
static_assert(KernelConfig::K_MAX >= 1 && KernelConfig::K_MAX <= wire::MAX_K, "K_MAX within the protocol");

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
    if ((uint64_t)h.m * h.k > KernelConfig::A_ELEMS) return STATUS_BAD_DIMS;
    return STATUS_OK;
}

inline uint64_t status_word(uint32_t status) { return ((uint64_t)wire::MAGIC << 32) | status; }

// Reads lanes of one section; each section starts on a fresh word.
template <class Src>
struct LaneReader {
    Src& src;
    uint64_t word;
    unsigned lane, per_word, bits;
    bool ok;

    LaneReader(Src& s, unsigned lane_bits) : src(s), word(0), lane(0), per_word(64 / lane_bits), bits(lane_bits), ok(true) {
        lane = per_word;
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

template <class Policy>
struct GemmEngine {
    typedef typename Policy::Elem Elem;
    typedef typename Policy::Acc Acc;

    // C[0..M-1, n] for one streamed row n of B: the M output lanes work in parallel (A is stored
    // k-major, one bank per lane), each with its own intra-block accumulator and fp32 block sum.
    static void column(const Elem* a_km, const Elem* b_row, const uint16_t* a_scale, const uint16_t* sb,
                       const Header& h, uint32_t nb, float* out) {
        Acc acc[wire::MAX_M];
#pragma HLS ARRAY_PARTITION variable=acc cyclic factor=16
    init_out:
        for (uint32_t m = 0; m < h.m; m++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=128
            out[m] = 0.0f;
        }
    block_loop:
        for (uint32_t b = 0; b < nb; b++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=64
            uint32_t k0 = b * h.block, k1 = k0 + h.block < h.k ? k0 + h.block : h.k;
        init_acc:
            for (uint32_t m = 0; m < h.m; m++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=128
                acc[m] = Policy::zero();
            }
        intra_block:
            for (uint32_t k = k0; k < k1; k++) {
#pragma HLS LOOP_TRIPCOUNT min=9 max=8192
                const Elem bk = b_row[k];
                const Elem* a_k = a_km + k * h.m;
            mac_lanes:
                for (uint32_t m = 0; m < h.m; m++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=128
#pragma HLS UNROLL factor=16
#pragma HLS PIPELINE II=1
                    acc[m] = Policy::mac(acc[m], a_k[m], bk);
                }
            }
        scale_and_sum:
            for (uint32_t m = 0; m < h.m; m++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=128
#pragma HLS UNROLL factor=16
#pragma HLS PIPELINE II=1
                out[m] += Policy::block_value(acc[m], a_scale[m * nb + b], sb[b], h.fmt);
            }
        }
    }

    template <class Src, class Snk>
    static uint32_t run(const Header& h, Src& in, Snk& out) {
        static Elem a_buf[KernelConfig::A_ELEMS];  // k-major: a_buf[k * M + m]
        static Elem b_row[wire::MAX_K];
        static float c_col[wire::MAX_M];
#pragma HLS ARRAY_PARTITION variable=a_buf cyclic factor=16
#pragma HLS ARRAY_PARTITION variable=c_col cyclic factor=16
        static uint16_t a_scale[KernelConfig::SCALE_BUF];
        static uint16_t b_scale[KernelConfig::SCALE_BUF];
#pragma HLS ARRAY_PARTITION variable=b_row cyclic factor=8
        const bool scaled = h.arith == wire::ARITH_MLS;
        const uint32_t nb = scaled ? nblocks_of(h) : 1;
        const unsigned lane_bits = lane_bits_of(h);
        if (scaled) {
            LaneReader<Src> rd(in, 16);
        read_a_scales:
            for (uint32_t i = 0; i < h.m * nb; i++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=8192
#pragma HLS PIPELINE II=1
                a_scale[i] = rd.next();
            }
            if (!rd.ok) return wire::STATUS_TRUNCATED;
        } else {
            a_scale[0] = 0;
        }
        {
            LaneReader<Src> rd(in, lane_bits);
        read_a_codes:
            for (uint32_t m = 0; m < h.m; m++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=128
                for (uint32_t k = 0; k < h.k; k++) {
#pragma HLS LOOP_TRIPCOUNT min=9 max=8192
#pragma HLS PIPELINE II=1
                    a_buf[k * h.m + m] = Policy::decode(rd.next(), h.fmt);
                }
            }
            if (!rd.ok) return wire::STATUS_TRUNCATED;
        }
        if (scaled) {
            LaneReader<Src> rd(in, 16);
        read_b_scales:
            for (uint32_t i = 0; i < h.n * nb; i++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=65536
#pragma HLS PIPELINE II=1
                b_scale[i] = rd.next();
            }
            if (!rd.ok) return wire::STATUS_TRUNCATED;
        } else {
            b_scale[0] = 0;
        }
        OutPacker<Snk> pack(out);
        LaneReader<Src> rd(in, lane_bits);
    stream_b_rows:
        for (uint32_t n = 0; n < h.n; n++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=4096
        read_b_row:
            for (uint32_t k = 0; k < h.k; k++) {
#pragma HLS LOOP_TRIPCOUNT min=9 max=8192
#pragma HLS PIPELINE II=1
                b_row[k] = Policy::decode(rd.next(), h.fmt);
            }
            if (!rd.ok) {
                pack.flush();
                return wire::STATUS_TRUNCATED;
            }
            column(a_buf, b_row, a_scale, b_scale + (scaled ? n * nb : 0), h, nb, c_col);
        output_column:
            for (uint32_t m = 0; m < h.m; m++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=128
#pragma HLS PIPELINE II=1
                pack.push(c_col[m]);
            }
        }
        pack.flush();
        return wire::STATUS_OK;
    }
};

// The engine of an arithmetic this build carries; the others are never instantiated, so a board build
// synthesises one family (check_header has already answered BAD_FORMAT for the rest).
template <class Policy, unsigned ARITH, bool ON = ((KernelConfig::ARITH_MASK >> ARITH) & 1) != 0>
struct Carried {
    template <class Src, class Snk>
    static uint32_t run(const Header& h, Src& in, Snk& out) { return GemmEngine<Policy>::run(h, in, out); }
};
template <class Policy, unsigned ARITH>
struct Carried<Policy, ARITH, false> {
    template <class Src, class Snk>
    static uint32_t run(const Header&, Src&, Snk&) { return wire::STATUS_BAD_FORMAT; }
};

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
                case wire::ARITH_MLS: status = Carried<MlsMac, wire::ARITH_MLS>::run(h, in, out); break;
                case wire::ARITH_POT: status = Carried<PotMac, wire::ARITH_POT>::run(h, in, out); break;
                case wire::ARITH_MOGAMI_FP32:
                    status = Carried<MogamiMac<32>, wire::ARITH_MOGAMI_FP32>::run(h, in, out);
                    break;
                default: status = Carried<MogamiMac<16>, wire::ARITH_MOGAMI_BF16>::run(h, in, out); break;
            }
            // Words beyond what the header announces: the stream and the header disagree.
            if (status == wire::STATUS_OK && !in.ended()) status = wire::STATUS_BAD_DIMS;
        }
    }
    in.drain();
    out.write(status_word(status), true);
    return status;
}

}  // namespace lowbit
