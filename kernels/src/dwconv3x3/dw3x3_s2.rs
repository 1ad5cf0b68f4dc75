//! `dw3x3_s2p1_1x<LANES>__<isa>`: depthwise 3x3, stride 2, read in place
//! from the NCHW input, no scratch.
//!
//! Output column `ox` needs input columns `2ox-1`, `2ox`, `2ox+1` of three
//! input rows. For a vector of `LANES` consecutive outputs starting at `ox0`,
//! two plain loads `a`, `b` cover input columns `2ox0 .. 2ox0 + 2*LANES`; one
//! two-source lane permute ([`Vector::pick2`], `vpermt2ps` on AVX-512) picks
//! the even columns (centre tap), one the odd columns (right tap), and one
//! shifts the odd columns right by a lane, with input column `2ox0-1` (or the
//! zero of the left padding) entering lane 0 (left tap). So an input row
//! costs 2 loads, 1 broadcast and 3 permutes per output vector, wherever it
//! sits; stride 2 needs no de-interleaved copy.
//!
//! Two layouts of output vectors, chosen by the width:
//! - **rows** (`2*ow > LANES`): one vector covers `LANES` columns of one output
//!   row; a column of vectors runs top to bottom, and the taps of the input
//!   row between two output rows are carried from one to the next, so every
//!   input row is loaded and permuted once (2 input rows per output vector,
//!   not 3). A simple loop with three accumulators, because unrolling 4
//!   output rows per step spilled registers (docs/experiments.md).
//! - **pairs** (`2*ow <= LANES`, e.g. 7x7 outputs with 16 lanes): one vector
//!   covers two whole output rows, lanes `0..ow` and `ow..2ow`, so it is
//!   the next `2*ow` outputs of the flat plane. The permutes pick the first
//!   half from one input row and the second half from the row two below, and
//!   a lane mask clears the left tap of each row's column 0.
//!
//! Horizontal padding: the left tap of column 0 is a real zero (rows) or
//! cleared by a mask (pairs); when `w` is odd, the right tap of the last
//! column reads past the row and is cleared by a mask. Lanes past the last
//! column read the next row (never past `input`: the last loads are partial),
//! and their outputs are discarded: stores that would spill past the row go
//! into rows written later, or, at the end of `output`, through a stack tile.
//! A vertical padding row contributes zero taps. Each output is
//! `A(((bias + Σ centre) + Σ left) + Σ right)`, the sums in `ky` order: fixed,
//! whatever the thread count.

use super::{Dw3x3Args, PACKED_PER_CHANNEL, out_dim};
use crate::act::Act;
use crate::isa::{MAX_LANES, Vector};
use crate::lanes::Lanes;

/// The three permutes of the rows layout.
struct RowIdx<V: Vector> {
    even: V::Index,
    odd: V::Index,
    shift: V::Index,
}

/// The three permutes and two masks of the pairs layout.
struct PairIdx<V: Vector> {
    tap: [V::Index; 3],
    /// Clears the left tap of lanes `0` and `ow` (column 0 of each row).
    mask_l: V,
    /// Clears the right tap of lanes `ow-1` and `2ow-1` when `w` is odd
    /// (all ones otherwise).
    mask_r: V,
}

/// Stores `v` to `out[o..o + LANES]`, or its first `out.len() - o` lanes
/// when the vector would pass the end of `out`.
#[inline(always)]
fn store_or_partial<V: Vector>(v: V, out: &mut [f32], o: usize) {
    if o + V::LANES <= out.len() {
        v.store(out, o);
    } else {
        let tile = v.to_array();
        let n = out.len() - o;
        out[o..].copy_from_slice(&tile[..n]);
    }
}

/// Lane mask: all ones except the lanes for which `clear` holds.
#[inline(always)]
pub(super) fn lane_mask<V: Vector>(clear: impl Fn(usize) -> bool) -> V {
    let ones = f32::from_bits(u32::MAX);
    let m: [f32; MAX_LANES] = core::array::from_fn(|j| if clear(j) { 0.0 } else { ones });
    V::load(&m, 0)
}

/// Packed weights of one channel: `[bias, w00 .. w22]`, splatted where they
/// are used (on AVX-512 an embedded-broadcast operand of the FMA).
type Weights = [f32; PACKED_PER_CHANNEL];

#[inline(always)]
fn weights_of(packed: &[f32], c: usize) -> Weights {
    packed[c * PACKED_PER_CHANNEL..(c + 1) * PACKED_PER_CHANNEL].try_into().expect("10 floats")
}

/// The floats of `s[i..i + n]` that exist, zero-padded to `MAX_LANES`: the
/// rare load at the end of the input, kept out of line so the common path is
/// one plain load.
#[cold]
#[inline(never)]
fn tail_copy(s: &[f32], i: usize, n: usize) -> [f32; MAX_LANES] {
    let mut buf = [0.0; MAX_LANES];
    let end = s.len().min(i.saturating_add(n));
    let start = i.min(end);
    buf[..end - start].copy_from_slice(&s[start..end]);
    buf
}

