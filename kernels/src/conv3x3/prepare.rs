//! The zero-padded, phase-split copy of the input that the direct 3x3
//! kernels read (module docs of [`super`]).

use core::ops::Range;

use super::Geometry;
use crate::isa::{Isa, Job, Vector, dispatch};
use crate::lanes::Lanes;

/// Writes the zero-padded, phase-split copy of `x` (`cin x h x w`) into `dst`,
/// compiled for `isa` (the stride-2 column split vectorises into shuffles).
///
/// # Panics
/// If `x.len() != cin*h*w` or `dst.len() != g.prepared_len()`.
pub fn prepare_input(isa: Isa, g: &Geometry, x: &[f32], dst: &mut [f32]) {
    g.check();
    assert_eq!(dst.len(), g.prepared_len(), "prepared length");
    let (planes, slack) = dst.split_at_mut(g.planes() * g.plane_len());
    slack.fill(0.0);
    let (hq, _) = g.phase_hw();
    prepare_phase_rows(isa, g, x, 0..hq, planes);
}

/// Writes the prepared input of output rows `rows` into `dst`
/// ([`Geometry::rows_prepared_len`] floats): the same phase planes as
/// [`prepare_input`], but only their rows `rows.start..rows.start +
/// band_phase_rows(rows)`, so that [`conv3x3_rows`](super::conv3x3_rows) computes those output
/// rows from it.
///
/// # Panics
/// If `x.len() != cin*h*w`, `rows` is not within `0..oh`, or
/// `dst.len() != g.rows_prepared_len(&rows)`.
pub fn prepare_input_rows(isa: Isa, g: &Geometry, x: &[f32], rows: Range<usize>, dst: &mut [f32]) {
    g.check();
    let (oh, _) = g.output_hw();
    assert!(rows.start <= rows.end && rows.end <= oh, "rows outside the output");
    assert_eq!(dst.len(), g.rows_prepared_len(&rows), "prepared length");
    let (_, wq) = g.phase_hw();
    let phase_rows = rows.start..rows.start + g.band_phase_rows(&rows);
    let (planes, slack) = dst.split_at_mut(g.planes() * phase_rows.len() * wq);
    slack.fill(0.0);
    prepare_phase_rows(isa, g, x, phase_rows, planes);
}

/// Phase rows `rows` of every prepared plane into `planes` (`planes()`
/// planes of `rows.len() x wq`); rows past the padded input are zero.
fn prepare_phase_rows(isa: Isa, g: &Geometry, x: &[f32], rows: Range<usize>, planes: &mut [f32]) {
    if g.stride == 2 {
        return dispatch(isa, PrepareS2 { g, x, rows, planes });
    }
    let (_, wq) = g.phase_hw();
    for (index, plane) in planes.chunks_exact_mut(rows.len() * wq).enumerate() {
        dispatch(isa, PreparePlane { g, x, index, first_row: rows.start, dst: plane });
    }
}

struct PrepareS2<'a> {
    g: &'a Geometry,
    x: &'a [f32],
    rows: Range<usize>,
    planes: &'a mut [f32],
}

impl Job for PrepareS2<'_> {
    type Out = ();
    #[inline(always)]
    fn run<V: Vector>(self) {
        prepare_s2_body::<V>(self.g, self.x, self.rows, self.planes)
    }
}

