// m_axi top for Alveo (Vitis kernel flow): the same byte streams as the AXI-Stream top, in memory.
#pragma once
#include <stdint.h>

// in: in_words 64-bit words (header + sections); out: room for Header.output_words() words.
// result[0] = status, result[1] = output words written (the last one is the status word).
extern "C" void lowbit_gemm_mm(const uint64_t* in, uint64_t* out, uint32_t in_words, uint32_t out_capacity,
                               uint32_t* result);
