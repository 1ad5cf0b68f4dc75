//! `conv1x1_<MR>x<NRV*LANES>__<isa>`: one full register tile of a 1x1 convolution.
//!
//! ```text
//! out[r][j] = A(bias[r] + Σ_kk w[kk][r] · b[kk][j])     r < MR, j < NRV*LANES
//!
//! accumulators (MR x NRV vectors), e.g. AVX-512 8 x 3 x 16 lanes = 24 zmm:
//!            b[kk][0..16)  b[kk][16..32)  b[kk][32..48)
//!   w[kk][0]   acc[0][0]     acc[0][1]      acc[0][2]
//!   ...
//!   w[kk][7]   acc[7][0]     acc[7][1]      acc[7][2]
//! ```
//! Tiles per ISA: AVX-512 8 x 48 (24 of 32 zmm), AVX2 and portable 6 x 16
//! (12 of 16 ymm). Per reduction step: NRV vector loads of `b`, MR broadcasts
//! of `w` (folded into the FMA's memory operand by LLVM), MR*NRV FMAs.
//! Accumulators start from the bias; the activation is applied in registers
//! before the store.
//!
//! Packed block: `[bias[MR] | w[0][MR] | w[1][MR] | ... | w[k-1][MR]]`.
//!
//! Row `kk` of `b` starts at `b_off + rows.at(kk)`: a plain stride for a 1x1
//! convolution ([`Strided`]), a tap-offset table for the direct 3x3 kernels
//! ([`Table`]). The largest row offset the kernel trusts comes with the rows
//! in a [`BoundedRows`], which only computes it from them.
//!
//! Preconditions (asserted once at entry, with overflow-checked arithmetic):
//! the packed block holds `(k+1)*MR` floats, `b[b_off + max_row .. + NRV*LANES]`
//! is in bounds, and `c[c_off + r*ldc .. + NRV*LANES]` for every `r < MR`.

use core::marker::PhantomData;

use crate::act::Act;
use crate::isa::Vector;
use crate::lanes::{Lanes, get_unchecked};

/// Where each reduction row of the `b` matrix starts.
pub(crate) trait Rows: Copy + Send + Sync {
    /// Offset of row `kk` (relative to the tile's `b_off`).
    fn at(&self, kk: usize) -> usize;
    /// The largest offset over rows `0..k`, or `None` on overflow.
    fn max(&self, k: usize) -> Option<usize>;
}

/// Rows `ldb` elements apart: `at(kk) = kk * ldb`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Strided(pub usize);

impl Rows for Strided {
    #[inline(always)]
    fn at(&self, kk: usize) -> usize {
        kk * self.0
    }
    fn max(&self, k: usize) -> Option<usize> {
        k.saturating_sub(1).checked_mul(self.0)
    }
}

/// Rows at arbitrary offsets: `at(kk) = table[kk]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Table<'a>(pub &'a [usize]);

impl Rows for Table<'_> {
    #[inline(always)]
    fn at(&self, kk: usize) -> usize {
        self.0[kk]
    }
    fn max(&self, k: usize) -> Option<usize> {
        Some(self.0[..k].iter().copied().max().unwrap_or(0))
    }
}

/// The reduction rows `0..k` of some [`Rows`] with their largest offset,
/// computed here from the rows themselves: the micro-kernel checks its reads
/// against this bound once and then loads unchecked, so the bound must not
/// come from a caller (a wrong one would read out of bounds).
#[derive(Clone, Copy, Debug)]
pub(crate) struct BoundedRows<R: Rows> {
    rows: R,
    k: usize,
    max: usize,
}

impl<R: Rows> BoundedRows<R> {
    /// Rows `0..k` of `rows`; `None` if an offset overflows.
    pub(crate) fn new(rows: R, k: usize) -> Option<Self> {
        Some(BoundedRows { rows, k, max: rows.max(k)? })
    }

    /// Offset of row `kk`.
    #[inline(always)]
    pub(crate) fn at(&self, kk: usize) -> usize {
        self.rows.at(kk)
    }

