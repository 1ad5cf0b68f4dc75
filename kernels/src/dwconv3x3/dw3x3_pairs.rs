//! Depthwise 3x3 (part of `dw3x3_s{1,2}p1_*__avx512`) on planes whose
//! output rows fit in half a vector (7x7 outputs with 16 lanes), two
//! channels per vector.
//!
//! Lanes `0..H` (`H = LANES / 2`) hold an output row of channel `c`, lanes
//! `H..LANES` the same row of channel `c + 1`. An input row of each channel is
//! one load (`w <= LANES`), and three two-source lane permutes
//! ([`Vector::pick2`]) pick the left, centre and right taps of both channels
//! at once, for stride 1 (columns `x-1, x, x+1`) and stride 2 (`2x-1, 2x,
//! 2x+1`). The taps of an input row are computed once and carried to the next
//! output row that reads it (stride 1: two rows carried, one new per output
//! row; stride 2: one carried, two new). The weights are per lane: channel
//! `c`'s in the low half, `c + 1`'s in the high half.
//!
//! One vector per output row instead of a 7-lane vector per row and channel,
//! and no per-plane copy, masks table or tail, which is faster than the flat
//! stride-1 kernel and stride 2's two-rows layout, whose vectors could share
//! no input row (numbers in docs/experiments.md).
//!
//! Horizontal padding: the left taps are the previous column's taps moved
//! one lane up (the centre taps at stride 1, the right taps at stride 2),
//! with a zero entering each half's lane 0; a lane mask clears the right tap
//! of the last column when it lies past the row (lanes past the row read the
//! next row, or zeros at the end of the input). Vertical padding rows are
//! zero taps. The mask beats zero-masked loads (docs/experiments.md).
//!
//! Each half is stored with a store of its first `ow` lanes (a masked store
//! on AVX-512), so no store touches another row or channel. Each output is
//! `A(((bias + Σ centre) + Σ left) + Σ right)`, the sums in `ky` order,
//! whichever half a channel falls into, so the result does not depend on how
//! channels are split among threads.

use super::dw3x3_s2::{RowTaps, finish, lane_mask, load_row};
use super::{Dw3x3Args, PACKED_PER_CHANNEL, out_dim};
use crate::act::Act;
use crate::isa::Vector;

/// Whether planes of width `w` at `stride` run through [`dw3x3_pairs`]:
/// output rows of at most half a vector (the input row then fits in one
/// vector), on an ISA whose lane permute is one instruction: with AVX-512 it
/// beats the flat and two-row kernels, with AVX2 (three instructions per
/// permute) it does not (docs/experiments.md).
#[inline(always)]
pub(super) fn chosen<V: Vector>(w: usize, stride: usize) -> bool {
    V::ONE_INSTRUCTION_PICK2 && out_dim(w, stride) <= V::LANES / 2
}

/// The permutes and masks of one plane geometry.
struct Pairs<V: Vector> {
    /// The centre (`kx = 1`) and right (`kx = 2`) taps of both halves from
    /// `[row of c, row of c+1]`.
    tap: [V::Index; 2],
    /// The left tap from `[zero, t]`, where `t` is the centre taps (stride 1)
    /// or the unmasked right taps (stride 2): column `x-1` of output column
    /// `x` is that of column `x - 1` shifted one lane up, and zero for column
    /// 0 — one permute and no mask.
    shift: V::Index,
    /// Low half from the first source, high half from the second.
    halves: V::Index,
    /// Clears the right tap of the last column when it lies past the row
    /// (`None` when it never does).
    mask_r: Option<V>,
}

