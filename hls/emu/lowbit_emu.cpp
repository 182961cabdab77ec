// C ABI over the HLS tops for the emulation backend (cffi, ABI mode). Not a kernel source: it plays
// the DMA (feeds words, TLAST on the last one) and exposes the MAC policies for exact tests.
#include <stdint.h>

#include <vector>

#include "../kernels/lowbit_gemm_axis/lowbit_gemm_axis.h"
#include "../kernels/lowbit_gemm_mm/lowbit_gemm_mm.h"
#include "lowbit_beats.hpp"
#include "lowbit/gemm.hpp"

extern "C" {

// Returns 0, or -1 for empty input, -2 if the output overflowed out_cap, -3 on a beat without
// all keep/strb bits set.
int lowbit_axis_run(const uint64_t* in, uint64_t n_in, uint64_t* out, uint64_t out_cap, uint64_t* n_out,
                    int64_t* tlast_index, uint64_t* consumed, uint32_t* status, uint32_t* id_version,
                    uint32_t* beats) {
    if (n_in == 0) return -1;
    hls::stream<axis_word> s_in, s_out;
    dma_mm2s(in, n_in, s_in);
    lowbit_gemm_axis(s_in, s_out, *status, *id_version, *beats);
    *consumed = n_in - (uint64_t)s_in.size();
    *tlast_index = -1;
    uint64_t count = 0;
    int rc = 0;
    while (!s_out.empty()) {
        axis_word w = s_out.read();
        if (w.keep != 0xFF || w.strb != 0xFF) rc = -3;
        if (w.last == 1 && *tlast_index < 0) *tlast_index = (int64_t)count;
        if (count < out_cap) out[count] = (uint64_t)w.data;
        else rc = -2;
        count++;
    }
    *n_out = count;
    return rc;
}

// The m_axi top on word buffers (packed into the top's 512-bit beats and back).
void lowbit_mm_run(const uint64_t* in, uint32_t n_in, uint64_t* out, uint32_t out_cap, uint32_t* result) {
    std::vector<lowbit_beat> beats = words_to_beats(in, n_in);
    std::vector<lowbit_beat> out_beats = words_to_beats(out, out_cap);
    lowbit_gemm_mm(beats.data(), out_beats.data(), n_in, out_cap, result);
    for (uint32_t i = 0; i < out_cap; i++) out[i] = beat_word(out_beats, i);
}

// The engine's policies on raw codes, for exact tests of the integer parts.
int64_t lowbit_mls_block_sum(const uint16_t* a, const uint16_t* b, uint32_t len, uint32_t ex, uint32_t mx) {
    lowbit::Format f = {ex, mx, 8, 1};
    lowbit::MlsMac::Acc acc = lowbit::MlsMac::zero();
    for (uint32_t k = 0; k < len; k++)
        acc = lowbit::MlsMac::mac(acc, lowbit::MlsMac::decode(a[k], f), lowbit::MlsMac::decode(b[k], f));
    return (int64_t)acc;
}

float lowbit_mls_block_value(int64_t p, uint16_t sa, uint16_t sb, uint32_t ex, uint32_t mx, uint32_t eg,
                             uint32_t mg) {
    lowbit::Format f = {ex, mx, eg, mg};
    return lowbit::MlsMac::block_value((lowbit::MlsMac::Acc)p, sa, sb, f);
}

int64_t lowbit_pot_block_sum(const uint16_t* a, const uint16_t* b, uint32_t len) {
    lowbit::Format f = {0, 0, 0, 0};
    lowbit::PotMac::Acc acc = lowbit::PotMac::zero();
    for (uint32_t k = 0; k < len; k++)
        acc = lowbit::PotMac::mac(acc, lowbit::PotMac::decode(a[k], f), lowbit::PotMac::decode(b[k], f));
    return (int64_t)acc;
}

uint32_t lowbit_mogami_mul_bits(uint32_t a, uint32_t b, uint32_t bits) {
    return bits == 16 ? lowbit::mogami_mul_bits<16>(a, b) : lowbit::mogami_mul_bits<32>(a, b);
}

void lowbit_kernel_limits(uint32_t* out) {
    out[0] = lowbit::KernelConfig::SCALE_BUF;
    out[1] = lowbit::KernelConfig::A_ELEMS;
}

}  // extern "C"
