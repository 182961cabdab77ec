// C-simulation testbench of the m_axi (Alveo) top. Usage: tb_lowbit_gemm_mm DIR CASE [CASE...]
// The output buffer is a beat larger than expected and pre-filled with a canary: words written
// beyond the expected stream's last beat fail the case, as do missing words, padding after the
// status word that is not 0, and a wrong result[] pair.
#include "../kernels/lowbit_gemm_mm/lowbit_gemm_mm.h"
#include "lowbit_beats.hpp"
#include "tb_common.hpp"

static const uint64_t CANARY = 0xDEADBEEFCAFEF00Dull;

static int check_case(const std::string& name, const std::vector<uint64_t>& in,
                      const std::vector<uint64_t>& expected) {
    const size_t capacity = expected.size() + LOWBIT_WORDS_PER_BEAT;
    const std::vector<uint64_t> canary(capacity, CANARY);
    std::vector<lowbit_beat> out = words_to_beats(canary.data(), capacity);
    std::vector<lowbit_beat> beats = words_to_beats(in.data(), in.size());
    uint32_t result[2] = {0xFFFFFFFFu, 0};
    lowbit_gemm_mm(beats.data(), out.data(), (uint32_t)in.size(), (uint32_t)capacity, result);
    const size_t padded = (expected.size() + LOWBIT_WORDS_PER_BEAT - 1) / LOWBIT_WORDS_PER_BEAT * LOWBIT_WORDS_PER_BEAT;
    for (size_t i = 0; i < capacity; i++) {
        const uint64_t want = i < expected.size() ? expected[i] : i < padded ? 0 : CANARY;
        if (beat_word(out, i) != want)
            return mismatch(name + (i < expected.size() ? "" : " (beyond the output)"), i, want, beat_word(out, i));
    }
    if (result[1] != expected.size()) return mismatch(name + " words written", 0, expected.size(), result[1]);
    if (result[0] != (uint32_t)(expected.back() & 0xFFFFFFFFu))
        return mismatch(name + " status", 0, expected.back() & 0xFFFFFFFFu, result[0]);
    return 0;
}

int main(int argc, char** argv) { return tb_main(argc, argv, check_case); }