/// `LANES` floats at `s[i..]`, zero past the end of `s`. The in-bounds path
/// skips the slice's own bounds check after this one: checked loads and
/// stores ([`Lanes::load`], [`Lanes::store`]) cost the kernel over a third of
/// its speed (docs/experiments.md).
#[inline(always)]
pub(super) fn load_row<V: Vector>(s: &[f32], i: usize) -> V {
    if i + V::LANES <= s.len() {
        // SAFETY: checked on the line above.
        unsafe { V::load_unchecked(s, i) }
    } else {
        V::load(&tail_copy(s, i, V::LANES), 0)
    }
}

/// One input row's three taps for one output vector: `(left, centre,
/// right)`, columns `2x-1`, `2x`, `2x+1`.
pub(super) type RowTaps<V> = (V, V, V);

/// The stride-2 driver: checked arguments in, every plane computed in place.
#[inline(always)]
pub(super) fn dw3x3_s2<V: Vector, A: Act>(args: Dw3x3Args<'_>) {
    let Dw3x3Args { channels, h, w, packed, input, output } = args;
    let (oh, ow) = (out_dim(h, 2), out_dim(w, 2));
    let (hw, ohw) = (h * w, oh * ow);
    let input = &input[..channels * hw];
    let output = &mut output[..channels * ohw];
    let ones = lane_mask::<V>(|_| false);
    if 2 * ow <= V::LANES {
        let n = ow as u32;
        let l = V::LANES as u32;
        let tap = |kx: u32| {
            V::index(move |j| {
                let j = j as u32;
                // Column 2*col + kx - 1 of the first (lanes < ow) or the
                // second source; column -1 picks lane 0 and is masked.
                let (src, col) = if j < n { (0, j) } else { (l, j.min(2 * n - 1) - n) };
                src + (2 * col + kx).saturating_sub(1)
            })
        };
        let idx = PairIdx::<V> {
            tap: [tap(0), tap(1), tap(2)],
            mask_l: lane_mask(|j| j == 0 || j == ow),
            mask_r: if w % 2 == 1 { lane_mask(|j| j + 1 == ow || j + 1 == 2 * ow) } else { ones },
        };
        for c in 0..channels {
            let w9 = weights_of(packed, c);
            pairs_plane::<V, A>(&w9, &idx, input, c * hw, [h, w], output, c * ohw);
        }
    } else {
        let l = V::LANES as u32;
        let idx = RowIdx::<V> {
            even: V::index(|j| 2 * j as u32),
            odd: V::index(|j| 2 * j as u32 + 1),
            shift: V::index(|j| if j == 0 { 0 } else { l + j as u32 - 1 }),
        };
        // Column vectors: the last one moved left to end at ow (it recomputes
        // a few columns bit for bit), or one vector that spills into the next
        // row when the row is shorter than a vector.
        let ncol = ow.div_ceil(V::LANES);
        let odd_w = w % 2 == 1;
        for c in 0..channels {
            let w9 = weights_of(packed, c);
            for j in 0..ncol {
                let ox0 = (j * V::LANES).min(ow.saturating_sub(V::LANES));
                // With odd w the last column's right tap is column w: padding.
                // The mask as a constant: an `and` with all ones in every
                // other column costs two FP-pipe operations of ~20 per output
                // vector (docs/experiments.md).
                let masked = odd_w && j + 1 == ncol;
                let mask_r = if masked { lane_mask(|i| ox0 + i + 1 == ow) } else { ones };
                let col = Col { ox0, mask_r };
                let args = ColumnArgs {
                    w9: &w9,
                    idx: &idx,
                    col: &col,
                    input,
                    in_off: c * hw,
                    h,
                    w,
                    out: &mut *output,
                    out_off: c * ohw,
                };
                if masked {
                    rows_column::<V, A, true>(args)
                } else {
                    rows_column::<V, A, false>(args)
                }
            }
        }
    }
}

/// What [`rows_column`] reads and writes for one column vector of one plane.
struct ColumnArgs<'a, V: Vector> {
    /// The channel's packed `[bias, w0..w8]`.
    w9: &'a Weights,
    /// The three permutes of the rows layout.
    idx: &'a RowIdx<V>,
    /// The column vector: its first output column and right-tap mask.
    col: &'a Col<V>,
    /// The whole input (every channel's plane).
    input: &'a [f32],
    /// Index of the channel's input plane in `input`.
    in_off: usize,
    /// Input plane height.
    h: usize,
    /// Input plane width (the row stride of `input`).
    w: usize,
    /// The whole output (every channel's plane).
    out: &'a mut [f32],
    /// Index of the channel's output plane in `out`.
    out_off: usize,
}

/// One column vector of the rows layout.
struct Col<V> {
    /// First output column.
    ox0: usize,
    /// Right-tap mask (used only in an odd-width plane's last vector).
    mask_r: V,
}