    /// The largest offset of rows `0..k` (0 when `k == 0`).
    #[inline(always)]
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// How many rows the bound covers.
    #[inline(always)]
    pub(crate) fn k(&self) -> usize {
        self.k
    }
}

/// Whether `off + len <= slice_len`, without overflow.
#[inline(always)]
pub(crate) fn fits(off: usize, len: usize, slice_len: usize) -> bool {
    off.checked_add(len).is_some_and(|end| end <= slice_len)
}

/// Where one register tile's output goes: `rows` runs of `width` floats,
/// `ldc` apart, from `ptr`, which nothing else writes or reads while this
/// value lives. Built from a slice ([`TileOut::of_slice`], checked) or from
/// the row bands of [`crate::conv3x3::PlaneRowsMut`], whose runs lie in one
/// band of the same planes that other threads write other bands of.
pub(crate) struct TileOut<'a> {
    ptr: *mut f32,
    ldc: usize,
    rows: usize,
    width: usize,
    _borrow: PhantomData<&'a mut [f32]>,
}

impl<'a> TileOut<'a> {
    /// The runs `c[off + r * ldc..][..width]` for `r < rows`.
    ///
    /// # Panics
    /// If `rows == 0` or a run leaves `c`.
    #[inline(always)]
    pub(crate) fn of_slice(
        c: &'a mut [f32],
        off: usize,
        ldc: usize,
        rows: usize,
        width: usize,
    ) -> Self {
        let last_row = rows.checked_sub(1).and_then(|r| r.checked_mul(ldc));
        assert!(
            last_row.is_some_and(|r| fits(off, r, c.len()) && fits(off + r, width, c.len())),
            "c tile out of bounds"
        );
        // SAFETY: `off <= c.len()` (checked above), so the pointer stays in or
        // one past the slice.
        let ptr = unsafe { c.as_mut_ptr().add(off) };
        TileOut { ptr, ldc, rows, width, _borrow: PhantomData }
    }

    /// The runs at `ptr`, unchecked.
    ///
    /// # Safety
    /// For every `r < rows`, `ptr + r * ldc .. + width` must be valid for
    /// writes and written or read by nothing else for `'a`.
    #[inline(always)]
    pub(crate) unsafe fn from_raw(ptr: *mut f32, ldc: usize, rows: usize, width: usize) -> Self {
        TileOut { ptr, ldc, rows, width, _borrow: PhantomData }
    }
}

/// Computes one `MR x (NRV*LANES)` output tile; see the module docs.
///
/// # Panics
/// If any of the preconditions in the module docs does not hold.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn conv1x1_tile<V: Vector, const MR: usize, const NRV: usize, A: Act, R: Rows>(
    k: usize,
    packed: &[f32],
    b: &[f32],
    b_off: usize,
    rows: BoundedRows<R>,
    c: &mut [f32],
    c_off: usize,
    ldc: usize,
) {
    let nr = NRV * V::LANES;
    let out = TileOut::of_slice(c, c_off, ldc, MR, nr);
    conv1x1_tile_plus::<V, V, MR, NRV, 0, A, R>(k, packed, b, b_off, rows, out, nr)
}

/// [`conv1x1_tile`] plus `RC` more columns at `extra..extra + RC` (relative
/// to the tile's first column, `extra >= NR`) of the same rows,
/// vectorised along the rows: one `MR`-lane vector of the step's weights
/// (the same floats the tile broadcasts) times each extra column's value.
/// A layer whose last columns are `RC <= 4` past a whole tile (14x14 and 7x7
/// planes) computes them here, while the weights are in registers, instead of
/// in a second pass that reads every block's weights again from L2 or L3 for
/// one FMA per weight (numbers in docs/experiments.md).
///
/// One accumulator per extra column, so its sum is `bias + Σ_kk` in `kk`
/// order, fused. Needs `MR == G::LANES` (an `MR`-row vector of `G`) when
/// `RC > 0`; with `RC = 0` this is the plain tile ([`conv1x1_tile`]).
///
/// # Panics
/// As [`conv1x1_tile`], and if `b` or `out` do not hold the extra columns.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn conv1x1_tile_plus<
    V: Vector,
    G: Vector,
    const MR: usize,
    const NRV: usize,
    const RC: usize,
    A: Act,
    R: Rows,
