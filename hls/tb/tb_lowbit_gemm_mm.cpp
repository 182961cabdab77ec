// C-simulation testbench of the m_axi (Alveo) top. Usage: tb_lowbit_gemm_mm DIR CASE [CASE...]
// The output buffer is larger than expected and pre-filled with a canary: words written beyond
// the expected stream fail the case, as do missing words and a wrong result[] pair.
#include "../kernels/lowbit_gemm_mm/lowbit_gemm_mm.h"
#include "tb_common.hpp"

static const uint64_t CANARY = 0xDEADBEEFCAFEF00Dull;

static int check_case(const std::string& name, const std::vector<uint64_t>& in,
                      const std::vector<uint64_t>& expected) {
    std::vector<uint64_t> out(expected.size() + 8, CANARY);
    uint32_t result[2] = {0xFFFFFFFFu, 0};
    lowbit_gemm_mm(in.data(), out.data(), (uint32_t)in.size(), (uint32_t)out.size(), result);
    for (size_t i = 0; i < expected.size(); i++)
        if (out[i] != expected[i]) return mismatch(name, i, expected[i], out[i]);
    for (size_t i = expected.size(); i < out.size(); i++)
        if (out[i] != CANARY) return mismatch(name + " (leftover write)", i, CANARY, out[i]);
    if (result[1] != expected.size()) return mismatch(name + " words written", 0, expected.size(), result[1]);
    if (result[0] != (uint32_t)(expected.back() & 0xFFFFFFFFu))
        return mismatch(name + " status", 0, expected.back() & 0xFFFFFFFFu, result[0]);
    return 0;
}

int main(int argc, char** argv) { return tb_main(argc, argv, check_case); }