/// The taps of input row `iy` (of the plane at `input[ib]`) for the output
/// vector at column `ox0`: two loads and three permutes.
#[inline(always)]
fn row_taps<V: Vector, const MASK: bool>(
    idx: &RowIdx<V>,
    col: &Col<V>,
    input: &[f32],
    ib: usize,
    w: usize,
    iy: usize,
) -> RowTaps<V> {
    let base = ib + iy * w + 2 * col.ox0;
    let a: V = load_row(input, base);
    let b: V = load_row(input, base + V::LANES);
    let centre = V::pick2(a, b, idx.even);
    let right = V::pick2(a, b, idx.odd);
    let right = if MASK { right.and(col.mask_r) } else { right };
    let before = if col.ox0 > 0 { input[base - 1] } else { 0.0 };
    (V::pick2(V::splat(before), right, idx.shift), centre, right)
}

/// Adds one input row's taps times the weights of kernel row `ky` to the
/// three accumulators `(left, centre, right)`.
#[inline(always)]
fn add_row<V: Vector>(w9: &Weights, ky: usize, t: RowTaps<V>, acc: &mut RowTaps<V>) {
    acc.0 = t.0.mul_add(V::splat(w9[1 + 3 * ky]), acc.0);
    acc.1 = t.1.mul_add(V::splat(w9[2 + 3 * ky]), acc.1);
    acc.2 = t.2.mul_add(V::splat(w9[3 + 3 * ky]), acc.2);
}

/// `A((bias + centre) + left + right)`.
#[inline(always)]
pub(super) fn finish<V: Vector, A: Act>(acc: RowTaps<V>) -> V {
    A::apply(acc.1.add(acc.0).add(acc.2))
}

/// Stores `v` at `out[o..]`, only its first `out.len() - o` lanes when it
/// would pass the end (a store past the row goes into rows written later).
#[inline(always)]
fn store_out<V: Vector>(v: V, out: &mut [f32], o: usize) {
    if o + V::LANES <= out.len() {
        // SAFETY: checked on the line above.
        unsafe { v.store_unchecked(out, o) }
    } else {
        store_or_partial(v, out, o)
    }
}

/// Rows layout, one column vector of one plane, top to bottom. Output row
/// `oy` reads input rows `2oy-1`, `2oy`, `2oy+1`; row `2oy+1` is also row
/// `2(oy+1)-1` of the next output row, so its taps are carried over and every
/// input row is loaded and permuted once.
#[inline(always)]
fn rows_column<V: Vector, A: Act, const MASK: bool>(args: ColumnArgs<'_, V>) {
    let ColumnArgs { w9, idx, col, input, in_off, h, w, out, out_off } = args;
    let ow = out_dim(w, 2);
    let oh = out_dim(h, 2);
    let zero = (V::zero(), V::zero(), V::zero());
    // Taps of input row 2oy - 1 (row -1 is padding).
    let mut above = zero;
    for oy in 0..oh {
        let mut acc = (V::zero(), V::splat(w9[0]), V::zero());
        add_row(w9, 0, above, &mut acc);
        add_row(w9, 1, row_taps::<V, MASK>(idx, col, input, in_off, w, 2 * oy), &mut acc);
        above = if 2 * oy + 1 < h {
            row_taps::<V, MASK>(idx, col, input, in_off, w, 2 * oy + 1)
        } else {
            zero
        };
        add_row(w9, 2, above, &mut acc);
        store_out(finish::<V, A>(acc), out, out_off + oy * ow + col.ox0);
    }
}

/// Pairs layout, one plane: vector `p` holds output rows `2p` and `2p+1`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn pairs_plane<V: Vector, A: Act>(
    w9: &Weights,
    idx: &PairIdx<V>,
    input: &[f32],
    ib: usize,
    [h, w]: [usize; 2],
    out: &mut [f32],
    ob: usize,
) {
    let (oh, ow) = (out_dim(h, 2), out_dim(w, 2));
    for p in 0..oh.div_ceil(2) {
        let mut acc = (V::zero(), V::splat(w9[0]), V::zero());
        for ky in 0..3 {
            // First half: input row 4p + ky - 1; second half: two rows below.
            let iy = 4 * p + ky;
            let a = pair_row::<V>(input, ib, [h, w], iy.wrapping_sub(1));
            let b = pair_row::<V>(input, ib, [h, w], iy + 1);
            let taps = (
                V::pick2(a, b, idx.tap[0]).and(idx.mask_l),
                V::pick2(a, b, idx.tap[1]),
                V::pick2(a, b, idx.tap[2]).and(idx.mask_r),
            );
            add_row(w9, ky, taps, &mut acc);
        }
        store_out(finish::<V, A>(acc), out, ob + 2 * p * ow);
    }
}

/// Row `iy` of the plane at `input[ib]`: zero outside `0..h` (iy = -1 wraps
/// to a huge value), zero past the end of `input`.
#[inline(always)]
fn pair_row<V: Vector>(input: &[f32], ib: usize, [h, w]: [usize; 2], iy: usize) -> V {
    if iy < h { load_row(input, ib + iy * w) } else { V::zero() }
}
