# Vivado block design for Zynq boards: the PS, one AXI DMA (no scatter-gather, 64-bit streams) and
# one lowbit GEMM IP (exported by tcl/hls.tcl) per compute unit, each pair on its own PS HP port,
# plus the ID register (an AXI GPIO, all inputs, fed by a constant: readable on a fresh overlay),
# to a bitstream and its .hwh for PYNQ.
#
#   vivado -mode batch -source tcl/bd_zynq.tcl -tclargs <board> <ip_repo_dir> <out_dir> \
#          <pl_clock_mhz> <hp_bits> <compute_units> <id_version>
#
# board: pynq-z2 | zcu104. ip_repo_dir is the UNPACKED IP (<solution>/impl/ip): Vivado's IP catalog
# does not read the export .zip. The clock, HP width and unit count come from the board record
# (lowbit.kernel.boards, passed by `lowbit build`). Writes <out_dir>/lowbit_gemm.bit and .hwh.

set BOARDS [dict create \
    pynq-z2 [dict create part xc7z020clg400-1 board_part tul.com.tw:pynq-z2:part0:1.0 \
        ps_vlnv xilinx.com:ip:processing_system7:5.5 ps_rule xilinx.com:bd_rule:processing_system7 \
        ps_master M_AXI_GP0 ps_slaves {S_AXI_HP0 S_AXI_HP1 S_AXI_HP2 S_AXI_HP3} ps_clk FCLK_CLK0] \
    zcu104 [dict create part xczu7ev-ffvc1156-2-e board_part xilinx.com:zcu104:part0:1.1 \
        ps_vlnv xilinx.com:ip:zynq_ultra_ps_e:3.5 ps_rule xilinx.com:bd_rule:zynq_ultra_ps_e \
        ps_master M_AXI_HPM0_FPD ps_slaves {S_AXI_HP0_FPD S_AXI_HP1_FPD S_AXI_HP2_FPD S_AXI_HP3_FPD} \
        ps_clk pl_clk0]]
set IP_VLNV lowbit.org:hls:lowbit_gemm:1.0
# Ports of the HLS top lowbit_gemm_axis (hls/kernels/lowbit_gemm_axis/lowbit_gemm_axis.cpp)
set IP_IN in_stream
set IP_OUT out_stream
set IP_CTRL s_axi_control
# The ID register's cell (lowbit.kernel.boards.ID_CELL); the host reads its GPIO_DATA (offset 0)
set ID_CELL lowbit_id

if {[llength $argv] < 7} {
    puts "usage: vivado -mode batch -source tcl/bd_zynq.tcl -tclargs <board> <ip_repo_dir> <out_dir> <pl_clock_mhz> <hp_bits> <compute_units> <id_version>"
    exit 2
}
lassign $argv board ip_repo out_dir clock_mhz hp_bits cus id_version
if {![dict exists $BOARDS $board]} {
    puts "unknown board $board; known: [dict keys $BOARDS]"
    exit 2
}
if {![file exists [file join $ip_repo component.xml]]} {
    puts "no component.xml in $ip_repo: point at the unpacked IP (<solution>/impl/ip), run tcl/hls.tcl export first"
    exit 2
}
set b [dict get $BOARDS $board]
set ps_master [dict get $b ps_master]
set ps_slaves [lrange [dict get $b ps_slaves] 0 [expr {$cus - 1}]]

create_project -force lowbit_$board build/vivado/$board -part [dict get $b part]
set_property board_part [dict get $b board_part] [current_project]
set_property ip_repo_paths [list $ip_repo] [current_project]
update_ip_catalog

