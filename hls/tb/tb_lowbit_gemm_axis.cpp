// C-simulation testbench of the AXI-Stream top. Usage: tb_lowbit_gemm_axis DIR CASE [CASE...]
// Exits non-zero on the first mismatch (index, expected, actual), on input left unread, on a
// missing or early TLAST, or on a beat without all keep/strb bits.
#include "../kernels/lowbit_gemm_axis/lowbit_gemm_axis.h"
#include "lowbit/wire.hpp"
#include "tb_common.hpp"

static int check_case(const std::string& name, const std::vector<uint64_t>& in,
                      const std::vector<uint64_t>& expected) {
    hls::stream<axis_word> s_in, s_out;
    dma_mm2s(in.data(), in.size(), s_in);
    uint32_t status = 0xFFFFFFFFu, id_version = 0, cycles = 0;
    lowbit_gemm_axis(s_in, s_out, status, id_version, cycles);
    if (!s_in.empty()) {
        fprintf(stderr, "FAIL %s: %zu input words left unread\n", name.c_str(), (size_t)s_in.size());
        return 1;
    }
    if (id_version != lowbit::wire::ID_VERSION) return mismatch(name + " ID_VERSION", 0, lowbit::wire::ID_VERSION, id_version);
    if (cycles != in.size()) return mismatch(name + " CYCLES", 0, in.size(), cycles);
    size_t i = 0;
    for (; !s_out.empty(); i++) {
        axis_word w = s_out.read();
        if (i >= expected.size()) {
            fprintf(stderr, "FAIL %s: output has more than the %zu expected words\n", name.c_str(), expected.size());
            return 1;
        }
        if ((uint64_t)w.data != expected[i]) return mismatch(name, i, expected[i], (uint64_t)w.data);
        if (w.keep != 0xFF || w.strb != 0xFF) {
            fprintf(stderr, "FAIL %s: word %zu keep/strb not all set\n", name.c_str(), i);
            return 1;
        }
        bool last_expected = i + 1 == expected.size();
        if ((w.last == 1) != last_expected) {
            fprintf(stderr, "FAIL %s: TLAST %s at word %zu\n", name.c_str(), last_expected ? "missing" : "early", i);
            return 1;
        }
    }
    if (i != expected.size()) {
        fprintf(stderr, "FAIL %s: %zu output words, expected %zu (TLAST missing)\n", name.c_str(), i, expected.size());
        return 1;
    }
    if ((status & 0xFFFFFFFFu) != (uint32_t)(expected.back() & 0xFFFFFFFFu))
        return mismatch(name + " STATUS", 0, expected.back() & 0xFFFFFFFFu, status);
    return 0;
}

int main(int argc, char** argv) { return tb_main(argc, argv, check_case); }
