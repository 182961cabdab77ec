// Minimal AXI4-Stream side-channel struct for g++ C-simulation (written for lowbit). It lives in
// hls/csim/, which only the g++ builds put on the include path; Vitis HLS uses its own header.
// Field names and template parameters follow the Vitis convention so the kernels build with either.
#pragma once
#include <ap_int.h>

template <int D, int U, int TI, int TD>
struct ap_axiu {
    ap_uint<D> data;
    ap_uint<(D + 7) / 8> keep;
    ap_uint<(D + 7) / 8> strb;
    ap_uint<(U > 0) ? U : 1> user;
    ap_uint<1> last;
    ap_uint<(TI > 0) ? TI : 1> id;
    ap_uint<(TD > 0) ? TD : 1> dest;
};

template <int D, int U, int TI, int TD>
struct ap_axis {
    ap_int<D> data;
    ap_uint<(D + 7) / 8> keep;
    ap_uint<(D + 7) / 8> strb;
    ap_uint<(U > 0) ? U : 1> user;
    ap_uint<1> last;
    ap_uint<(TI > 0) ? TI : 1> id;
    ap_uint<(TD > 0) ? TD : 1> dest;
};
