// Mogami product (the kernel's mogami_mul_bits): the integer sum of two IEEE bit patterns minus
// the bias, sign = XOR. A zero or subnormal operand, or a result below the smallest normal, gives
// signed zero; a result past the largest finite value saturates to it; an Inf/NaN operand gives
// the quiet NaN. BITS = 32 (fp32) or 16 (bf16, the top half of an fp32).
`default_nettype none

module mogami_mul #(parameter BITS = 32) (
    input  wire [BITS-1:0] a,
    input  wire [BITS-1:0] b,
    output wire [BITS-1:0] y
);
    localparam FW = BITS - 9;  // fraction bits
    localparam [BITS-1:0] BIAS = 127 << FW;
    localparam [BITS-1:0] MIN_NORMAL = 1 << FW;
    localparam [BITS-1:0] MAX_FINITE = (255 << FW) - 1;
    localparam [BITS-1:0] QNAN = (255 << FW) | (1 << (FW - 1));
    wire sign = a[BITS-1] ^ b[BITS-1];
    wire [BITS-2:0] ma = a[BITS-2:0], mb = b[BITS-2:0];
    wire special = (&ma[BITS-2:FW]) | (&mb[BITS-2:FW]);
    wire zero = ~(|ma[BITS-2:FW]) | ~(|mb[BITS-2:FW]);
    wire [BITS-1:0] sum = {1'b0, ma} + {1'b0, mb};  // the one integer adder
    wire under = sum < BIAS + MIN_NORMAL;
    wire [BITS-1:0] mag = sum - BIAS;
    wire [BITS-1:0] sat = (mag > MAX_FINITE) ? MAX_FINITE : mag;
    assign y = special ? QNAN : (zero | under) ? {sign, {(BITS - 1){1'b0}}} : {sign, sat[BITS-2:0]};
endmodule

// The Mogami MAC of the kernel: products added in fp32 in k order; first = 1 starts an output
// (out <= +0.0 + product). DSP_ADD = 1: the fp32 add with its shifts on two DSPs, in the form
// for a Mogami product (fp32_add_dsp MAC_FORM, fp32_dsp.v).
module mogami_mac #(parameter BITS = 32, parameter DSP_ADD = 0) (
    input  wire            clk,
    input  wire            first,
    input  wire [BITS-1:0] a,
    input  wire [BITS-1:0] b,
    output reg  [31:0]     out
);
    wire [BITS-1:0] p;
    mogami_mul #(.BITS(BITS)) mul (.a(a), .b(b), .y(p));
    wire [31:0] next;
    fp32_add_any #(.DSP(DSP_ADD ? 2 : 0)) add (.a(first ? 32'd0 : out), .b({p, {(32 - BITS){1'b0}}}), .y(next));
    always @(posedge clk) out <= next;
endmodule
`default_nettype wire