/// All `4 * cin` stride-2 phase planes, one input row at a time: a row's
/// even columns go to the `px = 1` plane and its odd columns to the `px = 0`
/// plane from one pair of loads per 2 vectors of output, so every input row
/// is read once and the permutes are set up once per call, unlike plane by
/// plane with [`prepare_plane`] (numbers in docs/experiments.md).
#[inline(always)]
fn prepare_s2_body<V: Vector>(g: &Geometry, x: &[f32], rows: Range<usize>, planes: &mut [f32]) {
    let Geometry { cin, h, w, .. } = *g;
    let (_, wq) = g.phase_hw();
    let pl = rows.len() * wq;
    assert_eq!(x.len(), cin * h * w, "input length");
    assert_eq!(planes.len(), 4 * cin * pl, "planes length");
    let idx = [V::index(|l| 2 * l as u32), V::index(|l| 2 * l as u32 + 1)];
    // Phase (py, px) holds planes [(2 py + px) * cin, ..) of `pl` floats.
    let (top, bottom) = planes.split_at_mut(2 * cin * pl);
    for (py, phases) in [top, bottom].into_iter().enumerate() {
        let (odd, even) = phases.split_at_mut(cin * pl);
        for ci in 0..cin {
            let plane = &x[ci * h * w..(ci + 1) * h * w];
            let phase_rows = odd[ci * pl..(ci + 1) * pl]
                .chunks_exact_mut(wq)
                .zip(even[ci * pl..(ci + 1) * pl].chunks_exact_mut(wq));
            for (i, (d0, d1)) in phase_rows.enumerate() {
                // Padded row r = 2 i + py holds input row r - 1.
                let r = 2 * (rows.start + i) + py;
                if r == 0 || r > h {
                    d0.fill(0.0);
                    d1.fill(0.0);
                } else {
                    split_row::<V>(&plane[(r - 1) * w..r * w], d0, d1, &idx);
                }
            }
        }
    }
}

/// One padded input row into its two phase rows: `even[j] = src[2j]` (padded
/// column `2j + 1`) and `odd[j] = src[2j - 1]` (padded column `2j`, zero for
/// `j = 0`), zeros past the row. `idx` picks the even and the odd lanes of
/// two loads.
#[inline(always)]
fn split_row<V: Vector>(src: &[f32], odd: &mut [f32], even: &mut [f32], idx: &[V::Index; 2]) {
    let (l, w) = (V::LANES, src.len());
    let (n_even, n_odd) = (w.div_ceil(2), w / 2);
    // Both rows are `wq = ceil((w + 2) / 2)` long.
    assert!(even.len() == n_even + 1 && odd.len() == even.len(), "phase row length");
    // Whole vectors: 2 l floats of `src` make l of each phase row; the odd
    // ones land one place right (`odd[0]` is the left padding).
    let mut j = 0;
    if V::ONE_INSTRUCTION_PICK2 {
        // Exact chunks, so the loads and stores need no bounds checks.
        let vectors = src.chunks_exact(2 * l).zip(even.chunks_exact_mut(l));
        for ((s2, e), o) in vectors.zip(odd[1..].chunks_exact_mut(l)) {
            let (a, b) = (V::load(s2, 0), V::load(s2, l));
            V::pick2(a, b, idx[0]).store(e, 0);
            V::pick2(a, b, idx[1]).store(o, 0);
            j += l;
        }
    }
    odd[0] = 0.0;
    // The rest in pairs, which LLVM turns into shuffles where it can (AVX2,
    // SSE2), unlike a `step_by(2)` loop (docs/experiments.md).
    let pairs = src[2 * j..].chunks_exact(2);
    let last = pairs.remainder().first().copied();
    for ((e, o), pair) in even[j..].iter_mut().zip(odd[j + 1..].iter_mut()).zip(pairs) {
        *e = pair[0];
        *o = pair[1];
    }
    if let Some(x) = last {
        even[n_even - 1] = x;
    }
    // The right padding: one float past the even columns, and one past the
    // odd ones when `w` is odd (single stores: a `fill` per row called
    // `memset` twice per row).
    even[n_even] = 0.0;
    if let Some(z) = odd.get_mut(n_odd + 1) {
        *z = 0.0;
    }
}

struct PreparePlane<'a> {
    g: &'a Geometry,
    x: &'a [f32],
    index: usize,
    /// The phase row `dst` starts at.
    first_row: usize,
    dst: &'a mut [f32],
}

impl Job for PreparePlane<'_> {
    type Out = ();
    #[inline(always)]
    fn run<V: Vector>(self) {
        prepare_plane_body::<V>(self.g, self.x, self.index, self.first_row, self.dst)
    }
}

