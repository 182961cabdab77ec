// Shared helpers of the C-simulation testbenches: golden vectors are little-endian uint64 files
// written by `lowbit golden --golden DIR` (<case>.in.bin / <case>.out.bin).
#pragma once
#include <stdint.h>
#include <stdio.h>

#include <string>
#include <vector>

inline bool read_words(const std::string& path, std::vector<uint64_t>& words) {
    FILE* f = fopen(path.c_str(), "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path.c_str());
        return false;
    }
    unsigned char buf[8];
    words.clear();
    while (fread(buf, 1, 8, f) == 8) {
        uint64_t w = 0;
        for (int i = 7; i >= 0; i--) w = (w << 8) | buf[i];
        words.push_back(w);
    }
    fclose(f);
    return true;
}

inline int mismatch(const std::string& name, size_t index, uint64_t expected, uint64_t actual) {
    fprintf(stderr, "FAIL %s: word %zu expected 0x%016llx actual 0x%016llx\n", name.c_str(), index,
            (unsigned long long)expected, (unsigned long long)actual);
    return 1;
}
