// Shared piece of the PE datapaths: a balanced adder tree with one carry-in per adder.
`default_nettype none

// a + b + c on one carry chain: the carry-in rides in an extra low bit ({a,1} + {b,c}).
module add_cin #(parameter W = 8) (
    input  wire [W-1:0] a,
    input  wire [W-1:0] b,
    input  wire         c,
    output wire [W-1:0] y
);
    wire [W:0] s = {a, 1'b1} + {b, c};
    assign y = s[W:1];
endmodule

// Sum of N two's-complement W-bit words (N a power of two, N >= 2) plus N-1 one-bit carries,
// exact: level l adds pairs of (W+l-1)-bit words into (W+l)-bit words, so no level overflows.
// The carries let lanes hand over one's-complement negatives (~m with +1 still to add) without
// a separate incrementer: the tree's N-1 adders take N-1 of them.
module add_tree #(parameter N = 16, parameter W = 8) (
    input  wire [N*W-1:0]            x,
    input  wire [N-2:0]              cin,
    output wire [W+$clog2(N)-1:0]    y
);
    localparam L = $clog2(N);
    function integer level_offset;
        input integer l;
        integer i;
        begin
            level_offset = 0;
            for (i = 0; i < l; i = i + 1) level_offset = level_offset + (N >> i) * (W + i);
        end
    endfunction
    function integer carry_offset;  // carries used by the levels below l
        input integer l;
        integer i;
        begin
            carry_offset = 0;
            for (i = 1; i < l; i = i + 1) carry_offset = carry_offset + (N >> i);
        end
    endfunction
    localparam TOTAL = level_offset(L + 1);
    wire [TOTAL-1:0] node;
    assign node[N*W-1:0] = x;
    genvar l, j;
    generate
        for (l = 1; l <= L; l = l + 1) begin : level
            for (j = 0; j < (N >> l); j = j + 1) begin : pair
                wire [W+l-2:0] lhs = node[level_offset(l - 1) + (2 * j) * (W + l - 1) +: (W + l - 1)];
                wire [W+l-2:0] rhs = node[level_offset(l - 1) + (2 * j + 1) * (W + l - 1) +: (W + l - 1)];
                add_cin #(.W(W + l)) add (
                    .a({lhs[W+l-2], lhs}), .b({rhs[W+l-2], rhs}), .c(cin[carry_offset(l) + j]),
                    .y(node[level_offset(l) + j * (W + l) +: (W + l)]));
            end
        end
    endgenerate
    assign y = node[level_offset(L) +: (W + L)];
endmodule

// The PE's sum of S one's-complement lane terms (TW_IN bits each) with their S carries, into an
// ACC_W-bit accumulator: acc <= (first ? 0 : acc) + sum. The last carry goes to the accumulator's
// own adder. Any S >= 1.
module lane_accumulate #(parameter S = 1, parameter W = 9, parameter ACC_W = 22) (
    input  wire               clk,
    input  wire               first,
    input  wire [S*W-1:0]     terms,
    input  wire [S-1:0]       negs,
    output reg  [ACC_W-1:0]   acc
);
    localparam TW = W + $clog2(S);
    wire [TW-1:0] sum;
    generate
        if (S == 1) begin : single
            assign sum = terms;
        end else begin : tree
            // S not a power of two: the tree's missing inputs are zero terms without carries
            // (synthesis removes their adders).
            localparam NP = 1 << $clog2(S);
            wire [NP*W-1:0] padded = {{((NP - S) * W){1'b0}}, terms};
            wire [NP-2:0] carries = {{(NP - S){1'b0}}, negs[S-2:0]};
            add_tree #(.N(NP), .W(W)) t (.x(padded), .cin(carries), .y(sum));
        end
    endgenerate
    wire [ACC_W-1:0] base = first ? {ACC_W{1'b0}} : acc;
    wire [ACC_W-1:0] next;
    add_cin #(.W(ACC_W)) add (.a(base), .b({{(ACC_W - TW){sum[TW-1]}}, sum}), .c(negs[S-1]), .y(next));
    always @(posedge clk) acc <= next;
endmodule
`default_nettype wire
