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
    wire sign = a[BITS-1] ^ b[BITS-1];
    wire [7:0] ea = a[BITS-2:FW], eb = b[BITS-2:FW];
    wire special = (&ea) | (&eb);
    wire zero = ~(|ea) | ~(|eb);
    // The one integer adder; its top 9 bits are e = ea + eb (+ the fraction's carry), and the
    // result's biased exponent is e - 127: below 1 (e < 128) flushes, above 254 (e >= 382) saturates.
    wire [BITS-1:0] sum = {1'b0, a[BITS-2:0]} + {1'b0, b[BITS-2:0]};
    wire [8:0] e = sum[BITS-1:FW];
    wire under = ~e[8] & ~e[7];
    wire sat = e >= 9'd382;
    wire [7:0] field = e[7:0] - 8'd127;
    wire keep = ~zero & ~under;
    wire [FW-1:0] frac = sum[FW-1:0] | {FW{sat}};
    wire [7:0] fe = sat ? 8'hFE : field;
    assign y = special ? {1'b0, 8'hFF, 1'b1, {(FW - 1){1'b0}}} :
               {sign, fe & {8{keep}}, frac & {FW{keep}}};
endmodule

// The Mogami MAC of the kernel: products added in fp32 in k order; first = 1 starts an output
// (out <= +0.0 + product). DSP_ADD = 1: the fp32 add with its shifts on two DSPs, in the form
// for a Mogami product (fp32_add_mac, fp32_dsp.v); the block start then selects +0 + product
// at the adder's output (one more input of each result bit's last LUT) instead of zeroing its
// input, which every first-level gate of the adder would read.
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
    wire [31:0] pw = {p, {(32 - BITS){1'b0}}};
    generate
        if (DSP_ADD) begin : form
            // +0 + p is p, but +0 + -0 is +0 (a Mogami zero is exactly signed zero).
            wire [31:0] sum;
            fp32_add_any #(.DSP(2)) add (.a(out), .b(pw), .y(sum));
            assign next = first ? {pw[31] & (|pw[30:23]), pw[30:0]} : sum;
        end else begin : plain
            fp32_add_any #(.DSP(0)) add (.a(first ? 32'd0 : out), .b(pw), .y(next));
        end
    endgenerate
    always @(posedge clk) out <= next;
endmodule
`default_nettype wire
