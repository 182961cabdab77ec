// Thin m_axi top: the input's end (TLAST on the stream top) is in_words; writes stop at out_capacity.
#include "lowbit_gemm_mm.h"

#include "lowbit/gemm.hpp"

namespace {

struct MemSource {
    const uint64_t* p;
    uint32_t n, pos;
    MemSource(const uint64_t* ptr, uint32_t words) : p(ptr), n(words), pos(0) {}
    bool read(uint64_t& w) {
        if (pos >= n) return false;
        w = p[pos++];
        return true;
    }
    bool ended() const { return pos >= n; }
    void drain() { pos = n; }  // memory needs no draining; the DMA analogue
};

struct MemSink {
    uint64_t* p;
    uint32_t cap, pos;
    MemSink(uint64_t* ptr, uint32_t capacity) : p(ptr), cap(capacity), pos(0) {}
    void write(uint64_t w, bool last) {
        if (last && pos >= cap && cap > 0) pos = cap - 1;  // the status word always lands
        if (pos < cap) p[pos++] = w;
    }
};

}  // namespace

extern "C" void lowbit_gemm_mm(const uint64_t* in, uint64_t* out, uint32_t in_words, uint32_t out_capacity,
                               uint32_t* result) {
#pragma HLS INTERFACE mode=m_axi port=in offset=slave bundle=gmem0 depth=8192
#pragma HLS INTERFACE mode=m_axi port=out offset=slave bundle=gmem1 depth=8192
#pragma HLS INTERFACE mode=m_axi port=result offset=slave bundle=gmem1 depth=2
#pragma HLS INTERFACE mode=s_axilite port=in_words
#pragma HLS INTERFACE mode=s_axilite port=out_capacity
#pragma HLS INTERFACE mode=s_axilite port=return
    MemSource src(in, in_words);
    MemSink snk(out, out_capacity);
    result[0] = lowbit::run_gemm(src, snk);
    result[1] = snk.pos;
}
