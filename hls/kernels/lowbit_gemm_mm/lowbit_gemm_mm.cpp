// Thin m_axi top: the input's end (TLAST on the stream top) is in_words; writes stop at out_capacity.
// A DATAFLOW region of five processes (UG1399: single producer / single consumer streams, no
// feedback): load reads `in` in one unconditional sequential loop of 512-bit beats (a burst), narrow
// splits beats into the engine's 64-bit words, compute runs the engine on that stream, widen packs
// output words into beats, store writes them sequentially. The engine's reads are data-dependent
// (the header decides them), so they never touch the m_axi port directly.
#include "lowbit_gemm_mm.h"

#include <hls_stream.h>

#include "lowbit/gemm.hpp"

namespace {

struct OutWord {
    uint64_t word;
    bool last;
};

struct OutBeat {
    lowbit_beat data;
    bool last;
    uint32_t status, written;  // valid on the last beat
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
    void drain() {  // the narrow process writes every word: take the rest, or the region stalls
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

void load_beats(const lowbit_beat* in, uint32_t in_words, hls::stream<lowbit_beat>& beats) {
    const uint32_t n = (in_words + LOWBIT_WORDS_PER_BEAT - 1) / LOWBIT_WORDS_PER_BEAT;
load_input:
    for (uint32_t i = 0; i < n; i++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=1024
#pragma HLS PIPELINE II=1
        beats.write(in[i]);
    }
}

void narrow(hls::stream<lowbit_beat>& beats, uint32_t in_words, hls::stream<uint64_t>& words) {
    lowbit_beat b = 0;
narrow_words:
    for (uint32_t i = 0; i < in_words; i++) {
#pragma HLS LOOP_TRIPCOUNT min=1 max=8192
#pragma HLS PIPELINE II=1
        const unsigned lane = i % LOWBIT_WORDS_PER_BEAT;
        if (lane == 0) b = beats.read();
        words.write((uint64_t)b(64 * lane + 63, 64 * lane));
    }
}

void compute(hls::stream<uint64_t>& words, uint32_t in_words, hls::stream<OutWord>& outs) {
    StreamSource src(words, in_words);
    StreamSink snk(outs);
    lowbit::run_gemm(src, snk);
}

// Output words into beats. Words past out_capacity are dropped, and the status word (always last)
// lands in the last word of the capacity when the output is longer, so it is never lost.
void widen(hls::stream<OutWord>& outs, uint32_t out_capacity, hls::stream<OutBeat>& beats) {
    lowbit_beat cur = 0;
    uint32_t pos = 0, held = 0;  // next word position; beat index of `cur`
    OutWord v;
widen_words:
    do {
#pragma HLS LOOP_TRIPCOUNT min=1 max=8192
#pragma HLS PIPELINE II=1
        v = outs.read();
        uint32_t at = pos;
        if (v.last && pos >= out_capacity && out_capacity > 0) at = out_capacity - 1;
        if (at < out_capacity) {
            if (at / LOWBIT_WORDS_PER_BEAT != held) {  // the next beat starts: the held one is complete
                OutBeat b = {cur, false, 0, 0};
                beats.write(b);
                cur = 0;
                held = at / LOWBIT_WORDS_PER_BEAT;
            }
            const unsigned lane = at % LOWBIT_WORDS_PER_BEAT;
            cur(64 * lane + 63, 64 * lane) = v.word;
            pos = at + 1;
        }
    } while (!v.last);
    OutBeat b = {cur, true, (uint32_t)(v.word & 0xFFFFFFFFu), pos};
    beats.write(b);
}

// Every beat widen sends lands (it sends none past the capacity, and with no capacity only the
// status beat, which is not written), so the store loop has no conditional access.
void store_beats(hls::stream<OutBeat>& beats, lowbit_beat* out, uint32_t out_capacity, uint32_t* result) {
    OutBeat b;
    if (out_capacity == 0) {
        b = beats.read();
    } else {
        uint32_t i = 0;
    store_output:
        do {
#pragma HLS LOOP_TRIPCOUNT min=1 max=1024
#pragma HLS PIPELINE II=1
            b = beats.read();
            out[i++] = b.data;
        } while (!b.last);
    }
    result[0] = b.status;
    result[1] = b.written;
}

}  // namespace

extern "C" void lowbit_gemm_mm(const lowbit_beat* in, lowbit_beat* out, uint32_t in_words, uint32_t out_capacity,
                               uint32_t* result) {
// depth: the largest golden stream (6,150 words = 769 beats) and the largest output
#pragma HLS INTERFACE mode=m_axi port=in offset=slave bundle=gmem0 depth=1024 max_read_burst_length=64
#pragma HLS INTERFACE mode=m_axi port=out offset=slave bundle=gmem1 depth=1024 max_write_burst_length=64
#pragma HLS INTERFACE mode=m_axi port=result offset=slave bundle=gmem2 depth=2
#pragma HLS INTERFACE mode=s_axilite port=in_words
#pragma HLS INTERFACE mode=s_axilite port=out_capacity
#pragma HLS INTERFACE mode=s_axilite port=return
#pragma HLS DATAFLOW
    hls::stream<lowbit_beat> in_beats("in_beats");
    hls::stream<uint64_t> words("words");
    hls::stream<OutWord> outs("outs");
    hls::stream<OutBeat> out_beats("out_beats");
#pragma HLS STREAM variable=in_beats depth=64
#pragma HLS STREAM variable=words depth=64
#pragma HLS STREAM variable=outs depth=64
#pragma HLS STREAM variable=out_beats depth=64
    load_beats(in, in_words, in_beats);
    narrow(in_beats, in_words, words);
    compute(words, in_words, outs);
    widen(outs, out_capacity, out_beats);
    store_beats(out_beats, out, out_capacity, result);
}
