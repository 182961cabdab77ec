// Block finishers (the kernel's block_value + the fp32 block sum): the exact block integer is
// scaled (MLS: group scales by shift-and-add), rounded to fp32 once (nearest even) with the scale
// exponent added to its field (flush to +0 below the normal range), then added to the output in
// fp32. first = 1 starts an output: out <= +0.0 + value. DSP_ADD = 1 (mls_finish, pot_finish): the
// fp32 add with its shifts on DSPs (fp32_dsp.v).
`default_nettype none

// MLS, one fixed format <EX,MX> with <EG,MG> group scales [eg_code | mbit].
module mls_finish #(parameter EX = 2, parameter MX = 1, parameter EG = 8, parameter MG = 1,
                    parameter ACC_W = 2 * (MX + (1 << EX) - 1) + 14, parameter SW = EG + MG,
                    parameter DSP_ADD = 0) (
    input  wire             clk,
    input  wire             first,
    input  wire [ACC_W-1:0] p,
    input  wire [SW-1:0]    sa,
    input  wire [SW-1:0]    sb,
    output reg  [31:0]      out
);
    localparam integer E0 = 2 * ((1 - (1 << EX)) - MX) - 2 * MG;
    wire [ACC_W+3:0] t;
    mls_scale #(.W(ACC_W)) scale (.p(p), .ma(MG ? sa[0] : 1'b0), .mb(MG ? sb[0] : 1'b0),
                                  .mg(MG != 0), .t(t));
    wire signed [10:0] e = E0 - $signed({3'b0, sa[SW-1:MG]}) - $signed({3'b0, sb[SW-1:MG]});
    wire [31:0] v, next;
    scaled_to_f32 #(.W(ACC_W + 4), .EW(11)) conv (.t(t), .e(e), .y(v));
    fp32_add_any #(.DSP(DSP_ADD)) add (.a(first ? 32'd0 : out), .b(v), .y(next));
    always @(posedge clk) out <= next;
endmodule

// MLS at the run-time envelope (ex <= 4, mx <= 7, eg <= 8, mg <= 1 from header word 3), 58-bit
// block integers, 16-bit scale lanes.
module mls_rt_finish (
    input  wire        clk,
    input  wire        first,
    input  wire [57:0] p,
    input  wire [15:0] sa,
    input  wire [15:0] sb,
    input  wire [2:0]  ex,
    input  wire [2:0]  mx,
    input  wire [3:0]  eg,
    input  wire        mg,
    output reg  [31:0] out
);
    wire [15:0] emask = ~(16'hFFFF << eg);
    wire [15:0] ega = (sa >> mg) & emask, egb = (sb >> mg) & emask;
    wire signed [10:0] exmin = 11'sd1 - $signed({6'b0, 5'd1 << ex});
    wire signed [10:0] e = 11'sd2 * (exmin - $signed({8'b0, mx})) - $signed({9'b0, mg, 1'b0})
                           - $signed({2'b0, ega[8:0]}) - $signed({2'b0, egb[8:0]});
    wire [61:0] t;
    mls_scale #(.W(58)) scale (.p(p), .ma(sa[0]), .mb(sb[0]), .mg(mg), .t(t));
    wire [31:0] v, next;
    scaled_to_f32 #(.W(62), .EW(11)) conv (.t(t), .e(e), .y(v));
    fp32_add add (.a(first ? 32'd0 : out), .b(v), .y(next));
    always @(posedge clk) out <= next;
endmodule

// PoT: the 43-bit MF-MAC accumulator times 2^-28.
module pot_finish #(parameter ACC_W = 43, parameter DSP_ADD = 0) (
    input  wire             clk,
    input  wire             first,
    input  wire [ACC_W-1:0] p,
    output reg  [31:0]      out
);
    wire [31:0] v, next;
    scaled_to_f32 #(.W(ACC_W), .EW(11)) conv (.t(p), .e(-11'sd28), .y(v));
    fp32_add_any #(.DSP(DSP_ADD)) add (.a(first ? 32'd0 : out), .b(v), .y(next));
    always @(posedge clk) out <= next;
endmodule
`default_nettype wire
