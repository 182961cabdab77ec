# Vivado block design for Zynq boards: the PS, an AXI DMA (no scatter-gather, 64-bit streams) and
# the lowbit GEMM IP (exported by tcl/hls.tcl), to a bitstream and its .hwh for PYNQ.
#
#   vivado -mode batch -source tcl/bd_zynq.tcl -tclargs <board> <ip_repo_dir> <out_dir>
#
# board: pynq-z2 | zcu104. Writes <out_dir>/lowbit_gemm.bit and <out_dir>/lowbit_gemm.hwh.

set BOARDS [dict create \
    pynq-z2 [dict create part xc7z020clg400-1 board_part tul.com.tw:pynq-z2:part0:1.0 \
        ps_vlnv xilinx.com:ip:processing_system7:5.5 ps_rule xilinx.com:bd_rule:processing_system7 \
        ps_master M_AXI_GP0 ps_slave S_AXI_HP0 ps_clk FCLK_CLK0] \
    zcu104 [dict create part xczu7ev-ffvc1156-2-e board_part xilinx.com:zcu104:part0:1.1 \
        ps_vlnv xilinx.com:ip:zynq_ultra_ps_e:3.5 ps_rule xilinx.com:bd_rule:zynq_ultra_ps_e \
        ps_master M_AXI_HPM0_FPD ps_slave S_AXI_HP0_FPD ps_clk pl_clk0]]
set IP_VLNV lowbit.org:hls:lowbit_gemm:1.0
# Ports of the HLS top lowbit_gemm_axis (hls/kernels/lowbit_gemm_axis/lowbit_gemm_axis.cpp)
set IP_IN in_stream
set IP_OUT out_stream
set IP_CTRL s_axi_control

if {[llength $argv] < 3} {
    puts "usage: vivado -mode batch -source tcl/bd_zynq.tcl -tclargs <board> <ip_repo_dir> <out_dir>"
    exit 2
}
lassign $argv board ip_repo out_dir
if {![dict exists $BOARDS $board]} {
    puts "unknown board $board; known: [dict keys $BOARDS]"
    exit 2
}
set b [dict get $BOARDS $board]
set ps_master [dict get $b ps_master]
set ps_slave [dict get $b ps_slave]

create_project -force lowbit_$board build/vivado/$board -part [dict get $b part]
set_property board_part [dict get $b board_part] [current_project]
set_property ip_repo_paths [list $ip_repo] [current_project]
update_ip_catalog

create_bd_design lowbit
set ps [create_bd_cell -type ip -vlnv [dict get $b ps_vlnv] ps]
apply_bd_automation -rule [dict get $b ps_rule] -config {apply_board_preset "1"} $ps
if {$board eq "pynq-z2"} {
    set_property -dict [list CONFIG.PCW_USE_S_AXI_HP0 {1} CONFIG.PCW_S_AXI_HP0_DATA_WIDTH {64}] $ps
} else {
    set_property -dict [list CONFIG.PSU__USE__S_AXI_GP2 {1} CONFIG.PSU__SAXIGP2__DATA_WIDTH {64} \
        CONFIG.PSU__USE__M_AXI_GP1 {0}] $ps
}

set dma [create_bd_cell -type ip -vlnv xilinx.com:ip:axi_dma:7.1 dma]
set_property -dict [list CONFIG.c_include_sg {0} CONFIG.c_sg_length_width {26} \
    CONFIG.c_m_axi_mm2s_data_width {64} CONFIG.c_m_axis_mm2s_tdata_width {64} \
    CONFIG.c_m_axi_s2mm_data_width {64} CONFIG.c_s_axis_s2mm_tdata_width {64} \
    CONFIG.c_mm2s_burst_size {16} CONFIG.c_s2mm_burst_size {16}] $dma

set gemm [create_bd_cell -type ip -vlnv $IP_VLNV lowbit_gemm]
connect_bd_intf_net [get_bd_intf_pins dma/M_AXIS_MM2S] [get_bd_intf_pins lowbit_gemm/$IP_IN]
connect_bd_intf_net [get_bd_intf_pins lowbit_gemm/$IP_OUT] [get_bd_intf_pins dma/S_AXIS_S2MM]

foreach slave [list dma/S_AXI_LITE lowbit_gemm/$IP_CTRL] {
    apply_bd_automation -rule xilinx.com:bd_rule:axi4 \
        -config [list Master /ps/$ps_master Clk {Auto}] [get_bd_intf_pins $slave]
}
foreach master {dma/M_AXI_MM2S dma/M_AXI_S2MM} {
    apply_bd_automation -rule xilinx.com:bd_rule:axi4 \
        -config [list Slave /ps/$ps_slave Clk {Auto}] [get_bd_intf_pins $master]
}
apply_bd_automation -rule xilinx.com:bd_rule:clkrst -config [list Clk /ps/[dict get $b ps_clk]] \
    [get_bd_pins lowbit_gemm/ap_clk]
assign_bd_address
validate_bd_design
save_bd_design

set wrapper [make_wrapper -files [get_files lowbit.bd] -top]
add_files -norecurse $wrapper
launch_runs impl_1 -to_step write_bitstream -jobs 2
wait_on_run impl_1
if {[get_property PROGRESS [get_runs impl_1]] ne "100%"} {
    puts "implementation failed; see build/vivado/$board"
    exit 1
}
file mkdir $out_dir
set run_dir [get_property DIRECTORY [get_runs impl_1]]
file copy -force [glob $run_dir/*.bit] [file join $out_dir lowbit_gemm.bit]
file copy -force [glob build/vivado/$board/lowbit_$board.gen/sources_1/bd/lowbit/hw_handoff/lowbit.hwh] \
    [file join $out_dir lowbit_gemm.hwh]
exit 0
