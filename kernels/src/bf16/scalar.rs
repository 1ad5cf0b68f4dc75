//! The scalar f32 <-> bf16 conversions, the definitions every vector
//! conversion and the software model follow.
//!
//! # Rounding (`vcvtneps2bf16`, bit for bit)
//! - zero or denormal: a zero of the same sign (denormals are flushed);
//! - infinity: the same infinity;
//! - NaN: the top 16 bits with the quiet bit (bit 6 of the bf16) set, so the
//!   sign and the top of the payload are kept;
//! - otherwise round to nearest, ties to even, by adding `0x7fff + lsb` to
//!   the bits (a carry into the exponent rounds up to the next binade or to
//!   infinity, as it should). The result is never denormal: a normal f32
//!   rounds to a normal bf16 or to infinity.
//!
//! bf16 -> f32 is exact: the 16 bits become the high half of the f32.

/// Rounds `x` to bf16 exactly as `vcvtneps2bf16` does (see the module docs):
/// round to nearest even, denormals to signed zero, NaN quieted, MXCSR
/// ignored. Returns the bf16 bits.
#[inline(always)]
pub fn f32_to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    let exp = bits & 0x7f80_0000;
    if exp == 0 {
        // Zero or denormal: signed zero.
        return ((bits >> 16) & 0x8000) as u16;
    }
    if exp == 0x7f80_0000 {
        // Infinity keeps its bits; NaN gets the quiet bit.
        let h = (bits >> 16) as u16;
        return if bits & 0x007f_ffff != 0 { h | 0x0040 } else { h };
    }
    let lsb = (bits >> 16) & 1;
    (bits.wrapping_add(0x7fff + lsb) >> 16) as u16
}

/// The f32 value of the bf16 bits `h` (exact).
#[inline(always)]
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// `x` rounded to bf16 and back: the value the kernels multiply.
#[inline(always)]
pub fn round_to_bf16(x: f32) -> f32 {
    bf16_to_f32(f32_to_bf16(x))
}