impl<V: Vector> Pairs<V> {
    fn new(w: usize, stride: usize) -> Self {
        let (ow, l, h) = (out_dim(w, stride), V::LANES, V::LANES / 2);
        let tap = |kx: usize| {
            V::index(move |j| {
                // Column s*col + kx - 1 of the first (lanes < H) or the second
                // source; columns past ow repeat the last one.
                let (src, col) = if j < h { (0, j) } else { (l, j - h) };
                (src + stride * col.min(ow - 1) + kx - 1) as u32
            })
        };
        let right_past_row = stride * (ow - 1) + 1 >= w;
        Pairs {
            tap: [tap(1), tap(2)],
            shift: V::index(|j| if j % h == 0 { 0 } else { (l + j - 1) as u32 }),
            halves: V::index(|j| if j < h { j as u32 } else { (l + j - h) as u32 }),
            mask_r: right_past_row.then(|| lane_mask(|j| j % h == ow - 1)),
        }
    }
}

/// The depthwise driver for [`chosen`] planes: checked arguments in.
#[inline(always)]
pub(super) fn dw3x3_pairs<V: Vector, A: Act>(stride: usize, args: Dw3x3Args<'_>) {
    let Dw3x3Args { channels, h, w, packed, input, output } = args;
    let (oh, ow) = (out_dim(h, stride), out_dim(w, stride));
    let (hw, ohw) = (h * w, oh * ow);
    let input = &input[..channels * hw];
    let output = &mut output[..channels * ohw];
    let px = Pairs::<V>::new(w, stride);
    for c in (0..channels).step_by(2) {
        let two = c + 1 < channels;
        // A loop, not `array::from_fn`: a closure would be compiled without
        // the ISA's target features.
        let mut w9 = [V::zero(); PACKED_PER_CHANNEL];
        for (t, kt) in w9.iter_mut().enumerate() {
            let lo = packed[c * PACKED_PER_CHANNEL + t];
            let hi = if two { packed[(c + 1) * PACKED_PER_CHANNEL + t] } else { 0.0 };
            *kt = V::pick2(V::splat(lo), V::splat(hi), px.halves);
        }
        let planes = Planes { a: c * hw, b: two.then_some((c + 1) * hw), w };
        // The stride, the right-tap mask and the pairing as constants: tested
        // at run time in every row, their flag loads and branches outnumbered
        // the FMAs (docs/experiments.md).
        let rows = PairRows {
            w9: &w9,
            pairs: &px,
            input,
            planes: &planes,
            h,
            ow,
            out: &mut *output,
            out_off: c * ohw,
        };
        match (stride, px.mask_r.is_some(), two) {
            (1, _, true) => pair_rows::<V, A, 1, true, true>(rows),
            (1, _, false) => pair_rows::<V, A, 1, true, false>(rows),
            (_, true, true) => pair_rows::<V, A, 2, true, true>(rows),
            (_, true, false) => pair_rows::<V, A, 2, true, false>(rows),
            (_, false, true) => pair_rows::<V, A, 2, false, true>(rows),
            (_, false, false) => pair_rows::<V, A, 2, false, false>(rows),
        }
    }
}

/// What [`pair_rows`] reads and writes for one channel pair.
struct PairRows<'a, V: Vector> {
    /// Both channels' splatted `[bias, w0..w8]`: channel `c` in the low
    /// half of each vector, `c + 1` in the high half.
    w9: &'a [V; PACKED_PER_CHANNEL],
    /// The permutes and masks of the plane geometry.
    pairs: &'a Pairs<V>,
    /// The whole input (every channel's plane).
    input: &'a [f32],
    /// Where the two channels' input planes start, and their row stride.
    planes: &'a Planes,
    /// Input plane height.
    h: usize,
    /// Output row width (at most half a vector).
    ow: usize,
    /// The whole output (every channel's plane).
    out: &'a mut [f32],
    /// Index of channel `c`'s output plane in `out`; `c + 1`'s follows it.
    out_off: usize,
}

/// Where the two channels' input planes start (`b` is `None` for a last,
/// unpaired channel, whose high half computes on zeros and is not stored).
struct Planes {
    a: usize,
    b: Option<usize>,
    w: usize,
}

