# Vitis HLS flow for the lowbit GEMM kernels: C simulation, synthesis, co-simulation, export.
#
#   vitis_hls -f tcl/hls.tcl -tclargs <kernel> <part> <clock_ns> <steps> <golden_dir> [defines]
#
#   kernel      a key of KERNELS below
#   part        e.g. xc7z020clg400-1 (PYNQ-Z2), xczu7ev-ffvc1156-2-e (ZCU104), xcu50-fsvh2104-2-e
#   steps       comma list of csim,csynth,cosim,export
#   golden_dir  folder written by `lowbit golden --golden DIR` (cases.txt lists
#               the cases the testbench replays)
#   defines     the kernel build, e.g. "-DLOWBIT_BOARD=zcu104_pot" (a struct of the generated
#               hls/include/lowbit/board_config.hpp, from lowbit.kernel.boards; `lowbit build` passes it)
# Outputs go to build/hls/<kernel>/ ; export_design unpacks the IP into build/hls/<kernel>/sol/impl/ip
# (what tcl/bd_zynq.tcl's IP repository points at) and writes the zip (Zynq) or .xo (Alveo) to build/ip/.

set script_dir [file dirname [file normalize [info script]]]
set root [file dirname $script_dir]

# kernel -> top function, flow target, kernel source, testbench, export format, IP name
set KERNELS [dict create \
    lowbit_gemm_axis [dict create top lowbit_gemm_axis flow vivado \
        src hls/kernels/lowbit_gemm_axis/lowbit_gemm_axis.cpp tb hls/tb/tb_lowbit_gemm_axis.cpp \
        format ip_catalog ipname lowbit_gemm] \
    lowbit_gemm_mm [dict create top lowbit_gemm_mm flow vitis \
        src hls/kernels/lowbit_gemm_mm/lowbit_gemm_mm.cpp tb hls/tb/tb_lowbit_gemm_mm.cpp \
        format xo ipname lowbit_gemm_mm]]
set HEADERS {hls/include/lowbit/wire.hpp hls/include/lowbit/board_config.hpp hls/include/lowbit/mac.hpp \
    hls/include/lowbit/gemm.hpp}
set TB_HEADERS {hls/tb/tb_common.hpp}
# VLNV lowbit.org:hls:lowbit_gemm:1.0 (lowbit.kernel.wire.VLNV)
set VENDOR lowbit.org
set LIBRARY hls
set VERSION 1.0

if {[llength $argv] < 5} {
    puts "usage: vitis_hls -f tcl/hls.tcl -tclargs <kernel> <part> <clock_ns> <steps> <golden_dir> \[defines\]"
    puts "kernels: [dict keys $KERNELS]"
    exit 2
}
lassign $argv kernel part clock_ns steps golden_dir defines
if {![dict exists $KERNELS $kernel]} {
    puts "unknown kernel $kernel; known: [dict keys $KERNELS]"
    exit 2
}
set k [dict get $KERNELS $kernel]
set steps [split $steps ,]
set cflags "-std=c++14 -I$root/hls/include $defines"

open_project -reset $root/build/hls/$kernel
set_top [dict get $k top]
add_files [file join $root [dict get $k src]] -cflags $cflags
foreach h $HEADERS { add_files [file join $root $h] -cflags $cflags }
add_files -tb [file join $root [dict get $k tb]] -cflags $cflags
foreach h $TB_HEADERS { add_files -tb [file join $root $h] -cflags $cflags }

open_solution -reset sol -flow_target [dict get $k flow]
set_part $part
create_clock -period $clock_ns -name default
config_export -format [dict get $k format] -rtl verilog -vendor $VENDOR -library $LIBRARY \
    -version $VERSION -ipname [dict get $k ipname]

set cases [string trim [read [open [file join $golden_dir cases.txt]]]]
set tb_argv "[file normalize $golden_dir] [join $cases { }]"
if {"csim" in $steps} { csim_design -argv $tb_argv }
if {"csynth" in $steps || "cosim" in $steps || "export" in $steps} { csynth_design }
if {"cosim" in $steps} { cosim_design -argv $tb_argv }
if {"export" in $steps} {
    file mkdir $root/build/ip
    set ext [expr {[dict get $k format] eq "xo" ? "xo" : "zip"}]
    export_design -format [dict get $k format] -output $root/build/ip/$kernel.$ext
}
exit 0