create_bd_design lowbit
set ps [create_bd_cell -type ip -vlnv [dict get $b ps_vlnv] ps]
apply_bd_automation -rule [dict get $b ps_rule] -config {apply_board_preset "1"} $ps
if {$board eq "pynq-z2"} {
    set cfg [list CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ $clock_mhz]
    for {set i 0} {$i < $cus} {incr i} {
        lappend cfg CONFIG.PCW_USE_S_AXI_HP$i {1} CONFIG.PCW_S_AXI_HP${i}_DATA_WIDTH $hp_bits
    }
} else {
    # S_AXI_HP<i>_FPD is SAXIGP<i + 2>; the PL clock is the PS's PL0 reference (100 MHz unless set)
    set cfg [list CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ $clock_mhz CONFIG.PSU__USE__M_AXI_GP1 {0}]
    for {set i 0} {$i < $cus} {incr i} {
        set gp [expr {$i + 2}]
        lappend cfg CONFIG.PSU__USE__S_AXI_GP$gp {1} CONFIG.PSU__SAXIGP${gp}__DATA_WIDTH $hp_bits
    }
}
set_property -dict $cfg $ps

for {set i 0} {$i < $cus} {incr i} {
    set sfx [expr {$i == 0 ? "" : "_$i"}]
    set dma [create_bd_cell -type ip -vlnv xilinx.com:ip:axi_dma:7.1 dma$sfx]
    set_property -dict [list CONFIG.c_include_sg {0} CONFIG.c_sg_length_width {26} \
        CONFIG.c_m_axi_mm2s_data_width $hp_bits CONFIG.c_m_axis_mm2s_tdata_width {64} \
        CONFIG.c_m_axi_s2mm_data_width $hp_bits CONFIG.c_s_axis_s2mm_tdata_width {64} \
        CONFIG.c_mm2s_burst_size {64} CONFIG.c_s2mm_burst_size {64}] $dma
    set gemm [create_bd_cell -type ip -vlnv $IP_VLNV lowbit_gemm$sfx]
    connect_bd_intf_net [get_bd_intf_pins dma$sfx/M_AXIS_MM2S] [get_bd_intf_pins lowbit_gemm$sfx/$IP_IN]
    connect_bd_intf_net [get_bd_intf_pins lowbit_gemm$sfx/$IP_OUT] [get_bd_intf_pins dma$sfx/S_AXIS_S2MM]
    foreach slave [list dma$sfx/S_AXI_LITE lowbit_gemm$sfx/$IP_CTRL] {
        apply_bd_automation -rule xilinx.com:bd_rule:axi4 \
            -config [list Master /ps/$ps_master Clk {Auto}] [get_bd_intf_pins $slave]
    }
    foreach master [list dma$sfx/M_AXI_MM2S dma$sfx/M_AXI_S2MM] {
        apply_bd_automation -rule xilinx.com:bd_rule:axi4 \
            -config [list Slave /ps/[lindex $ps_slaves $i] Clk {Auto}] [get_bd_intf_pins $master]
    }
    apply_bd_automation -rule xilinx.com:bd_rule:clkrst -config [list Clk /ps/[dict get $b ps_clk]] \
        [get_bd_pins lowbit_gemm$sfx/ap_clk]
}

# ID register: GPIO inputs tied to a constant, so the host reads IP_ID | WIRE_VERSION before any run
# (an HLS s_axilite scalar output reads 0 until a run has written it).
set id_const [create_bd_cell -type ip -vlnv xilinx.com:ip:xlconstant:1.1 ${ID_CELL}_value]
set_property -dict [list CONFIG.CONST_WIDTH {32} CONFIG.CONST_VAL $id_version] $id_const
set id_gpio [create_bd_cell -type ip -vlnv xilinx.com:ip:axi_gpio:2.0 $ID_CELL]
set_property -dict [list CONFIG.C_GPIO_WIDTH {32} CONFIG.C_ALL_INPUTS {1}] $id_gpio
connect_bd_net [get_bd_pins ${ID_CELL}_value/dout] [get_bd_pins $ID_CELL/gpio_io_i]
apply_bd_automation -rule xilinx.com:bd_rule:axi4 -config [list Master /ps/$ps_master Clk {Auto}] \
    [get_bd_intf_pins $ID_CELL/S_AXI]
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
