// The baselines a user compares against: an IEEE fp32 MAC (out <= out + a*b, two roundings, as
// C's `acc += a * b` without contraction; FTZ = 1: subnormals flushed, as FPGA cores do) and an INT8 MAC with a 32-bit accumulator.
// first = 1 starts an output.
`default_nettype none

module fp32_mac #(parameter FTZ = 0) (
    input  wire        clk,
    input  wire        first,
    input  wire [31:0] a,
    input  wire [31:0] b,
    output reg  [31:0] out
);
    wire [31:0] p, next;
    fp32_mul #(.FTZ(FTZ)) mul (.a(a), .b(b), .y(p));
    fp32_add #(.FTZ(FTZ)) add (.a(first ? 32'd0 : out), .b(p), .y(next));
    always @(posedge clk) out <= next;
endmodule

module int8_mac (
    input  wire        clk,
    input  wire        first,
    input  wire [7:0]  a,
    input  wire [7:0]  b,
    output reg  [31:0] out
);
    wire signed [15:0] p = $signed(a) * $signed(b);
    always @(posedge clk) out <= (first ? 32'd0 : out) + {{16{p[15]}}, p};
endmodule
`default_nettype wire
