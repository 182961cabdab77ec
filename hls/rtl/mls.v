// MLS intra-group MAC (the kernel's MlsMac). An element <Ex,Mx> is sign-magnitude; its magnitude
// in units of 2^(Exmin-Mx) is sig << sh with sig = m (e == 0) or 2^Mx + m, sh = max(e-1, 0).
// A product is an (Mx+1) x (Mx+1)-bit multiply, a shift by sh_a + sh_b and a sign XOR, summed
// exactly in an integer accumulator. Elements are decoded once at the array edge (mls_decode for
// a build with one format, mls_rt_decode for the run-time <4,7> envelope); the PE takes decoded
// elements, as MlsMac::mac takes MlsElem.
`default_nettype none

// Decoder of one fixed format <EX,MX> (EX, MX >= 1).
module mls_decode #(parameter EX = 2, parameter MX = 1) (
    input  wire [EX+MX:0] code,
    output wire           sign,
    output wire [MX:0]    sig,
    output wire [EX-1:0]  sh
);
    wire [EX-1:0] e = code[MX +: EX];
    assign sign = code[EX+MX];
    assign sig = {e != 0, code[MX-1:0]};
    assign sh = (e == 0) ? {EX{1'b0}} : e - 1'b1;
endmodule

// Decoder of the run-time format (ex <= 4, mx <= 7: header word 3), 12-bit code lanes (the
// code's bits above 1 + ex + mx are ignored, as MlsMac::decode ignores them).
module mls_rt_decode (
    input  wire [11:0] code,
    input  wire [2:0]  ex,
    input  wire [2:0]  mx,
    output wire        sign,
    output wire [7:0]  sig,
    output wire [3:0]  sh
);
    wire [11:0] above = code >> mx;
    wire [3:0] e = above[3:0] & ~(4'hF << ex);
    wire [6:0] m = code[6:0] & ~(7'h7F << mx);
    assign sign = above[ex];
    assign sig = (e == 0) ? {1'b0, m} : ({1'b0, m} | (8'd1 << mx));
    assign sh = (e == 0) ? 4'd0 : e - 4'd1;
endmodule

// One lane's product in one's-complement form: value = term + neg, term (PW+1)-bit signed.
module mls_term #(parameter SIGW = 2, parameter SHW = 2, parameter PW = 8) (
    input  wire            sign_a, sign_b,
    input  wire [SIGW-1:0] sig_a, sig_b,
    input  wire [SHW-1:0]  sh_a, sh_b,
    output wire [PW:0]     term,
    output wire            neg
);
    wire [2*SIGW-1:0] sp = sig_a * sig_b;
    wire [PW-1:0] mag = {{(PW - 2 * SIGW){1'b0}}, sp} << ({1'b0, sh_a} + {1'b0, sh_b});
    assign neg = sign_a ^ sign_b;
    assign term = {1'b0, mag} ^ {(PW + 1){neg}};
endmodule

// S lanes (one output, S consecutive k per cycle) into an adder tree and one exact accumulator of
// PW + LOG2K + 1 bits (any block of up to 2^LOG2K products). first = 1 starts a block.
// Fixed <Ex,Mx>: SIGW = Mx+1, SHW = Ex, PW = 2(Mx + 2^Ex - 1); the <4,7> envelope: 8, 4, 44.
module mls_pe #(parameter S = 1, parameter SIGW = 2, parameter SHW = 2, parameter PW = 8,
                parameter LOG2K = 13, parameter ACC_W = PW + LOG2K + 1) (
    input  wire                clk,
    input  wire                first,
    input  wire [S-1:0]        sign_a, sign_b,
    input  wire [S*SIGW-1:0]   sig_a, sig_b,
    input  wire [S*SHW-1:0]    sh_a, sh_b,
    output wire [ACC_W-1:0]    acc
);
    wire [S*(PW+1)-1:0] terms;
    wire [S-1:0] negs;
    genvar i;
    generate
        for (i = 0; i < S; i = i + 1) begin : lane
            mls_term #(.SIGW(SIGW), .SHW(SHW), .PW(PW)) t (
                .sign_a(sign_a[i]), .sign_b(sign_b[i]),
                .sig_a(sig_a[i*SIGW +: SIGW]), .sig_b(sig_b[i*SIGW +: SIGW]),
                .sh_a(sh_a[i*SHW +: SHW]), .sh_b(sh_b[i*SHW +: SHW]),
                .term(terms[i*(PW+1) +: PW+1]), .neg(negs[i]));
        end
    endgenerate
    lane_accumulate #(.S(S), .W(PW + 1), .ACC_W(ACC_W)) sum (
        .clk(clk), .first(first), .terms(terms), .negs(negs), .acc(acc));
endmodule

// A PE of one fixed format <EX,MX> on codes: the decoders in front of mls_pe (a build with one
// format decodes where the codes enter; the decoder is a few LUTs and lets synthesis see that sh
// never exceeds 2^EX - 2).
module mls_code_pe #(parameter EX = 2, parameter MX = 1, parameter S = 1, parameter LOG2K = 13,
                     parameter CW = 1 + EX + MX, parameter PW = 2 * (MX + (1 << EX) - 1),
                     parameter ACC_W = PW + LOG2K + 1) (
    input  wire                clk,
    input  wire                first,
    input  wire [S*CW-1:0]     a,
    input  wire [S*CW-1:0]     b,
    output wire [ACC_W-1:0]    acc
);
    wire [S-1:0] sign_a, sign_b;
    wire [S*(MX+1)-1:0] sig_a, sig_b;
    wire [S*EX-1:0] sh_a, sh_b;
    genvar i;
    generate
        for (i = 0; i < S; i = i + 1) begin : lane
            mls_decode #(.EX(EX), .MX(MX)) da (.code(a[i*CW +: CW]), .sign(sign_a[i]),
                .sig(sig_a[i*(MX+1) +: MX+1]), .sh(sh_a[i*EX +: EX]));
            mls_decode #(.EX(EX), .MX(MX)) db (.code(b[i*CW +: CW]), .sign(sign_b[i]),
                .sig(sig_b[i*(MX+1) +: MX+1]), .sh(sh_b[i*EX +: EX]));
        end
    endgenerate
    mls_pe #(.S(S), .SIGW(MX + 1), .SHW(EX), .PW(PW), .LOG2K(LOG2K), .ACC_W(ACC_W)) pe (
        .clk(clk), .first(first), .sign_a(sign_a), .sign_b(sign_b), .sig_a(sig_a), .sig_b(sig_b),
        .sh_a(sh_a), .sh_b(sh_b), .acc(acc));
endmodule

// Group scaling by shift-and-add (MlsMac::shift_add_scale): P * (2^Mg + ma)(2^Mg + mb) for
// Mg = 1 as (P<<1 + ma*P) << 1 + mb*(...), never a multiply; Mg = 0 passes P through.
module mls_scale #(parameter W = 58) (
    input  wire [W-1:0]   p,
    input  wire           ma, mb, mg,
    output wire [W+3:0]   t
);
    wire [W+3:0] px = {{4{p[W-1]}}, p};
    wire [W+3:0] ta = (px << 1) + (ma ? px : {(W + 4){1'b0}});
    wire [W+3:0] tb = (ta << 1) + (mb ? ta : {(W + 4){1'b0}});
    assign t = mg ? tb : px;
endmodule
`default_nettype wire

