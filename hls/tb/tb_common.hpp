// The C-simulation testbenches' shared driver: golden vectors are little-endian uint64 files
// written by `lowbit golden --golden DIR` (<case>.in.bin / <case>.out.bin). Each testbench supplies
// only its top call and its checks (a CaseCheck); its main returns tb_main(argc, argv, check).
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

// Runs the top on one case's input words and checks its outputs against the expected words;
// non-zero (after a FAIL line on stderr) on the first difference.
typedef int (*CaseCheck)(const std::string& name, const std::vector<uint64_t>& in,
                         const std::vector<uint64_t>& expected);

inline int run_case(const std::string& dir, const std::string& name, CaseCheck check) {
    std::vector<uint64_t> in, expected;
    if (!read_words(dir + "/" + name + ".in.bin", in) || !read_words(dir + "/" + name + ".out.bin", expected))
        return 1;
    if (check(name, in, expected)) return 1;
    printf("PASS %s (%zu in, %zu out)\n", name.c_str(), in.size(), expected.size());
    return 0;
}

// Usage: TB GOLDEN_DIR CASE [CASE...]; exits 1 on the first failing case, 2 on bad usage.
inline int tb_main(int argc, char** argv, CaseCheck check) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s GOLDEN_DIR CASE [CASE...]\n", argv[0]);
        return 2;
    }
    for (int i = 2; i < argc; i++)
        if (run_case(argv[1], argv[i], check)) return 1;
    return 0;
}
