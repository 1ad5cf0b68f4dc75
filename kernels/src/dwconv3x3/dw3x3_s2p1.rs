//! `dw3x3_s2p1_<R>x<LANES>__<lanes>`: one band of `R` output rows x one
//! vector of `LANES` output columns of a depthwise 3x3 convolution, stride 2,
//! padding 1, read from a de-interleaved, zero-padded copy of the input.
//!
//! ```text
//! out[oy][ox] = A(bias + Σ_{ky,kx<3} w[ky][kx] · in[2oy+ky-1][2ox+kx-1])
//!
//! de-interleaved scratch (row r holds input row r-1; rows 0 and h+1 are zero):
//!   e[r][j]   = in[r-1][2j]                         (kx = 1 tap of column j)
//!   o[r][j]   = in[r-1][2j-1], o[r][0] = 0          (kx = 0 tap of column j)
//!   o[r][j+1] = in[r-1][2j+1]                       (kx = 2 tap of column j)
//!   zero past the row's last column
//!
//! scratch row i = 2*oy0 + i (i in 0..2R+1) is loaded once as
//!   a = o[..][ox0], b = e[..][ox0], c = o[..][ox0+1]
//! and feeds output row j with ky = i - 2j in 0..3 (odd rows feed two):
//!
//!            i=0   i=1   i=2   i=3   i=4   i=5   i=6   i=7   i=8   (R = 4)
//!   acc[0]   ky=0  ky=1  ky=2
//!   acc[1]               ky=0  ky=1  ky=2
//!   acc[2]                           ky=0  ky=1  ky=2
//!   acc[3]                                       ky=0  ky=1  ky=2
//! ```
//! Every load is contiguous (no gathers, no masks: the padding is real zeros
//! in the scratch); a step costs `3(2R+1)` loads and `9R` FMAs for `R` output
//! vectors. Accumulators start from the bias; the activation is applied in
//! registers before the store.
//!
//! Packed weights per channel: `[bias, w00, w01, w02, w10, .., w22]`, splatted
//! by the driver into `k: [V; 10]`.
//!
//! Preconditions (asserted once at entry): `e_off + 2R*ws + LANES <= e.len()`,
//! `e_off + 2R*ws + 1 + LANES <= o.len()` (the `o` plane is read at the same
//! offsets as `e`, plus one), and `out_off + (R-1)*ow + LANES <= output.len()`.

use crate::act::Act;
use crate::lanes::{LANES, V, load, store};

/// Computes one `R x LANES` output block; see the module docs.
///
/// `e_off` is the index of `e[2*oy0][ox0]` (the same offset addresses
/// `o[2*oy0][ox0]`), `ws` the scratch row stride, `out_off` the index of
/// `out[oy0][ox0]` and `ow` the output row stride.
///
/// # Panics
/// If any of the preconditions in the module docs does not hold.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn dw3x3_s2p1_band<const R: usize, A: Act>(
    k: &[V; 10],
    e: &[f32],
    o: &[f32],
    e_off: usize,
    ws: usize,
    output: &mut [f32],
    out_off: usize,
    ow: usize,
) {
    assert!(e_off + 2 * R * ws + LANES <= e.len(), "band reads past the even plane");
    assert!(e_off + 2 * R * ws + 1 + LANES <= o.len(), "band reads past the odd plane");
    assert!(out_off + (R - 1) * ow + LANES <= output.len(), "band writes past the output");

    let mut acc = [k[0]; R];
    // A constant trip count, so LLVM unrolls fully (weights stay in registers).
    for i in 0..2 * R + 1 {
        let base = e_off + i * ws;
        let a = load(o, base);
        let b = load(e, base);
        let c = load(o, base + 1);
        for (j, acc_j) in acc.iter_mut().enumerate() {
            // Output row j uses scratch rows 2j..2j+3, i.e. ky = i - 2j.
            if i >= 2 * j && i - 2 * j < 3 {
                let ky = i - 2 * j;
                *acc_j = a.mul_add(k[1 + 3 * ky], *acc_j);
                *acc_j = b.mul_add(k[2 + 3 * ky], *acc_j);
                *acc_j = c.mul_add(k[3 + 3 * ky], *acc_j);
            }
        }
    }
    for (j, a) in acc.iter().enumerate() {
        store(output, out_off + j * ow, A::apply(*a));
    }
}
