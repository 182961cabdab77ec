// IEEE 754 binary32 building blocks, round to nearest even, gradual underflow (subnormals in and
// out), as C's float arithmetic on the host: the kernel's C simulation adds block values with
// `out += v`, so the adder must agree with that bit for bit. NaN results are the canonical quiet
// NaN 0x7FC00000 (IEEE fixes no NaN payload; tests compare NaN by class).
// FTZ = 1 (fp32_add, fp32_mul): subnormal operands read as zero and subnormal results are flushed
// to zero of their sign, as FPGA floating-point cores do; the baseline `fp32-ftz` uses it.
`default_nettype none

// Index of the highest set bit of a W-bit word (0 when the word is 0).
module msb_index #(parameter W = 32, parameter IW = 6) (
    input  wire [W-1:0]  x,
    output reg  [IW-1:0] idx
);
    integer i;
    always @* begin
        idx = 0;
        for (i = 0; i < W; i = i + 1)
            if (x[i]) idx = i;
    end
endmodule

// a + b (IEEE, gradual underflow).
module fp32_add_ieee (
    input  wire [31:0] a,
    input  wire [31:0] b,
    output wire [31:0] y
);
    wire [7:0] ea = a[30:23], eb = b[30:23];
    wire a_nan = (ea == 8'hFF) && (a[22:0] != 0), b_nan = (eb == 8'hFF) && (b[22:0] != 0);
    wire a_inf = (ea == 8'hFF) && (a[22:0] == 0), b_inf = (eb == 8'hFF) && (b[22:0] == 0);

    // Order by magnitude: x is the larger operand.
    wire swap = b[30:0] > a[30:0];
    wire [31:0] x = swap ? b : a, z = swap ? a : b;
    wire [7:0] ex = (x[30:23] == 0) ? 8'd1 : x[30:23];
    wire [7:0] ez = (z[30:23] == 0) ? 8'd1 : z[30:23];
    wire [23:0] mx = {x[30:23] != 0, x[22:0]};
    wire [23:0] mz = {z[30:23] != 0, z[22:0]};
    wire [7:0] d = ex - ez;

    // Align z: three bits below the significand (guard, round, sticky).
    wire [26:0] zx = {mz, 3'b000};
    wire [26:0] z_shift = (d >= 27) ? 27'd0 : (zx >> d);
    wire [26:0] lost_mask = (d >= 27) ? {27{1'b1}} : ~({27{1'b1}} << d);
    wire sticky = |(zx & lost_mask);
    wire [26:0] za = z_shift | {26'd0, sticky};
    wire [26:0] xa = {mx, 3'b000};

    wire subtract = x[31] ^ z[31];
    wire [27:0] sum = subtract ? ({1'b0, xa} - {1'b0, za}) : ({1'b0, xa} + {1'b0, za});

    // Normalise: a carry shifts right by one; a cancellation shifts left, no further than the
    // exponent allows (what is left is subnormal).
    wire [4:0] top;
    msb_index #(.W(27), .IW(5)) lz (.x(sum[26:0]), .idx(top));
    wire [4:0] lead = 5'd26 - top;
    wire [7:0] room = ex - 8'd1;
    wire [4:0] lshift = (sum[26:0] == 0) ? 5'd0 : (({3'b0, lead} > room) ? room[4:0] : lead);
    wire [26:0] norm_l = sum[26:0] << lshift;
    wire carry = sum[27];
    wire [26:0] norm = carry ? {sum[27:2], sum[1] | sum[0]} : norm_l;
    wire [8:0] e_norm = carry ? {1'b0, ex} + 9'd1 : {1'b0, ex} - {4'd0, lshift};

    wire [23:0] sig = norm[26:3];
    wire guard = norm[2], rest = norm[1] | norm[0];
    wire round_up = guard & (rest | sig[0]);
    // {field, fraction} + round_up carries into the exponent (subnormal -> normal, max -> Inf).
    wire [7:0] field = sig[23] ? e_norm[7:0] : 8'd0;
    wire [30:0] mag = {field, sig[22:0]} + {30'd0, round_up};
    wire exact_zero = (sum == 0);
    wire sign = exact_zero ? (x[31] & z[31]) : x[31];
    wire overflow = e_norm >= 9'd255;

    assign y = (a_nan | b_nan | (a_inf & b_inf & (a[31] ^ b[31]))) ? 32'h7FC00000 :
               (a_inf | b_inf) ? (a_inf ? a : b) :
               overflow ? {sign, 8'hFF, 23'd0} :
               {sign, mag};
endmodule

// a + b; FTZ = 1: IEEE addition of the flushed operands, result flushed.
module fp32_add #(parameter FTZ = 0) (
    input  wire [31:0] a,
    input  wire [31:0] b,
    output wire [31:0] y
);
    generate
        if (FTZ) begin : ftz
            wire [31:0] af = (a[30:23] == 0) ? {a[31], 31'd0} : a;
            wire [31:0] bf = (b[30:23] == 0) ? {b[31], 31'd0} : b;
            wire [31:0] r;
            fp32_add_ieee add (.a(af), .b(bf), .y(r));
            assign y = (r[30:23] == 0) ? {r[31], 31'd0} : r;
        end else begin : ieee
            fp32_add_ieee add (.a(a), .b(b), .y(y));
        end
    endgenerate
endmodule

// a * b. FTZ = 1: the operands' significands are normal, so the product needs a 1-bit normalise
// and only an exponent of 0 can still round up to the smallest normal.
module fp32_mul #(parameter FTZ = 0) (
    input  wire [31:0] a,
    input  wire [31:0] b,
    output wire [31:0] y
);
    wire [7:0] ea = a[30:23], eb = b[30:23];
    wire a_nan = (ea == 8'hFF) && (a[22:0] != 0), b_nan = (eb == 8'hFF) && (b[22:0] != 0);
    wire a_inf = (ea == 8'hFF) && (a[22:0] == 0), b_inf = (eb == 8'hFF) && (b[22:0] == 0);
    wire a_zero = FTZ ? (ea == 0) : (a[30:0] == 0), b_zero = FTZ ? (eb == 0) : (b[30:0] == 0);
    wire sign = a[31] ^ b[31];

    wire [23:0] ma = {ea != 0, a[22:0]}, mb = {eb != 0, b[22:0]};
    wire [47:0] p = ma * mb;
    wire [5:0] lead;
    generate
        if (FTZ) begin : one_bit
            assign lead = {5'd0, ~p[47]};
        end else begin : full
            wire [5:0] top;
            msb_index #(.W(48), .IW(6)) lz (.x(p), .idx(top));
            assign lead = 6'd47 - top;
        end
    endgenerate
    wire [47:0] q = p << lead;
    // Biased exponent of q read as 1.f: ea' + eb' - 126 - lead (ea' = 1 for subnormals).
    wire signed [10:0] e = $signed({3'b0, (ea == 0) ? 8'd1 : ea}) + $signed({3'b0, (eb == 0) ? 8'd1 : eb})
                           - 11'sd126 - $signed({5'b0, lead});
    // Below the normal range: shift right into the subnormal position (sticky keeps the rest).
    wire [10:0] under = 11'sd1 - e;
    wire [5:0] rshift = (e >= 1) ? 6'd0 : FTZ ? 6'd1 : ((under > 11'd49) ? 6'd49 : under[5:0]);
    wire [48:0] qx = {q, 1'b0};
    wire [48:0] q_r = qx >> rshift;
    wire [48:0] lost = qx & ~({49{1'b1}} << rshift);
    wire [23:0] sig = q_r[48:25];
    wire guard = q_r[24];
    wire rest = (|q_r[23:0]) | (|lost);
    wire round_up = guard & (rest | sig[0]);
    wire [7:0] field = sig[23] ? e[7:0] : 8'd0;
    wire [30:0] mag = {field, sig[22:0]} + {30'd0, round_up};
    wire overflow = e >= 11'sd255;
    wire flush = FTZ && (e < 0 || mag[30:23] == 0);

    assign y = (a_nan | b_nan | (a_inf & b_zero) | (b_inf & a_zero)) ? 32'h7FC00000 :
               (a_inf | b_inf) ? {sign, 8'hFF, 23'd0} :
               (a_zero | b_zero) ? {sign, 31'd0} :
               overflow ? {sign, 8'hFF, 23'd0} :
               flush ? {sign, 31'd0} :
               {sign, mag};
endmodule

// t * 2^e as fp32, e <= 0 (the kernel's scaled_to_f32): t (W-bit two's complement) is rounded to
// fp32 once, round to nearest even, then e is added to the exponent field; a field <= 0 gives +0.
module scaled_to_f32 #(parameter W = 62, parameter EW = 11) (
    input  wire [W-1:0]         t,
    input  wire signed [EW-1:0] e,
    output wire [31:0]          y
);
    localparam IW = $clog2(W);
    localparam signed [EW+1:0] BIAS = 127;
    wire neg = t[W-1];
    wire [W-1:0] mag = neg ? (~t + 1'b1) : t;  // -2^(W-1) reads as 2^(W-1), unsigned
    wire [IW-1:0] top;
    msb_index #(.W(W), .IW(IW)) lz (.x(mag), .idx(top));
    localparam XW = (W > 25) ? W : 25;
    // Place the leading one at bit XW-1; 24 significand bits, then guard, then the rest.
    wire [XW-1:0] mx = {{(XW - W){1'b0}}, mag};
    wire [XW-1:0] q = mx << (XW - 1 - top);
    wire [23:0] sig = q[XW-1:XW-24];
    wire guard = q[XW-25];
    wire rest = (XW > 25) ? (|(q & ~({XW{1'b1}} << (XW - 25)))) : 1'b0;
    wire round_up = guard & (rest | sig[0]);
    wire [24:0] rounded = {1'b0, sig} + {24'd0, round_up};
    // 127 + top (+1 when rounding carried out of the significand), then the scale exponent.
    wire signed [EW+1:0] field = $signed({{(EW + 2 - IW){1'b0}}, top}) + BIAS
                                 + $signed({{(EW + 1){1'b0}}, rounded[24]}) + e;
    wire [22:0] frac = rounded[24] ? 23'd0 : rounded[22:0];
    assign y = (mag == 0 || field <= 0) ? 32'd0 : {neg, field[7:0], frac};
endmodule
`default_nettype wire
