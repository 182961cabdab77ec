#!/usr/bin/env bash
# v++ compile + link of the Alveo kernel (hls/kernels/lowbit_gemm_mm) to an .xclbin.
#   tcl/vpp_build.sh <u50|u250> <out_dir> [target: hw|hw_emu] [kernel build define] [clock MHz]
# `lowbit build` passes the build (-DLOWBIT_BOARD=<board>_<family>, lowbit.kernel.boards) and the
# record's clock; the compute units and their memory banks are in tcl/alveo_<board>.cfg (a test
# holds them to the record).
set -euo pipefail
board=${1:?board: u50 or u250}
out_dir=${2:?output folder}
target=${3:-hw}
define=${4:--DLOWBIT_BOARD=${board}_mls}
clock=${5:-300}
root=$(cd "$(dirname "$0")/.." && pwd)
case "$board" in
    u50) platform=xilinx_u50_gen3x16_xdma_5_202210_1 ;;
    u250) platform=xilinx_u250_gen3x16_xdma_4_1_202210_1 ;;
    *) echo "unknown Alveo board $board (u50, u250)" >&2; exit 2 ;;
esac
platform=${LOWBIT_PLATFORM:-$platform}
build="$root/build/alveo/$board"
mkdir -p "$build" "$out_dir"
v++ -c -t "$target" --platform "$platform" -k lowbit_gemm_mm --kernel_frequency "$clock" "$define" \
    -I"$root/hls/include" --save-temps --temp_dir "$build/compile" \
    -o "$build/lowbit_gemm_mm.xo" "$root/hls/kernels/lowbit_gemm_mm/lowbit_gemm_mm.cpp"
v++ -l -t "$target" --platform "$platform" --kernel_frequency "$clock" --config "$root/tcl/alveo_$board.cfg" \
    --save-temps --temp_dir "$build/link" -o "$out_dir/lowbit_gemm.xclbin" "$build/lowbit_gemm_mm.xo"
