//! `conv1x1_<MR>x<NRV*LANES>__<lanes>`: one full register tile of a 1x1 convolution.
//!
//! ```text
//! out[r][j] = A(bias[r] + Σ_kk w[kk][r] · b[kk][j])     r < MR, j < NRV*LANES
//!
//! accumulators (MR x NRV vectors), e.g. 8 x 3 x f32x16 = 24 zmm:
//!            b[kk][0..16)  b[kk][16..32)  b[kk][32..48)
//!   w[kk][0]   acc[0][0]     acc[0][1]      acc[0][2]
//!   ...
//!   w[kk][7]   acc[7][0]     acc[7][1]      acc[7][2]
//! ```
//! Per reduction step: NRV vector loads of `b`, MR broadcasts of `w` (folded
//! into the FMA's memory operand by LLVM), MR*NRV FMAs. Accumulators start
//! from the bias; the activation is applied in registers before the store.
//!
//! Packed block: `[bias[MR] | w[0][MR] | w[1][MR] | ... | w[k-1][MR]]`.
//!
//! Row `kk` of `b` starts at `b_off + rows.at(kk)`: a plain stride for a 1x1
//! convolution ([`Strided`]), a tap-offset table for the direct 3x3 kernels
//! ([`Table`]).
//!
//! Preconditions (asserted once at entry): the packed block holds `(k+1)*MR`
//! floats, `max_row >= rows.at(kk)` for every `kk < k` (the caller computes it
//! once per call), `b[b_off + max_row .. + NRV*LANES]` is in bounds, and
//! `c[c_off + r*ldc .. + NRV*LANES]` for every `r < MR`.

use crate::act::Act;
use crate::lanes::{LANES, V, get_unchecked, load_unchecked, store_unchecked};

/// Where each reduction row of the `b` matrix starts.
pub trait Rows: Copy {
    /// Offset of row `kk` (relative to the tile's `b_off`).
    fn at(&self, kk: usize) -> usize;
    /// The largest offset over rows `0..k` (`k >= 1`).
    fn max(&self, k: usize) -> usize;
}

/// Rows `ldb` elements apart: `at(kk) = kk * ldb`.
#[derive(Clone, Copy, Debug)]
pub struct Strided(pub usize);

impl Rows for Strided {
    #[inline(always)]
    fn at(&self, kk: usize) -> usize {
        kk * self.0
    }
    fn max(&self, k: usize) -> usize {
        (k - 1) * self.0
    }
}

/// Rows at arbitrary offsets: `at(kk) = table[kk]`.
#[derive(Clone, Copy, Debug)]
pub struct Table<'a>(pub &'a [usize]);

impl Rows for Table<'_> {
    #[inline(always)]
    fn at(&self, kk: usize) -> usize {
        self.0[kk]
    }
    fn max(&self, k: usize) -> usize {
        self.0[..k].iter().copied().max().unwrap_or(0)
    }
}

/// Computes one `MR x (NRV*LANES)` output tile; see the module docs.
///
/// # Panics
/// If any of the preconditions in the module docs does not hold.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn conv1x1_tile<const MR: usize, const NRV: usize, A: Act, R: Rows>(
    k: usize,
    packed: &[f32],
    b: &[f32],
    b_off: usize,
    rows: R,
    max_row: usize,
    c: &mut [f32],
    c_off: usize,
    ldc: usize,
) {
    assert!(packed.len() >= (k + 1) * MR, "packed block too short");
    assert!(k == 0 || b_off + max_row + NRV * LANES <= b.len(), "b tile out of bounds");
    assert!(c_off + (MR - 1) * ldc + NRV * LANES <= c.len(), "c tile out of bounds");

    let mut acc = [[V::ZERO; NRV]; MR];
    for (r, row) in acc.iter_mut().enumerate() {
        *row = [V::splat(packed[r]); NRV];
    }
    let w = &packed[MR..(k + 1) * MR];
    for kk in 0..k {
        let row = b_off + rows.at(kk);
        debug_assert!(rows.at(kk) <= max_row);
        let mut bv = [V::ZERO; NRV];
        for (j, v) in bv.iter_mut().enumerate() {
            // SAFETY: row <= b_off + max_row, in bounds by the entry assert on `b`.
            *v = unsafe { load_unchecked(b, row + j * LANES) };
        }
        for (r, row) in acc.iter_mut().enumerate() {
            // SAFETY: `w` holds k * MR floats and kk < k, r < MR.
            let wr = V::splat(unsafe { get_unchecked(w, kk * MR + r) });
            for (a, bj) in row.iter_mut().zip(bv.iter()) {
                *a = wr.mul_add(*bj, *a);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (j, a) in row.iter().enumerate() {
            // SAFETY: in bounds by the entry assert on `c`.
            unsafe { store_unchecked(c, c_off + r * ldc + j * LANES, A::apply(*a)) };
        }
    }
}
