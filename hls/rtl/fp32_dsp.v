// fp32 addition with its wide shifts on DSPs (the classic DSP barrel shifter: a shift by s is a
// multiplication by the one-hot 2^s, which synthesis maps onto a DSP48 multiplier). Same result
// as fp32_add_ieee (fp32.v) bit for bit: round to nearest even, gradual underflow, quiet NaN.
//
// Two paths, one multiplier. An effective subtraction of operands whose exponents are at most one
// apart ("near") is exact, may cancel many leading bits and so needs a wide LEFT shift, but its
// alignment is at most one place. Every other case ("far") needs a wide alignment RIGHT shift, but
// its result is normalised by at most one place. A case takes one wide shift, never two, so one
// product serves both:
//   far:  mz * 2^(27 - min(d, 27)) = {z aligned, the bits the alignment drops}, 52 bits;
//   near: diff[24:2] * 2^(lshift - 2), used only when lshift >= 2 (then diff < 2^25, diff[1:0] = 0).
`default_nettype none

module fp32_add_dsp (
    input  wire [31:0] a,
    input  wire [31:0] b,
    output wire [31:0] y
);
    wire [7:0] ea = a[30:23], eb = b[30:23];
    wire a_nan = (ea == 8'hFF) && (a[22:0] != 0), b_nan = (eb == 8'hFF) && (b[22:0] != 0);
    wire a_inf = (ea == 8'hFF) && (a[22:0] == 0), b_inf = (eb == 8'hFF) && (b[22:0] == 0);

    wire swap = b[30:0] > a[30:0];
    wire [31:0] x = swap ? b : a, z = swap ? a : b;
    wire [7:0] ex = (x[30:23] == 0) ? 8'd1 : x[30:23];
    wire [7:0] ez = (z[30:23] == 0) ? 8'd1 : z[30:23];
    wire [23:0] mx = {x[30:23] != 0, x[22:0]};
    wire [23:0] mz = {z[30:23] != 0, z[22:0]};
    wire [7:0] d = ex - ez;
    wire subtract = x[31] ^ z[31];
    wire near = subtract & (d <= 8'd1);
    wire [26:0] xa = {mx, 3'b000};
    wire [7:0] room = ex - 8'd1;  // the left shift that keeps the exponent field >= 1

    // Near: z aligned by d in {0, 1} drops no set bit; x - z >= 0 is exact.
    wire [26:0] diff = xa - (d[0] ? {1'b0, mz, 2'b00} : {mz, 3'b000});
    wire [4:0] top;
    msb_index #(.W(27), .IW(5)) lz (.x(diff), .idx(top));
    wire [4:0] lead = 5'd26 - top;
    wire [4:0] lshift_near = (diff == 0) ? 5'd0 : (({3'b0, lead} > room) ? room[4:0] : lead);
    wire wide_left = near & (lshift_near >= 5'd2);

    // The one product (a shift by s = a product with 2^s).
    wire [4:0] dd = (d > 8'd27) ? 5'd27 : d[4:0];
    wire [4:0] s = wide_left ? lshift_near - 5'd2 : 5'd27 - dd;
    wire [23:0] data = wide_left ? {1'b0, diff[24:2]} : mz;
    // 24 x 17 bits: one DSP48E1/E2 multiplier. A shift of 17 or more moves the product by a fixed
    // 17 places (wiring and a 2-way select, not a shifter).
    wire hi = s >= 5'd17;
    wire [16:0] pow = 17'd1 << (hi ? s - 5'd17 : s);
    wire [40:0] p = data * pow;
    wire [51:0] prod = hi ? {p[34:0], 17'd0} : {11'd0, p};

    // Far: z aligned with its sticky bit, then the add or subtract.
    wire [26:0] za = prod[50:24] | {26'd0, |prod[23:0]};
    wire [27:0] sum_far = subtract ? ({1'b0, xa} - {1'b0, za}) : ({1'b0, xa} + {1'b0, za});
    // At most one place left: a far subtraction leaves >= 2^25; an addition of a subnormal x has room 0.
    wire lshift_far = ~sum_far[27] & ~sum_far[26] & (room != 0) & (sum_far != 0);

    wire [27:0] v = near ? {1'b0, diff} : sum_far;
    wire carry = v[27];
    wire shift_one = near ? (lshift_near == 5'd1) : lshift_far;
    wire [26:0] norm = wide_left ? {prod[22:0], 4'b0000} :
                       carry ? {v[27:2], v[1] | v[0]} :
                       shift_one ? {v[25:0], 1'b0} : v[26:0];
    wire [4:0] lshift = near ? lshift_near : {4'd0, lshift_far};
    wire [8:0] e_norm = carry ? {1'b0, ex} + 9'd1 : {1'b0, ex} - {4'd0, lshift};

    wire [23:0] sig = norm[26:3];
    wire guard = norm[2], rest = norm[1] | norm[0];
    wire round_up = guard & (rest | sig[0]);
    wire [7:0] field = sig[23] ? e_norm[7:0] : 8'd0;
    wire [30:0] mag = {field, sig[22:0]} + {30'd0, round_up};
    wire exact_zero = (v == 0);
    wire sign = exact_zero ? (x[31] & z[31]) : x[31];
    wire overflow = e_norm >= 9'd255;

    assign y = (a_nan | b_nan | (a_inf & b_inf & (a[31] ^ b[31]))) ? 32'h7FC00000 :
               (a_inf | b_inf) ? (a_inf ? a : b) :
               overflow ? {sign, 8'hFF, 23'd0} :
               {sign, mag};
endmodule

// a + b where b is a Mogami product (+-0, a normal number or the quiet NaN, never Inf nor
// subnormal) and a anything: the Mogami MAC's adder, fp32_add_dsp's two paths with
//   * the shift's product on two DSPs: 2^s = pow_lo + 2^17 pow_hi with one of them 0, so the two
//     products do not overlap where they are nonzero and are ORed, not selected (no 52-bit mux);
//   * a near case that shifts left by 0 or 1 taken through the far path (d <= 1 drops no bit, so
//     the far sum is exact), leaving the product only the wide (>= 2) left shifts;
//   * the near difference without its two low bits (always 0), and no Inf test on b;
//   * the special results built field by field.
module fp32_add_mac (
    input  wire [31:0] a,
    input  wire [31:0] b,
    output wire [31:0] y
);
    wire [7:0] ea = a[30:23], eb = b[30:23];
    wire a_max = &ea, a_frac = |a[22:0];
    wire nan = (a_max & a_frac) | (&eb);  // b's exponent field is FF only for the quiet NaN
    wire a_inf = a_max & ~a_frac;

    wire swap = b[30:0] > a[30:0];
    wire [31:0] x = swap ? b : a, z = swap ? a : b;
    wire [7:0] ex = (x[30:23] == 0) ? 8'd1 : x[30:23];
    wire [7:0] ez = (z[30:23] == 0) ? 8'd1 : z[30:23];
    wire [23:0] mx = {x[30:23] != 0, x[22:0]};
    wire [23:0] mz = {z[30:23] != 0, z[22:0]};
    wire [7:0] d = ex - ez;
    wire subtract = a[31] ^ b[31];
    wire [7:0] room = ex - 8'd1;  // the left shift that keeps the exponent field >= 1

    // Near (an effective subtraction, d <= 1): x - z >= 0 is exact; diff = (x - z) / 4 in the
    // frame of xa below (its two low bits are 0).
    wire [24:0] diff = {mx, 1'b0} - (d[0] ? {1'b0, mz} : {mz, 1'b0});
    wire [4:0] top;
    msb_index #(.W(25), .IW(5)) lz (.x(diff), .idx(top));
    wire [4:0] lead = 5'd24 - top;
    wire [4:0] lshift_near = ({3'b0, lead} > room) ? room[4:0] : lead;
    wire wide_left = subtract & (d <= 8'd1) & (diff != 0) & (lshift_near >= 5'd2);

    // The one product (a shift by s = a product with 2^s), 24 x 28 bits on two multipliers.
    wire [4:0] dd = (d > 8'd27) ? 5'd27 : d[4:0];
    wire [4:0] s = wide_left ? lshift_near - 5'd2 : 5'd27 - dd;
    wire [22:0] dhi = diff[22:0];
    wire [23:0] data = wide_left ? {1'b0, dhi} : mz;
    wire hi = s >= 5'd17;
    wire [16:0] pow_lo = hi ? 17'd0 : 17'd1 << s;
    wire [10:0] pow_hi = hi ? 11'd1 << (s - 5'd17) : 11'd0;
    wire [40:0] p_lo = data * pow_lo;
    wire [34:0] p_hi = data * pow_hi;
    wire [51:0] prod = {p_hi, 17'd0} | {11'd0, p_lo};

    // Far (and near with a shift of 0 or 1): z aligned with its sticky bit, then the add or
    // subtract. After a wide left shift prod < 2^23, so v = xa - (0 or 1): no carry, not 0.
    wire [26:0] xa = {mx, 3'b000};
    wire [26:0] za = prod[50:24] | {26'd0, |prod[23:0]};
    wire [27:0] v = subtract ? ({1'b0, xa} - {1'b0, za}) : ({1'b0, xa} + {1'b0, za});
    wire carry = v[27];
    // At most one place left: a far subtraction leaves >= 2^25; an addition of a subnormal x has room 0.
    wire shift_one = ~v[27] & ~v[26] & (room != 0) & (v != 0);
    wire [26:0] norm = wide_left ? {prod[22:0], 4'b0000} :
                       carry ? {v[27:2], v[1] | v[0]} :
                       shift_one ? {v[25:0], 1'b0} : v[26:0];
    wire [4:0] lshift = wide_left ? lshift_near : {4'd0, shift_one};
    wire [8:0] e_norm = carry ? {1'b0, ex} + 9'd1 : {1'b0, ex} - {4'd0, lshift};

    wire [23:0] sig = norm[26:3];
    wire guard = norm[2], rest = norm[1] | norm[0];
    wire round_up = guard & (rest | sig[0]);
    wire [7:0] field = sig[23] ? e_norm[7:0] : 8'd0;
    wire [30:0] mag = {field, sig[22:0]} + {30'd0, round_up};
    wire sign = (v == 0) ? (a[31] & b[31]) : x[31];
    wire overflow = e_norm >= 9'd255;

    // An Inf a (b is finite) is the result: its sign, FF, 0.
    wire all_ones = nan | a_inf | overflow;
    wire y_sign = nan ? 1'b0 : a_inf ? a[31] : sign;
    assign y = {y_sign, all_ones ? 8'hFF : mag[30:23], nan ? 23'h400000 : all_ones ? 23'd0 : mag[22:0]};
endmodule

// The adder of a finisher or Mogami MAC: DSP = 0 fp32_add (all LUTs), DSP = 1 fp32_add_dsp,
// DSP = 2 fp32_add_mac (b a Mogami product).
module fp32_add_any #(parameter DSP = 0) (
    input  wire [31:0] a,
    input  wire [31:0] b,
    output wire [31:0] y
);
    generate
        if (DSP == 2) begin : mac
            fp32_add_mac add (.a(a), .b(b), .y(y));
        end else if (DSP) begin : dsp
            fp32_add_dsp add (.a(a), .b(b), .y(y));
        end else begin : lut
            fp32_add add (.a(a), .b(b), .y(y));
        end
    endgenerate
endmodule
`default_nettype wire
