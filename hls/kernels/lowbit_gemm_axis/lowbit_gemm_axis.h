// AXI-Stream top for Zynq boards behind an AXI DMA (no scatter-gather, 64-bit streams).
#pragma once
#include <ap_axi_sdata.h>
#include <hls_stream.h>
#include <stdint.h>

typedef ap_axiu<64, 0, 0, 0> axis_word;

void lowbit_gemm_axis(hls::stream<axis_word>& in_stream, hls::stream<axis_word>& out_stream,
                      uint32_t& status, uint32_t& id_version, uint32_t& cycles);