>(
    k: usize,
    packed: &[f32],
    b: &[f32],
    b_off: usize,
    rows: BoundedRows<R>,
    out: TileOut<'_>,
    extra: usize,
) {
    const { assert!(RC <= 4) };
    assert!(k <= rows.k(), "more reduction rows than the bound covers");
    let max_row = rows.max();
    assert!(RC == 0 || G::LANES == MR, "one G vector per step's MR weights");
    let nr = NRV * V::LANES;
    let block = k.checked_add(1).and_then(|k1| k1.checked_mul(MR));
    assert!(block.is_some_and(|len| packed.len() >= len), "packed block too short");
    assert!(extra >= nr, "extra columns overlap the tile");
    let width = extra.checked_add(RC).expect("extra column offset overflows");
    assert!(
        k == 0 || fits(b_off, max_row, b.len()) && fits(b_off + max_row, width, b.len()),
        "b tile out of bounds"
    );
    assert!(out.rows >= MR && out.width >= width, "c tile out of bounds");
    let ldc = out.ldc;

    let mut acc = [[V::zero(); NRV]; MR];
    for (r, row) in acc.iter_mut().enumerate() {
        *row = [V::splat(packed[r]); NRV];
    }
    let mut ext = [G::zero(); RC];
    if RC > 0 {
        ext = [G::load(packed, 0); RC];
    }
    let w = &packed[MR..(k + 1) * MR];
    for kk in 0..k {
        let at = rows.at(kk);
        debug_assert!(at <= max_row);
        let row = b_off + at;
        let mut bv = [V::zero(); NRV];
        for (j, v) in bv.iter_mut().enumerate() {
            // SAFETY: row <= b_off + max_row and row + extra + RC <= b.len()
            // by the entry assert (max_row = rows.max() >= rows.at(kk) for
            // kk < k <= rows.k(), computed by `BoundedRows::new`), and
            // NR <= extra.
            *v = unsafe { V::load_unchecked(b, row + j * V::LANES) };
        }
        for (r, row) in acc.iter_mut().enumerate() {
            // SAFETY: `w` holds k * MR floats and kk < k, r < MR.
            let wr = V::splat(unsafe { get_unchecked(w, kk * MR + r) });
            for (a, bj) in row.iter_mut().zip(bv.iter()) {
                *a = wr.mul_add(*bj, *a);
            }
        }
        if RC == 0 {
            continue;
        }
        // SAFETY: `w` holds k * MR floats and (kk + 1) * MR <= k * MR
        // (G::LANES == MR when RC > 0, asserted at entry).
        let wk = unsafe { G::load_unchecked(w, kk * MR) };
        for (j, e) in ext.iter_mut().enumerate() {
            // SAFETY: row + extra + j < row + extra + RC <= b.len() (entry assert).
            let x = G::splat(unsafe { get_unchecked(b, row + extra + j) });
            *e = x.mul_add(wk, *e);
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (j, a) in row.iter().enumerate() {
            // SAFETY: r < MR <= out.rows and j * LANES + LANES <= NR <= extra
            // <= out.width (entry asserts): inside one of `out`'s runs.
            unsafe { A::apply(*a).store_ptr(out.ptr.add(r * ldc + j * V::LANES)) };
        }
    }
    for (j, e) in ext.iter().enumerate() {
        let col = A::apply(*e).to_array();
        for (r, &v) in col.iter().enumerate().take(MR) {
            // SAFETY: r < MR <= out.rows and extra + j < extra + RC <= out.width.
            unsafe { out.ptr.add(r * ldc + extra + j).write(v) };
        }
    }
}
