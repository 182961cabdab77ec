// Host-side packing of word buffers into the m_axi top's 512-bit beats, for the g++ C-simulation
// builds only (the testbench and the emulation); hls/csim is on their include path, not Vitis's.
#pragma once
#include <stdint.h>

#include <vector>

#include "../kernels/lowbit_gemm_mm/lowbit_gemm_mm.h"

inline std::vector<lowbit_beat> words_to_beats(const uint64_t* words, uint64_t n) {
    std::vector<lowbit_beat> out((n + LOWBIT_WORDS_PER_BEAT - 1) / LOWBIT_WORDS_PER_BEAT, lowbit_beat(0));
    for (uint64_t i = 0; i < n; i++) out[i / 8](64 * (i % 8) + 63, 64 * (i % 8)) = words[i];
    return out;
}

inline uint64_t beat_word(const std::vector<lowbit_beat>& beats, uint64_t i) {
    return (uint64_t)beats[i / 8](64 * (i % 8) + 63, 64 * (i % 8));
}
