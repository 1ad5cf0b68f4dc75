//! `dw3x3_s1p1_<R>x<LANES>__<lanes>`: one band of `R` output rows x one
//! vector of `LANES` output columns of a depthwise 3x3 convolution, stride 1,
//! padding 1, read straight from the unpadded input plane.
//!
//! ```text
//! out[oy][ox] = A(bias + Σ_{ky,kx<3} w[ky][kx] · in[oy+ky-1][ox+kx-1])
//!                                        oy in oy0..oy0+R, ox in ox0..ox0+LANES
//!
//! input row iy = oy0-1+i (i in 0..R+2) is loaded once, as three shifted vectors
//!   l = in[iy][ox0-1 ..] & mask_l     (kx = 0)
//!   c = in[iy][ox0   ..]              (kx = 1)
//!   r = in[iy][ox0+1 ..] & mask_r     (kx = 2)
//! and feeds every output row j with ky = i - j in 0..3:
//!
//!            i=0      i=1      i=2      i=3      i=4      i=5      (R = 4)
//!   acc[0]   ky=0     ky=1     ky=2
//!   acc[1]            ky=0     ky=1     ky=2
//!   acc[2]                     ky=0     ky=1     ky=2
//!   acc[3]                              ky=0     ky=1     ky=2
//! ```
//! So a step costs `3(R+2)` loads and `9R` FMAs for `R` output vectors.
//! Accumulators start from the bias; the activation is applied in registers
//! before the store.
//!
//! When the ISA has registers for `2R` accumulators (AVX-512: 32), the taps
//! of the outer kernel rows (`ky = 0, 2`) go to a second set that starts at
//! zero and is added before the activation: `A((bias + Σ_{ky=1}) + Σ_{ky≠1})`.
//! One chain of 9 dependent FMAs per output vector becomes chains of 3 and 6,
//! and FMA latency stops bounding the band (docs/experiments.md). With 16
//! registers (AVX2, SSE2) the second set would spill, so those ISAs keep one
//! chain.
//!
//! Horizontal padding: on the vectors that touch a plane edge (`EDGE`, a
//! compile-time bit set), `mask_l` / `mask_r` are bit masks (all-ones or zero per
//! lane) that clear the lanes whose tap falls left of column 0 or right of
//! column `w-1` (those lanes read the neighbouring row). A bitwise AND clears a
//! NaN too, so a NaN in a neighbouring row never leaks. Vertical padding is
//! compile-time: `TOP` skips input row `oy0-1`, `BOT` skips row `oy0+R`.
//! Lanes past the end of the row compute garbage the driver never keeps.
//!
//! Packed weights per channel: `[bias, w00, w01, w02, w10, .., w22]`, splatted
//! by the driver into `w9: [V; 10]`.
//!
//! Preconditions (asserted once at entry): every index read,
//! `in_off - 1 - (!TOP as usize) * w .. in_off + (R - BOT as usize) * w + 1 + LANES`,
//! lies in `input`, and `out_off + (R-1)*ow + LANES <= output.len()`.

use crate::act::Act;
use crate::isa::Vector;
use crate::lanes::Lanes;

/// Registers the band needs besides its accumulators: 10 weight vectors, 3
/// taps, 2 masks.
const SPLIT_REGISTERS: usize = 15;

/// `EDGE` bit: the vector holds column 0, so its left taps are masked.
pub(crate) const EDGE_LEFT: u8 = 1;
/// `EDGE` bit: the vector holds column `w-1`, so its right taps are masked.
pub(crate) const EDGE_RIGHT: u8 = 2;

/// What one band of the stride-1 kernel reads and where it writes: the
/// channel's splatted `[bias, w0..w8]`, the input plane from `in_off` (rows
/// `w` apart), the two edge-column lane masks, and the output from `out_off`
/// (rows `ow` apart).
#[derive(Clone, Copy)]
pub(crate) struct Band<'a, V> {
    pub(crate) w9: &'a [V; 10],
    pub(crate) input: &'a [f32],
    pub(crate) in_off: usize,
    pub(crate) w: usize,
    pub(crate) mask_l: V,
    pub(crate) mask_r: V,
    pub(crate) out_off: usize,
    pub(crate) ow: usize,
}