/// The taps of input row `y` of both channels at stride `S` (`MASK`: clear
/// the last column's right tap; `TWO`: the second channel exists).
#[inline(always)]
fn taps<V: Vector, const S: usize, const MASK: bool, const TWO: bool>(
    px: &Pairs<V>,
    input: &[f32],
    planes: &Planes,
    y: usize,
) -> RowTaps<V> {
    let a: V = load_row(input, planes.a + y * planes.w);
    let b: V = match planes.b {
        Some(b) if TWO => load_row(input, b + y * planes.w),
        _ => V::zero(),
    };
    let centre = V::pick2(a, b, px.tap[0]);
    let right = V::pick2(a, b, px.tap[1]);
    let left = V::pick2(V::zero(), if S == 1 { centre } else { right }, px.shift);
    let right = match px.mask_r {
        Some(m) if MASK => right.and(m),
        _ => right,
    };
    (left, centre, right)
}

/// `acc += taps * weights of kernel row ky`, per lane.
#[inline(always)]
fn add<V: Vector>(w9: &[V; PACKED_PER_CHANNEL], ky: usize, t: RowTaps<V>, acc: &mut RowTaps<V>) {
    acc.0 = t.0.mul_add(w9[1 + 3 * ky], acc.0);
    acc.1 = t.1.mul_add(w9[2 + 3 * ky], acc.1);
    acc.2 = t.2.mul_add(w9[3 + 3 * ky], acc.2);
}

/// Stores output row `oy` of both channels (their planes `ohw` apart from
/// `ob`): the first `ow` lanes of each half, the high half with one masked
/// store and no permute (a permute down first was slower: docs/experiments.md).
#[inline(always)]
fn store_row<V: Vector>(
    v: V,
    out: &mut [f32],
    ob: usize,
    ohw: usize,
    oy: usize,
    ow: usize,
    two: bool,
) {
    let dst = &mut out[ob + oy * ow..ob + (oy + 1) * ow];
    // SAFETY: `dst` holds `ow <= LANES / 2` writable floats.
    unsafe { v.store_first(dst.as_mut_ptr(), ow) };
    if two {
        let dst = &mut out[ob + ohw + oy * ow..ob + ohw + (oy + 1) * ow];
        // SAFETY: as above.
        unsafe { v.store_lanes(dst.as_mut_ptr(), V::LANES / 2, ow) };
    }
}

/// All output rows of one channel pair at stride `S`. Output row `oy` reads
/// input rows `S*oy - 1`, `S*oy`, `S*oy + 1`; the taps of the rows the
/// previous output row already read are carried (stride 1: two of them,
/// stride 2: one).
#[inline(always)]
fn pair_rows<V: Vector, A: Act, const S: usize, const MASK: bool, const TWO: bool>(
    rows: PairRows<'_, V>,
) {
    let PairRows { w9, pairs, input, planes, h, ow, out, out_off } = rows;
    let zero = (V::zero(), V::zero(), V::zero());
    let oh = out_dim(h, S);
    // Taps of rows S*oy - 1 and (at stride 1) S*oy, carried over.
    let mut above = zero;
    let mut next = if S == 1 { taps::<V, S, MASK, TWO>(pairs, input, planes, 0) } else { zero };
    for oy in 0..oh {
        let cur = if S == 1 { next } else { taps::<V, S, MASK, TWO>(pairs, input, planes, S * oy) };
        let below = if S * oy + 1 < h {
            taps::<V, S, MASK, TWO>(pairs, input, planes, S * oy + 1)
        } else {
            zero
        };
        let mut acc = (V::zero(), w9[0], V::zero());
        add(w9, 0, above, &mut acc);
        add(w9, 1, cur, &mut acc);
        add(w9, 2, below, &mut acc);
        store_row(finish::<V, A>(acc), out, out_off, oh * ow, oy, ow, TWO);
        above = if S == 1 { cur } else { below };
        next = below;
    }
}