/// Writes prepared plane `index` (phase-major: `index = (py*s + px) * cin + ci`)
/// of `x` into `dst`, so callers can fill the planes in parallel; the slack
/// after the last plane (see [`Geometry::slack_range`]) must be zeroed too.
///
/// # Panics
/// If `x.len() != cin*h*w`, `index >= g.planes()` or `dst.len() != g.plane_len()`.
pub fn prepare_plane(isa: Isa, g: &Geometry, x: &[f32], index: usize, dst: &mut [f32]) {
    g.check();
    assert_eq!(dst.len(), g.plane_len(), "plane length");
    dispatch(isa, PreparePlane { g, x, index, first_row: 0, dst })
}

/// Plane `index`'s phase rows from `first_row` on, as many as `dst` holds.
#[inline(always)]
fn prepare_plane_body<V: Vector>(
    g: &Geometry,
    x: &[f32],
    index: usize,
    first_row: usize,
    dst: &mut [f32],
) {
    let Geometry { cin, h, w, stride: s } = *g;
    assert_eq!(x.len(), cin * h * w, "input length");
    assert!(index < g.planes(), "plane index");
    let (_, wq) = g.phase_hw();
    let (phase, ci) = (index / cin, index % cin);
    let (py, px) = (phase / s, phase % s);
    // Padded column c = s*j + px holds input column c - 1: the valid j are
    // those with 1 <= c <= w.
    let j_lo = (1usize.saturating_sub(px)).div_ceil(s);
    let j_hi = (w + 1 - px).div_ceil(s).min(wq).max(j_lo);
    let c_lo = s * j_lo + px - 1;
    let len = j_hi - j_lo;
    let plane = &x[ci * h * w..(ci + 1) * h * w];
    // Padded row r = s*i + py holds input row r - 1.
    for (i, qrow) in dst.chunks_exact_mut(wq).enumerate() {
        let r = s * (first_row + i) + py;
        if r == 0 || r > h {
            qrow.fill(0.0);
            continue;
        }
        let src = &plane[(r - 1) * w..r * w];
        qrow[..j_lo].fill(0.0);
        qrow[j_hi..].fill(0.0);
        if s == 1 {
            qrow[j_lo..j_hi].copy_from_slice(&src[c_lo..c_lo + len]);
        } else {
            split_columns::<V>(&src[c_lo..], &mut qrow[j_lo..j_hi]);
        }
    }
}

/// Every other float of `src` from the first: `dst[j] = src[2 * j]`
/// (`src` holds `2 * dst.len() - 1` floats or more).
///
/// Where a lane permute is one instruction (AVX-512's `vpermt2ps`) each
/// vector of `dst` is the even lanes of two loads, which beats LLVM's
/// vectorisation of the scalar loop (docs/experiments.md).
#[inline(always)]
fn split_columns<V: Vector>(src: &[f32], dst: &mut [f32]) {
    let lanes = V::LANES;
    let n = dst.len();
    if !V::ONE_INSTRUCTION_PICK2 || n < lanes || src.len() < 2 * lanes {
        // Pairs, so LLVM turns it into shuffles, unlike `step_by(2)` (AVX2;
        // docs/experiments.md).
        for (q, pair) in dst.iter_mut().zip(src.chunks_exact(2)) {
            *q = pair[0];
        }
        if src.len() / 2 < n {
            dst[n - 1] = src[2 * (n - 1)];
        }
        return;
    }
    let even = V::index(|l| 2 * l as u32);
    let mut j = 0;
    while j + lanes <= n && 2 * (j + lanes) <= src.len() {
        V::pick2(V::load(src, 2 * j), V::load(src, 2 * j + lanes), even).store(dst, j);
        j += lanes;
    }
    if j < n {
        // The last vector, overlapping the previous one (it rewrites equal
        // values). When `src` has `2 n - 1` floats the loads start one float
        // earlier and take the odd lanes instead.
        let j = n - lanes;
        let at = (2 * j).min(src.len() - 2 * lanes);
        let shift = (2 * j - at) as u32;
        let pick = V::index(|l| 2 * l as u32 + shift);
        V::pick2(V::load(src, at), V::load(src, at + lanes), pick).store(dst, j);
    }
}
