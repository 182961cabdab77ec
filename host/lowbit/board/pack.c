/* Pack integer codes into 64-bit stream words (lane 0 lowest, little-endian), straight into a DMA
 * buffer: the board backend's hot loop. Layout: lowbit/kernel/wire.py. Rows are taken with a stride so a
 * K-tile of a larger operand packs without a copy; codes are masked to the format's code bits. */
#include <stdint.h>
#include <string.h>

/* Two 4-bit lanes per output byte; narrowing to bytes first lets the compiler vectorise the loop. */
#define PAIR_LOOP(SRC_T)                                                                          \
    {                                                                                             \
        const SRC_T* __restrict q = row + c;                                                      \
        const uint8_t m8 = (uint8_t)mask;                                                         \
        for (int64_t p = 0; p < pairs; p++)                                                       \
            d[p] = (uint8_t)(((uint8_t)q[2 * p] & m8) | (((uint8_t)q[2 * p + 1] & m8) << 4));     \
    }

#define PACK_BODY(SRC_T)                                                                          \
    const SRC_T* __restrict s = (const SRC_T*)src;                                                         \
    int64_t i = 0;                                                                                \
    if (lane_bits == 8) {                                                                         \
        for (int64_t r = 0; r < rows; r++, i += cols) {                                           \
            const SRC_T* __restrict row = s + r * stride;                                                    \
            for (int64_t c = 0; c < cols; c++) dst[i + c] = (uint8_t)(row[c] & mask);             \
        }                                                                                         \
    } else if (lane_bits == 16) {                                                                 \
        uint16_t* __restrict d = (uint16_t*)dst;                                                             \
        for (int64_t r = 0; r < rows; r++, i += cols) {                                           \
            const SRC_T* __restrict row = s + r * stride;                                                    \
            for (int64_t c = 0; c < cols; c++) d[i + c] = (uint16_t)(row[c] & mask);              \
        }                                                                                         \
    } else if (lane_bits == 32) {                                                                 \
        uint32_t* __restrict d = (uint32_t*)dst;                                                             \
        for (int64_t r = 0; r < rows; r++, i += cols) {                                           \
            const SRC_T* __restrict row = s + r * stride;                                                    \
            for (int64_t c = 0; c < cols; c++) d[i + c] = (uint32_t)(row[c] & mask);              \
        }                                                                                         \
    } else { /* 4-bit lanes: element i in the low nibble of byte i/2 when i is even */            \
        for (int64_t r = 0; r < rows; r++) {                                                      \
            const SRC_T* __restrict row = s + r * stride;                                                    \
            int64_t c = 0;                                                                        \
            if (i & 1) { dst[i >> 1] |= (uint8_t)((row[0] & mask) << 4); c = 1; i++; }            \
            uint8_t* __restrict d = dst + (i >> 1);                                                          \
            int64_t pairs = (cols - c) >> 1;                                                      \
            PAIR_LOOP(SRC_T)                                                                      \
            c += 2 * pairs; i += 2 * pairs;                                                       \
            if (c < cols) { dst[i >> 1] = (uint8_t)(row[c] & mask); i++; }                        \
        }                                                                                         \
    }                                                                                             \
    return i;

static int64_t pack16(const void* __restrict src, int64_t rows, int64_t cols, int64_t stride, uint32_t mask,
                      int lane_bits, uint8_t* __restrict dst) { PACK_BODY(uint16_t) }
static int64_t pack32(const void* __restrict src, int64_t rows, int64_t cols, int64_t stride, uint32_t mask,
                      int lane_bits, uint8_t* __restrict dst) { PACK_BODY(uint32_t) }

/* Returns the number of 64-bit words written (the last word's unused lanes are zero). */
int64_t lowbit_pack_lanes(const void* src, int src_bytes, int64_t rows, int64_t cols, int64_t stride,
                          uint32_t mask, int lane_bits, uint64_t* dst_words) {
    int64_t count = rows * cols;
    int64_t per_word = 64 / lane_bits;
    int64_t words = (count + per_word - 1) / per_word;
    uint8_t* dst = (uint8_t*)dst_words;
    if (words) dst_words[words - 1] = 0; /* zero the tail lanes first */
    if (src_bytes == 2) pack16(src, rows, cols, stride, mask, lane_bits, dst);
    else pack32(src, rows, cols, stride, mask, lane_bits, dst);
    return words;
}
