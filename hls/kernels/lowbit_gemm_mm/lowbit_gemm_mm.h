// m_axi top for Alveo (Vitis kernel flow): the same word streams as the AXI-Stream top, in memory,
// through 512-bit ports (8 words a beat, word i in bits [64 (i % 8), 64 (i % 8) + 63] of beat i / 8).
#pragma once
#include <ap_int.h>
#include <stdint.h>

typedef ap_uint<512> lowbit_beat;
static const unsigned LOWBIT_WORDS_PER_BEAT = 8;

// in: in_words words (header + sections), ceil(in_words / 8) beats; out: room for out_capacity words
// in whole beats. Output beats are written whole: words after the status word in its beat are 0.
// result[0] = status, result[1] = output words written (the last one is the status word).
extern "C" void lowbit_gemm_mm(const lowbit_beat* in, lowbit_beat* out, uint32_t in_words, uint32_t out_capacity,
                               uint32_t* result);
