// Thin AXI-Stream top: interface pragmas and one call into the engine (lowbit/gemm.hpp).
// s_axilite registers (offsets fixed to lowbit.kernel.wire.Reg): STATUS 0x10, ID_VERSION 0x18, CYCLES 0x20.
#include "lowbit_gemm_axis.h"

#include "lowbit/gemm.hpp"

namespace {

struct AxisSource {
    hls::stream<axis_word>& s;
    bool done;
    uint32_t beats;
    explicit AxisSource(hls::stream<axis_word>& st) : s(st), done(false), beats(0) {}
    bool read(uint64_t& w) {
        if (done) return false;
        axis_word v = s.read();
        w = (uint64_t)v.data;
        done = v.last == 1;
        beats++;
        return true;
    }
    bool ended() const { return done; }
    void drain() {
        uint64_t w;
    drain_input:
        while (!done) {
#pragma HLS LOOP_TRIPCOUNT min=0 max=65536
#pragma HLS PIPELINE II=1
            read(w);
        }
    }
};

struct AxisSink {
    hls::stream<axis_word>& s;
    explicit AxisSink(hls::stream<axis_word>& st) : s(st) {}
    void write(uint64_t w, bool last) {
        axis_word v;
        v.data = w;
        v.keep = 0xFF;
        v.strb = 0xFF;
        v.user = 0;
        v.id = 0;
        v.dest = 0;
        v.last = last ? 1 : 0;
        s.write(v);
    }
};

}  // namespace

void lowbit_gemm_axis(hls::stream<axis_word>& in_stream, hls::stream<axis_word>& out_stream,
                      uint32_t& status, uint32_t& id_version, uint32_t& cycles) {
#pragma HLS INTERFACE mode=axis port=in_stream
#pragma HLS INTERFACE mode=axis port=out_stream
#pragma HLS INTERFACE mode=s_axilite port=status offset=0x10 bundle=control
#pragma HLS INTERFACE mode=s_axilite port=id_version offset=0x18 bundle=control
#pragma HLS INTERFACE mode=s_axilite port=cycles offset=0x20 bundle=control
#pragma HLS INTERFACE mode=s_axilite port=return bundle=control
    AxisSource src(in_stream);
    AxisSink snk(out_stream);
    id_version = lowbit::wire::ID_VERSION;
    status = lowbit::run_gemm(src, snk);
    cycles = src.beats;
}