/// Computes one `R x LANES` output block; see the module docs.
///
/// `in_off` is the index of `in[oy0][ox0]`, `w` the input row stride,
/// `out_off` the index of `out[oy0][ox0]` and `ow` the output row stride.
///
/// # Panics
/// If any of the preconditions in the module docs does not hold.
#[inline(always)]
pub(crate) fn dw3x3_s1p1_band<
    V: Vector,
    const R: usize,
    const TOP: bool,
    const BOT: bool,
    const EDGE: u8,
    A: Act,
>(
    band: &Band<'_, V>,
    output: &mut [f32],
) {
    let Band { w9, input, in_off, w, mask_l, mask_r, out_off, ow } = *band;
    // Input rows oy0-1+i for i in first..=last; row 0 / row R+1 are padding
    // under TOP / BOT and are skipped at compile time.
    let first = if TOP { 1 } else { 0 };
    let last = if BOT { R } else { R + 1 };
    assert!(in_off + first * w > w, "band reads before the input");
    assert!(in_off + last * w + 1 + V::LANES <= input.len() + w, "band reads past the input");
    assert!(out_off + (R - 1) * ow + V::LANES <= output.len(), "band writes past the output");

    // With registers to spare, the outer kernel rows' taps go to a second
    // set of accumulators: two chains of 3 and 6 FMAs per output vector
    // instead of one of 9, so FMA latency no longer bounds the band. (The
    // centre tap stays fused with the bias, as in every other kernel.)
    let split = SPLIT_REGISTERS + 2 * R <= V::REGISTERS;
    let mut acc = [w9[0]; R];
    let mut outer = [V::zero(); R];
    // A constant trip count, so LLVM unrolls the row loop fully and the weight
    // indices below become compile-time constants (weights stay in registers).
    for i in 0..R + 2 {
        if (TOP && i == 0) || (BOT && i == R + 1) {
            continue;
        }
        let base = in_off + i * w - w;
        // SAFETY: base - 1 = in_off + (i-1)*w - 1 >= in_off + first*w - w - 1 >= 0
        // and base + 1 + V::LANES <= in_off + last*w - w + 1 + V::LANES <= input.len(),
        // both by the entry asserts (first <= i <= last).
        let (l, c, r) = unsafe {
            (
                V::load_unchecked(input, base - 1),
                V::load_unchecked(input, base),
                V::load_unchecked(input, base + 1),
            )
        };
        // Masks only on the vectors that touch a plane edge (a compile-time
        // choice): an AND costs an FP-pipe slot like an FMA does.
        let l = if EDGE & EDGE_LEFT != 0 { l.and(mask_l) } else { l };
        let r = if EDGE & EDGE_RIGHT != 0 { r.and(mask_r) } else { r };
        for (j, (a, o)) in acc.iter_mut().zip(outer.iter_mut()).enumerate() {
            // Output row j uses input rows j..j+3, i.e. ky = i - j.
            if i >= j && i - j < 3 {
                let ky = i - j;
                let a = if split && ky != 1 { o } else { a };
                *a = l.mul_add(w9[1 + 3 * ky], *a);
                *a = c.mul_add(w9[2 + 3 * ky], *a);
                *a = r.mul_add(w9[3 + 3 * ky], *a);
            }
        }
    }
    for (j, (a, o)) in acc.iter().zip(outer).enumerate() {
        let a = if split { a.add(o) } else { *a };
        // SAFETY: out_off + j*ow + V::LANES <= out_off + (R-1)*ow + V::LANES <= output.len()
        // by the entry assert.
        unsafe { A::apply(a).store_unchecked(output, out_off + j * ow) };
    }
}
