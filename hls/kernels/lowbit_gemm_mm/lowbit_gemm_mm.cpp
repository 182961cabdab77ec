// Thin m_axi top: the input's end (TLAST on the stream top) is in_words; writes stop at out_capacity.
// A DATAFLOW region of three processes (UG1399: single producer / single consumer streams, no
// feedback): load reads `in` in one unconditional sequential loop (a burst), compute runs the
// engine on that stream, store writes `out` sequentially. The engine's reads are data-dependent
// (the header decides them), so they never touch the m_axi port directly.
#include "lowbit_gemm_mm.h"

#include <hls_stream.h>

#include "lowbit/gemm.hpp"

namespace {

struct OutWord {
    uint64_t word;
    bool last;
};

struct StreamSource {
    hls::stream<uint64_t>& s;
    uint32_t n, pos;
    StreamSource(hls::stream<uint64_t>& st, uint32_t words) : s(st), n(words), pos(0) {}
    bool read(uint64_t& w) {
        if (pos >= n) return false;
        w = s.read();
        pos++;
        return true;
    }
    bool ended() const { return pos >= n; }
    void drain() {  // the load process writes every word: take the rest, or the region stalls
    drain_input:
        while (pos < n) {
#pragma HLS LOOP_TRIPCOUNT min=0 max=65536
#pragma HLS PIPELINE II=1
            s.read();
            pos++;
        }
    }
};

struct StreamSink {
    hls::stream<OutWord>& s;
    explicit StreamSink(hls::stream<OutWord>& st) : s(st) {}
    void write(uint64_t w, bool last) {
        OutWord v;
        v.word = w;
        v.last = last;
        s.write(v);
    }
};

void load_words(const uint64_t* in, uint32_t in_words, hls::stream<uint64_t>& words) {
load_input:
    for (uint32_t i = 0; i < in_words; i++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=8192
#pragma HLS PIPELINE II=1
        words.write(in[i]);
    }
}

void compute(hls::stream<uint64_t>& words, uint32_t in_words, hls::stream<OutWord>& outs) {
    StreamSource src(words, in_words);
    StreamSink snk(outs);
    lowbit::run_gemm(src, snk);
}

// The status word (always last) lands even when out_capacity is short; result = {status, written}.
void store_words(hls::stream<OutWord>& outs, uint64_t* out, uint32_t out_capacity, uint32_t* result) {
    uint32_t pos = 0;
    OutWord v;
store_output:
    do {
#pragma HLS LOOP_TRIPCOUNT min=1 max=8192
#pragma HLS PIPELINE II=1
        v = outs.read();
        if (v.last && pos >= out_capacity && out_capacity > 0) pos = out_capacity - 1;
        if (pos < out_capacity) out[pos++] = v.word;
    } while (!v.last);
    result[0] = (uint32_t)(v.word & 0xFFFFFFFFu);
    result[1] = pos;
}

}  // namespace

extern "C" void lowbit_gemm_mm(const uint64_t* in, uint64_t* out, uint32_t in_words, uint32_t out_capacity,
                               uint32_t* result) {
#pragma HLS INTERFACE mode=m_axi port=in offset=slave bundle=gmem0 depth=8192 max_read_burst_length=64
#pragma HLS INTERFACE mode=m_axi port=out offset=slave bundle=gmem1 depth=8192 max_write_burst_length=64
#pragma HLS INTERFACE mode=m_axi port=result offset=slave bundle=gmem1 depth=2
#pragma HLS INTERFACE mode=s_axilite port=in_words
#pragma HLS INTERFACE mode=s_axilite port=out_capacity
#pragma HLS INTERFACE mode=s_axilite port=return
#pragma HLS DATAFLOW
    hls::stream<uint64_t> words("words");
    hls::stream<OutWord> outs("outs");
#pragma HLS STREAM variable=words depth=64
#pragma HLS STREAM variable=outs depth=64
    load_words(in, in_words, words);
    compute(words, in_words, outs);
    store_words(outs, out, out_capacity, result);
}
