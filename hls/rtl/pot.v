// PoT MF-MAC (the kernel's PotMac): code [sign | c], c in 1..15 is 2^(c-15), c = 0 is zero.
// A product is a sign XOR and an INT4 add ca + cb; its exact value 2^(ca+cb-2) (units of 2^-28)
// is a one-hot word added into a wide integer accumulator.
`default_nettype none

// One lane's signed term in one's-complement form: value = term + neg. Two equal forms of the
// same function, chosen by how yosys 0.23 maps them (docs/rtl.md): a lone lane maps best
// as a gated one-hot word, lanes that feed an adder tree as one 6-input function per bit.
module pot_term #(parameter TREE = 0) (
    input  wire [4:0]  a,
    input  wire [4:0]  b,
    output wire [29:0] term,
    output wire        neg
);
    wire zero = (a[3:0] == 4'd0) || (b[3:0] == 4'd0);
    wire [4:0] sum = {1'b0, a[3:0]} + {1'b0, b[3:0]} - 5'd2;  // the INT4 add
    assign neg = (a[4] ^ b[4]) & ~zero;
    generate
        if (TREE) begin : per_bit
            // a zero operand selects shift 31, past the word
            wire [4:0] shift = zero ? 5'd31 : sum;
            genvar i;
            for (i = 0; i < 30; i = i + 1) begin : bit_
                assign term[i] = (shift == i) ^ neg;
            end
        end else begin : gated
            wire [29:0] one_hot = zero ? 30'd0 : (30'd1 << sum);
            assign term = one_hot ^ {30{neg}};
        end
    endgenerate
endmodule

// S lanes (one output, S consecutive k per cycle) into an adder tree and one exact accumulator.
// first = 1 starts a block: acc <= sum of this cycle's products.
module pot_pe #(parameter S = 1, parameter LOG2K = 13,
                parameter ACC_W = 28 + LOG2K + 2) (  // 2^28 * 2^13 needs 42 bits + sign (POT_ACC_W)
    input  wire               clk,
    input  wire               first,
    input  wire [S*5-1:0]     a,
    input  wire [S*5-1:0]     b,
    output wire [ACC_W-1:0]   acc
);
    wire [S*30-1:0] terms;
    wire [S-1:0] negs;
    genvar i;
    generate
        for (i = 0; i < S; i = i + 1) begin : lane
            pot_term #(.TREE(S > 1)) t (.a(a[i*5 +: 5]), .b(b[i*5 +: 5]), .term(terms[i*30 +: 30]), .neg(negs[i]));
        end
    endgenerate
    lane_accumulate #(.S(S), .W(30), .ACC_W(ACC_W)) sum (
        .clk(clk), .first(first), .terms(terms), .negs(negs), .acc(acc));
endmodule
`default_nettype wire