// Two PEs of one column (rows r and r+1: the same b, two a) with their S significand products
// on S multipliers, not 2S: ((sig_a1 << G) + sig_a2) * sig_b holds sig_a1 * sig_b at bit G and
// sig_a2 * sig_b below it. G = 2 SIGW + 1: the low product is < 2^(2 SIGW) (SIGW-bit operands,
// unsigned: signs are applied after), so it ends below bit G - 1; that guard bit stays 0 and no
// carry reaches the high product. <2,4>: SIGW = 5, G = 11, a 16 x 5-bit product in one DSP48.
module mls_pack_term #(parameter SIGW = 5, parameter SHW = 2, parameter PW = 14) (
    input  wire            sign_a1, sign_a2, sign_b,
    input  wire [SIGW-1:0] sig_a1, sig_a2, sig_b,
    input  wire [SHW-1:0]  sh_a1, sh_a2, sh_b,
    output wire [PW:0]     term1, term2,
    output wire            neg1, neg2
);
    localparam G = 2 * SIGW + 1;
    wire [G+2*SIGW-1:0] both = {sig_a1, {G{1'b0}}} + sig_a2;
    wire [G+2*SIGW-1:0] prod = both * sig_b;
    wire [2*SIGW-1:0] sp1 = prod[G +: 2*SIGW], sp2 = prod[2*SIGW-1:0];
    wire [PW-1:0] mag1 = {{(PW - 2 * SIGW){1'b0}}, sp1} << ({1'b0, sh_a1} + {1'b0, sh_b});
    wire [PW-1:0] mag2 = {{(PW - 2 * SIGW){1'b0}}, sp2} << ({1'b0, sh_a2} + {1'b0, sh_b});
    assign neg1 = sign_a1 ^ sign_b;
    assign neg2 = sign_a2 ^ sign_b;
    assign term1 = {1'b0, mag1} ^ {(PW + 1){neg1}};
    assign term2 = {1'b0, mag2} ^ {(PW + 1){neg2}};
endmodule

// A PE pair of one fixed format <EX,MX> on codes: a1, a2 (two rows) against one b (their column),
// S lanes each, two exact accumulators as mls_code_pe's; 2 S MACs per cycle on S multipliers.
module mls_pack_pe #(parameter EX = 2, parameter MX = 4, parameter S = 1, parameter LOG2K = 13,
                     parameter CW = 1 + EX + MX, parameter PW = 2 * (MX + (1 << EX) - 1),
                     parameter ACC_W = PW + LOG2K + 1) (
    input  wire                clk,
    input  wire                first,
    input  wire [S*CW-1:0]     a1,
    input  wire [S*CW-1:0]     a2,
    input  wire [S*CW-1:0]     b,
    output wire [ACC_W-1:0]    acc1,
    output wire [ACC_W-1:0]    acc2
);
    wire [S*(PW+1)-1:0] terms1, terms2;
    wire [S-1:0] negs1, negs2;
    genvar i;
    generate
        for (i = 0; i < S; i = i + 1) begin : lane
            wire s1, s2, sb;
            wire [MX:0] g1, g2, gb;
            wire [EX-1:0] h1, h2, hb;
            mls_decode #(.EX(EX), .MX(MX)) d1 (.code(a1[i*CW +: CW]), .sign(s1), .sig(g1), .sh(h1));
            mls_decode #(.EX(EX), .MX(MX)) d2 (.code(a2[i*CW +: CW]), .sign(s2), .sig(g2), .sh(h2));
            mls_decode #(.EX(EX), .MX(MX)) db (.code(b[i*CW +: CW]), .sign(sb), .sig(gb), .sh(hb));
            mls_pack_term #(.SIGW(MX + 1), .SHW(EX), .PW(PW)) t (
                .sign_a1(s1), .sign_a2(s2), .sign_b(sb), .sig_a1(g1), .sig_a2(g2), .sig_b(gb),
                .sh_a1(h1), .sh_a2(h2), .sh_b(hb),
                .term1(terms1[i*(PW+1) +: PW+1]), .term2(terms2[i*(PW+1) +: PW+1]),
                .neg1(negs1[i]), .neg2(negs2[i]));
        end
    endgenerate
    lane_accumulate #(.S(S), .W(PW + 1), .ACC_W(ACC_W)) sum1 (
        .clk(clk), .first(first), .terms(terms1), .negs(negs1), .acc(acc1));
    lane_accumulate #(.S(S), .W(PW + 1), .ACC_W(ACC_W)) sum2 (
        .clk(clk), .first(first), .terms(terms2), .negs(negs2), .acc(acc2));
endmodule
