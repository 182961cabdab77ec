// AXI-Stream top for Zynq boards behind an AXI DMA (no scatter-gather, 64-bit streams).
#pragma once
#include <ap_axi_sdata.h>
#include <hls_stream.h>
#include <stdint.h>

typedef ap_axiu<64, 0, 0, 0> axis_word;

void lowbit_gemm_axis(hls::stream<axis_word>& in_stream, hls::stream<axis_word>& out_stream,
                      uint32_t& status, uint32_t& id_version, uint32_t& cycles);

#ifndef __SYNTHESIS__
// What an AXI DMA's MM2S channel does with a buffer of n words: one beat per word, all bytes
// valid, TLAST on the last. Used by the testbench and the emulation backend (C-simulation only).
inline void dma_mm2s(const uint64_t* words, uint64_t n, hls::stream<axis_word>& s) {
    for (uint64_t i = 0; i < n; i++) {
        axis_word w;
        w.data = words[i];
        w.keep = 0xFF;
        w.strb = 0xFF;
        w.user = 0;
        w.id = 0;
        w.dest = 0;
        w.last = (i + 1 == n) ? 1 : 0;
        s.write(w);
    }
}
#endif
