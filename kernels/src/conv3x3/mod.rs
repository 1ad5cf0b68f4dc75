//! Direct 3x3 convolution, padding 1, stride 1 or 2, groups 1, as an implicit
//! GEMM over a zero-padded, phase-split copy of the input: no im2col matrix.
//!
//! # Input preparation ([`prepare_input`])
//! The padded input `P` (`cin x (h+2) x (w+2)`, zero border) is split into
//! `s*s` phase planes of `hq x wq` (`hq = ceil((h+2)/s)`, `wq = ceil((w+2)/s)`):
//! `Q[py][px][ci][i][j] = P[ci][s*i + py][s*j + px]` (zero where out of range).
//! For stride 1 there is one phase, `Q = P`. A slack of zeros follows the
//! last plane so every read below stays in bounds.
//!
//! # Implicit GEMM
//! Output pixel `(oy, ox)` is computed at the flat position `q = oy*wq + ox`
//! of an `oh x wq` grid. Tap `(ci, ky, kx)` then reads `Q` at
//! `q + tap_offset(ci, ky, kx)` with
//! `tap_offset = phase(ky%s, kx%s) + ci*hq*wq + (ky/s)*wq + kx/s` — a constant
//! per tap, so the 1x1 GEMM micro-kernel runs unchanged with a row-offset
//! table (`Table`) instead of a row stride, and the borders
//! cost no branches. The `wq - ow` columns past each output row are computed
//! and dropped (3.4% extra work at 56x56, 12.5% at 14x14).
//!
//! Weights are packed exactly as for [`crate::conv1x1`] with `k = cin * 9`
//! (OIHW order per output channel is `(ci, ky, kx)`, which is the tap order),
//! for the same ISA.

use crate::act::{Act, Activation, with_act};
use core::marker::PhantomData;
use core::ops::Range;

use crate::conv1x1::{MAX_TILE, Rows, Table, TileOut, conv1x1_tile, conv1x1_tile_plus, tile};
use crate::isa::{Isa, Job, Vector, dispatch};
use crate::lanes::Lanes;

/// The widest register tile of any ISA, in pixels: the prepared input's slack
/// covers a whole tile of reads past the last flat position.
const MAX_NR: usize = 48;

/// Geometry of one prepared 3x3 convolution input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Input channels.
    pub cin: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Stride (1 or 2).
    pub stride: usize,
}

impl Geometry {
    /// Phase plane size `(hq, wq)`.
    pub fn phase_hw(&self) -> (usize, usize) {
        ((self.h + 2).div_ceil(self.stride), (self.w + 2).div_ceil(self.stride))
    }

    /// Output size `(oh, ow)`.
    pub fn output_hw(&self) -> (usize, usize) {
        ((self.h - 1) / self.stride + 1, (self.w - 1) / self.stride + 1)
    }

    /// Flat output positions per channel: `oh * wq`.
    pub fn flat_len(&self) -> usize {
        self.output_hw().0 * self.phase_hw().1
    }

    /// Number of prepared planes, `stride^2 * cin`.
    pub fn planes(&self) -> usize {
        self.stride * self.stride * self.cin
    }

    /// Floats per prepared plane, `hq * wq`.
    pub fn plane_len(&self) -> usize {
        let (hq, wq) = self.phase_hw();
        hq * wq
    }

    /// The zero slack after the planes, as a range of the prepared buffer.
    pub fn slack_range(&self) -> std::ops::Range<usize> {
        self.planes() * self.plane_len()..self.prepared_len()
    }

    /// Reduction length `cin * 9`.
    pub fn k(&self) -> usize {
        self.cin * 9
    }

    /// Length of the prepared input, slack included.
    pub fn prepared_len(&self) -> usize {
        let (hq, wq) = self.phase_hw();
        self.stride * self.stride * self.cin * hq * wq + self.slack()
    }

    /// Prepared phase rows that output rows `rows` read: `rows.len()` plus
    /// the taps' reach below them (`2 / stride` rows).
    pub fn band_phase_rows(&self, rows: &Range<usize>) -> usize {
        rows.len() + 2 / self.stride
    }

    /// Length of the prepared input of output rows `rows`
    /// ([`prepare_input_rows`]), slack included.
    pub fn rows_prepared_len(&self, rows: &Range<usize>) -> usize {
        let (_, wq) = self.phase_hw();
        self.planes() * self.band_phase_rows(rows) * wq + self.slack()
    }

    fn slack(&self) -> usize {
        // The last flat position plus the largest in-plane tap shift can pass
        // the end of the last plane by up to 2*wq + 2; round up generously.
        let (_, wq) = self.phase_hw();
        2 * wq + 2 + MAX_NR
    }

    fn check(&self) {
        assert!(self.cin > 0 && self.h > 0 && self.w > 0, "empty input");
        assert!(self.stride == 1 || self.stride == 2, "stride must be 1 or 2");
    }
}

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
/// band_phase_rows(rows)`, so that [`conv3x3_rows`] computes those output
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
/// plane from one pair of loads per 2 vectors of output (plane by plane,
/// [`prepare_plane`] read every input row twice and set up its permutes per
/// row: 19-20 µs for the 3 x 224 x 224 stem input, 12% of the stem).
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
    // SSE2: a `step_by(2)` loop made the stem 10% slower).
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
/// vector of `dst` is the even lanes of two loads; LLVM's vectorisation of
/// the scalar loop made the stem's phase split 10% of the stem's time.
#[inline(always)]
fn split_columns<V: Vector>(src: &[f32], dst: &mut [f32]) {
    let lanes = V::LANES;
    let n = dst.len();
    if !V::ONE_INSTRUCTION_PICK2 || n < lanes || src.len() < 2 * lanes {
        // Pairs, so LLVM turns it into shuffles (AVX2: `step_by(2)` instead
        // made the stem 10% slower).
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

/// Writes the `cin * 9` tap offsets (order `(ci, ky, kx)`) into `dst`.
///
/// # Panics
/// If `dst.len() != g.k()`.
pub fn tap_offsets(g: &Geometry, dst: &mut [usize]) {
    let (hq, _) = g.phase_hw();
    tap_offsets_for(g, hq, dst)
}

/// [`tap_offsets`] for the prepared input of output rows `rows`
/// ([`prepare_input_rows`]).
///
/// # Panics
/// If `dst.len() != g.k()`.
pub fn tap_offsets_rows(g: &Geometry, rows: &Range<usize>, dst: &mut [usize]) {
    tap_offsets_for(g, g.band_phase_rows(rows), dst)
}

/// The tap offsets over planes of `hq` phase rows.
fn tap_offsets_for(g: &Geometry, hq: usize, dst: &mut [usize]) {
    g.check();
    assert_eq!(dst.len(), g.k(), "offset table length");
    let (_, wq) = g.phase_hw();
    let s = g.stride;
    for ci in 0..g.cin {
        for ky in 0..3 {
            for kx in 0..3 {
                let phase = (ky % s) * s + kx % s;
                dst[ci * 9 + ky * 3 + kx] =
                    phase * g.cin * hq * wq + ci * hq * wq + (ky / s) * wq + kx / s;
            }
        }
    }
}

/// One direct 3x3 problem: `m` output channels over a prepared input, into
/// the whole output (`O = &mut [f32]`, [`conv3x3`]) or into a band of its
/// rows (`O = PlaneRowsMut`, [`conv3x3_rows`]).
#[derive(Debug)]
pub struct Conv3x3Args<'a, O = &'a mut [f32]> {
    /// Geometry of the (whole) input.
    pub geometry: Geometry,
    /// Output channels to compute (`packed` holds `ceil(m / MR)` blocks).
    pub m: usize,
    /// Weights packed by [`crate::conv1x1::pack_weights`] for the same ISA with
    /// `k = cin * 9`.
    pub packed: &'a [f32],
    /// The output of [`prepare_input`] (of [`prepare_input_rows`] for the
    /// band's rows).
    pub prepared: &'a [f32],
    /// The output of [`tap_offsets`] (of [`tap_offsets_rows`] for the band's
    /// rows).
    pub offsets: &'a [usize],
    /// Output, `m x oh x ow`, or the band of it to write.
    pub output: O,
}

/// A direct 3x3 problem on a band of output rows ([`conv3x3_rows`]).
pub type Conv3x3RowsArgs<'a> = Conv3x3Args<'a, PlaneRowsMut<'a>>;

/// Computes `output[oc][oy][ox] = act(bias[oc] + Σ w · x)` for `m` channels
/// with `isa`'s kernel (`conv3x3_s<stride>_<MR>x<NR>__<isa>`).
///
/// Writes exactly `output[..m*oh*ow]`; reads nothing outside the slices.
///
/// # Panics
/// If a slice does not match the geometry, or an offset table entry points
/// outside the prepared input.
pub fn conv3x3(isa: Isa, act: Activation, args: Conv3x3Args<'_>) {
    run_problem(isa, act, Problem::Whole(args))
}

/// What one call computes: the whole output, or a band of its rows.
enum Problem<'a> {
    Whole(Conv3x3Args<'a>),
    Rows(Conv3x3RowsArgs<'a>),
}

/// Runs `problem` with `isa`'s kernel and register tile.
fn run_problem(isa: Isa, act: Activation, problem: Problem<'_>) {
    struct Run<'a, A>(Problem<'a>, core::marker::PhantomData<A>);
    impl<A: Act> Job for Run<'_, A> {
        type Out = ();
        #[inline(always)]
        fn run<V: Vector>(self) {
            match (V::GEMM_MR, V::GEMM_NRV) {
                (8, 3) => problem_body::<V, 8, 3, A>(self.0),
                (6, 2) => problem_body::<V, 6, 2, A>(self.0),
                _ => unreachable!("no 3x3 driver for this tile"),
            }
        }
    }
    fn go<A: Act>(isa: Isa, problem: Problem<'_>) {
        dispatch(isa, Run::<A>(problem, core::marker::PhantomData))
    }
    with_act!(act, go::<_>(isa, problem))
}

#[inline(always)]
fn problem_body<V: Vector, const MR: usize, const NRV: usize, A: Act>(problem: Problem<'_>) {
    match problem {
        Problem::Whole(args) => conv3x3_body::<V, MR, NRV, A>(args),
        Problem::Rows(args) => conv3x3_rows_body::<V, MR, NRV, A>(args),
    }
}

/// Whether [`conv3x3_rows`] can compute `g`'s output in bands of rows with
/// `isa`'s kernel: when its tiles are row-aligned (each output row in tiles of
/// its own, see [`conv3x3`]), which a band of rows computes exactly as the
/// whole output does.
pub fn row_bands_supported(isa: Isa, g: &Geometry) -> bool {
    g.check();
    let (lanes, nr) = (isa.lanes(), tile(isa).1);
    let (_, ow) = g.output_hw();
    let (_, wq) = g.phase_hw();
    row_tiles_pay(ow, wq, g.flat_len(), lanes, nr)
}

/// [`conv3x3`] for the output rows `args.output.rows()` only: every output
/// float of those rows is bitwise what [`conv3x3`] writes there, so threads
/// that each compute a band (their own prepared rows, their own
/// [`PlaneRowsMut`]) write the same output as one thread.
///
/// # Panics
/// If [`row_bands_supported`] is false for `isa` and the geometry, or a
/// slice or the band does not match the geometry.
pub fn conv3x3_rows(isa: Isa, act: Activation, args: Conv3x3RowsArgs<'_>) {
    assert!(row_bands_supported(isa, &args.geometry), "row bands need row-aligned tiles");
    run_problem(isa, act, Problem::Rows(args))
}

#[inline(always)]
fn conv3x3_rows_body<V: Vector, const MR: usize, const NRV: usize, A: Act>(
    args: Conv3x3RowsArgs<'_>,
) {
    let Conv3x3RowsArgs { geometry: g, m, packed, prepared, offsets, mut output } = args;
    let (oh, ow) = g.output_hw();
    let rows_out = output.rows();
    assert!(
        (output.planes, output.oh, output.ow) == (m, oh, ow),
        "band planes must be m x oh x ow"
    );
    assert_eq!(prepared.len(), g.rows_prepared_len(&rows_out), "prepared length");
    let k = g.k();
    assert_eq!(offsets.len(), k, "offset table length");
    assert!(packed.len() >= m.div_ceil(MR) * (k + 1) * MR, "packed weights too short");
    let rows = Table(offsets);
    let max_row = rows.max(k).unwrap_or(usize::MAX);
    let t = RowTiles { g, m, packed, prepared, rows, max_row, rows_out };
    row_tiles::<V, MR, NRV, A>(&t, &mut output)
}

/// The driver for `V` and the tile `MR x NRV` vectors.
///
/// LOOP 1 walks `NR`-wide tiles of flat positions; LOOP 2 the `MR`-channel
/// blocks over one tile (its input window stays in L1). Each tile is computed
/// into a stack tile and its valid runs (`ox < ow`) are copied to the output
/// rows, so the dropped columns never reach memory. The last tile uses only
/// as many vectors as it has positions; its reads stay inside the prepared
/// input's slack.
///
/// # Panics
/// If a slice does not match the geometry.
#[inline(always)]
fn conv3x3_body<V: Vector, const MR: usize, const NRV: usize, A: Act>(args: Conv3x3Args<'_>) {
    let Conv3x3Args { geometry: g, m, packed, prepared, offsets, output } = args;
    let (lanes, nr) = (V::LANES, NRV * V::LANES);
    g.check();
    let (oh, ow) = g.output_hw();
    let (_, wq) = g.phase_hw();
    let (n, k) = (g.flat_len(), g.k());
    assert_eq!(prepared.len(), g.prepared_len(), "prepared length");
    assert_eq!(offsets.len(), k, "offset table length");
    assert_eq!(output.len(), m * oh * ow, "output length");
    let blocks = m.div_ceil(MR);
    let block_len = (k + 1) * MR;
    assert!(packed.len() >= blocks * block_len, "packed weights too short");
    let rows = Table(offsets);
    // The micro-kernel checks every tile's reads against this maximum.
    let max_row = rows.max(k).unwrap_or(usize::MAX);

    // One stack tile for every tail; the micro-kernel overwrites the part it uses.
    let mut tile = [0.0f32; MAX_TILE];
    if row_tiles_pay(ow, wq, n, lanes, nr) {
        // All rows: the same band type the threads' row bands use.
        let mut out = PlaneRowsMut::new(output, m, oh, ow);
        let t = RowTiles { g, m, packed, prepared, rows, max_row, rows_out: 0..oh };
        return row_tiles::<V, MR, NRV, A>(&t, &mut out);
    }
    // LOOP 1: tiles of NR flat positions q = oy * wq + ox.
    for q0 in (0..n).step_by(nr) {
        let cols = (n - q0).min(nr);
        let (oy0, ox0) = (q0 / wq, q0 % wq);
        if cols == nr && ox0 + nr <= ow {
            // The whole tile is valid pixels of one output row: store directly
            // (rows of the tile are channels, `oh * ow` apart).
            for blk in 0..blocks {
                let pk = &packed[blk * block_len..(blk + 1) * block_len];
                let off = blk * MR * oh * ow + oy0 * ow + ox0;
                if (m - blk * MR) >= MR {
                    conv1x1_tile::<V, MR, NRV, A, _>(
                        k,
                        pk,
                        prepared,
                        q0,
                        rows,
                        max_row,
                        output,
                        off,
                        oh * ow,
                    );
                } else {
                    conv1x1_tile::<V, MR, NRV, A, _>(
                        k, pk, prepared, q0, rows, max_row, &mut tile, 0, nr,
                    );
                    copy_runs::<V>(
                        &tile,
                        nr,
                        &[(0, oy0 * ow + ox0, nr)],
                        m - blk * MR,
                        output,
                        blk * MR,
                        oh * ow,
                    );
                }
            }
            continue;
        }
        // Valid runs of this tile: (offset in tile, index in an output plane, length).
        let mut runs = [(0usize, 0usize, 0usize); MAX_NR];
        let mut nruns = 0;
        let mut q = q0;
        while q < q0 + cols {
            let (oy, ox) = (q / wq, q % wq);
            let len = (wq - ox).min(q0 + cols - q);
            if ox < ow {
                runs[nruns] = (q - q0, oy * ow + ox, len.min(ow - ox));
                nruns += 1;
            }
            q += len;
        }
        // LOOP 2: channel blocks.
        for blk in 0..blocks {
            let pk = &packed[blk * block_len..(blk + 1) * block_len];
            match cols.div_ceil(lanes) {
                1 => conv1x1_tile::<V, MR, 1, A, _>(
                    k, pk, prepared, q0, rows, max_row, &mut tile, 0, nr,
                ),
                2 => conv1x1_tile::<V, MR, 2, A, _>(
                    k, pk, prepared, q0, rows, max_row, &mut tile, 0, nr,
                ),
                _ => conv1x1_tile::<V, MR, NRV, A, _>(
                    k, pk, prepared, q0, rows, max_row, &mut tile, 0, nr,
                ),
            }
            let valid_rows = (m - blk * MR).min(MR);
            copy_runs::<V>(&tile, nr, &runs[..nruns], valid_rows, output, blk * MR, oh * ow);
        }
    }
}

/// What the row-tile loop reads: the problem, and the output rows it
/// computes (`rows_out`, whose prepared phase rows start at `rows_out.start`).
struct RowTiles<'a> {
    g: Geometry,
    m: usize,
    packed: &'a [f32],
    prepared: &'a [f32],
    rows: Table<'a>,
    max_row: usize,
    rows_out: Range<usize>,
}

/// The row-aligned tiles of output rows `t.rows_out`: each output row on its
/// own, in NR-wide tiles and one narrower last tile; no dropped columns are
/// computed at all.
///
/// Rows go in bands whose prepared input stays in L2, and inside a band one
/// block of MR channels after the other, so that MR output planes are
/// written at a time, not all of them: the hardware prefetcher follows that
/// many store streams. With every block at every tile, the 3 -> 48 channel
/// stem's 2.4 MB output, which has left the caches by the time the next
/// image comes, took 245-285 µs inside a forward pass against 160 hot; now
/// 198-200 (153 hot), and the depthwise layer reading it 65-76 µs instead of
/// 74-107 (Zen 5, AVX-512, one thread; the stem alone 4% faster, on two
/// threads 5-10%).
#[inline(always)]
fn row_tiles<V: Vector, const MR: usize, const NRV: usize, A: Act>(
    t: &RowTiles<'_>,
    out: &mut PlaneRowsMut<'_>,
) {
    let RowTiles { g, m, packed, prepared, rows, max_row, .. } = *t;
    let (lanes, nr) = (V::LANES, NRV * V::LANES);
    let (_, ow) = g.output_hw();
    let (_, wq) = g.phase_hw();
    let k = g.k();
    let blocks = m.div_ceil(MR);
    let block_len = (k + 1) * MR;
    let (first, end) = (t.rows_out.start, t.rows_out.end);
    // One stack tile for every tail; the micro-kernel overwrites the part it uses.
    let mut tile = [0.0f32; MAX_TILE];
    let band = (BAND_BYTES / (g.planes() * wq * size_of::<f32>()).max(1)).max(1);
    for oy0 in (first..end).step_by(band) {
        for blk in 0..blocks {
            let pk = &packed[blk * block_len..(blk + 1) * block_len];
            let valid_rows = (m - blk * MR).min(MR);
            for oy in oy0..(oy0 + band).min(end) {
                let mut ox0 = 0;
                while ox0 < ow {
                    let cols = row_tile_cols(ow - ox0, lanes, NRV);
                    // Flat position in the prepared rows, which start at `first`.
                    let q0 = (oy - first) * wq + ox0;
                    let direct = valid_rows == MR && cols.is_multiple_of(lanes);
                    let c = if direct {
                        out.tile(blk * MR, MR, oy, ox0, cols)
                    } else {
                        TileOut::of_slice(&mut tile, 0, nr, MR, nr)
                    };
                    match cols.div_ceil(lanes) {
                        1 => conv1x1_tile_plus::<V, V, MR, 1, 0, A, _>(
                            k, pk, prepared, q0, rows, max_row, c, lanes,
                        ),
                        2 => conv1x1_tile_plus::<V, V, MR, 2, 0, A, _>(
                            k,
                            pk,
                            prepared,
                            q0,
                            rows,
                            max_row,
                            c,
                            2 * lanes,
                        ),
                        _ => conv1x1_tile_plus::<V, V, MR, NRV, 0, A, _>(
                            k, pk, prepared, q0, rows, max_row, c, nr,
                        ),
                    }
                    if !direct {
                        for r in 0..valid_rows {
                            let row = out.row(blk * MR + r, oy);
                            copy_runs::<V>(&tile[r * nr..], nr, &[(0, ox0, cols)], 1, row, 0, ow);
                        }
                    }
                    ox0 += cols;
                }
            }
        }
    }
}

/// Rows `rows()` of `planes` output planes of `oh x ow` floats, borrowed out
/// of one buffer that holds all of them, so that threads can each compute a
/// band of output rows of the same planes ([`conv3x3_rows`]). Made with
/// [`PlaneRowsMut::new`] and cut with [`PlaneRowsMut::split_at`]; every
/// write through it lands in its own rows.
#[derive(Debug)]
pub struct PlaneRowsMut<'a> {
    ptr: *mut f32,
    planes: usize,
    oh: usize,
    ow: usize,
    rows: Range<usize>,
    _borrow: PhantomData<&'a mut [f32]>,
}

// SAFETY: a `PlaneRowsMut` is a unique borrow of its rows of the planes (as
// a `&mut [f32]` of them would be): bands made by `split_at` share no float.
unsafe impl Send for PlaneRowsMut<'_> {}

impl<'a> PlaneRowsMut<'a> {
    /// All `oh` rows of the `planes` planes in `output`.
    ///
    /// # Panics
    /// If `output.len() != planes * oh * ow` (or that product overflows).
    pub fn new(output: &'a mut [f32], planes: usize, oh: usize, ow: usize) -> Self {
        let len = planes.checked_mul(oh).and_then(|x| x.checked_mul(ow));
        assert_eq!(len, Some(output.len()), "output must be planes * oh * ow");
        let ptr = output.as_mut_ptr();
        PlaneRowsMut { ptr, planes, oh, ow, rows: 0..oh, _borrow: PhantomData }
    }

    /// The output rows this band holds.
    pub fn rows(&self) -> Range<usize> {
        self.rows.clone()
    }

    /// Rows `rows().start..oy` and `oy..rows().end`.
    ///
    /// # Panics
    /// If `oy` is not in `rows().start..=rows().end`.
    pub fn split_at(self, oy: usize) -> (Self, Self) {
        assert!(self.rows.start <= oy && oy <= self.rows.end, "split row outside the band");
        let top = PlaneRowsMut { rows: self.rows.start..oy, ..self };
        let bottom = PlaneRowsMut { rows: oy..self.rows.end, ..self };
        (top, bottom)
    }
}

impl PlaneRowsMut<'_> {
    /// The runs `[ox0, ox0 + width)` of row `oy` of planes `plane0..plane0 +
    /// planes`.
    #[inline(always)]
    fn tile(
        &mut self,
        plane0: usize,
        planes: usize,
        oy: usize,
        ox0: usize,
        width: usize,
    ) -> TileOut<'_> {
        assert!(
            planes > 0
                && plane0.checked_add(planes).is_some_and(|end| end <= self.planes)
                && self.rows.contains(&oy)
                && ox0.checked_add(width).is_some_and(|end| end <= self.ow),
            "tile outside the band"
        );
        let plane_len = self.oh * self.ow;
        // SAFETY: the runs are row `oy` of planes `plane0..plane0 + planes`,
        // columns `ox0..ox0 + width`: inside the buffer (`new` checked its
        // length) and inside this band's rows, which no other band holds
        // (`split_at`); `&mut self` keeps this the only writer for `'_`.
        unsafe {
            let start = self.ptr.add(plane0 * plane_len + oy * self.ow + ox0);
            TileOut::from_raw(start, plane_len, planes, width)
        }
    }
    /// Row `oy` of plane `plane`.
    #[inline(always)]
    fn row(&mut self, plane: usize, oy: usize) -> &mut [f32] {
        assert!(plane < self.planes && self.rows.contains(&oy), "row outside the band");
        // SAFETY: as in `tile`: one row of this band, inside the buffer, and
        // `&mut self` is the only borrow for the slice's lifetime.
        unsafe {
            core::slice::from_raw_parts_mut(self.ptr.add((plane * self.oh + oy) * self.ow), self.ow)
        }
    }
}

/// Prepared input per band of row-aligned output rows (see
/// [`conv3x3_body`]): 128 KiB, well inside any L2.
const BAND_BYTES: usize = 128 * 1024;

/// Width of the next row-aligned tile when `left` pixels of the row remain:
/// full `NRV`-vector tiles, except that `NRV + 1` remaining vectors become
/// two tiles of about half (a 112-pixel stem row is 48 + 32 + 32, not
/// 48 + 48 + 16: a one-vector tile loads a vector and `MR` weights for only
/// `MR` FMAs, and ran the stem's last 16 columns at half the speed).
fn row_tile_cols(left: usize, lanes: usize, nrv: usize) -> usize {
    let vectors = left.div_ceil(lanes);
    if nrv >= 3 && vectors == nrv + 1 { vectors / 2 * lanes } else { left.min(nrv * lanes) }
}

/// Whether row-aligned tiles beat flat tiles: a row must hold a whole
/// `nr`-wide tile (narrower row tiles load a vector and `MR` weights for
/// `MR` FMAs per vector: 256 channels on 14x14 ran at 61% of the peak with
/// one 16-wide tile per row, 84-85% with flat tiles: Zen 5, AVX-512), and
/// row tiles must waste no more lanes (`ceil(ow / LANES) * LANES - ow` per
/// row) than flat tiles (the `wq - ow` dropped columns plus the rounding of
/// `n`).
fn row_tiles_pay(ow: usize, wq: usize, n: usize, lanes: usize, nr: usize) -> bool {
    let row_util = ow as f64 / (ow.div_ceil(lanes) * lanes) as f64;
    let flat_util = (ow as f64 / wq as f64) * (n as f64 / (n.div_ceil(lanes) * lanes) as f64);
    ow >= nr && row_util >= flat_util
}

/// Copies the runs `(offset in tile row, index in plane, length)` of the first
/// `rows` tile rows into output planes `first_plane..` (`plane_len` apart).
/// Vector-sized pieces go through registers, so short runs cost no `memcpy` call.
#[inline(always)]
fn copy_runs<V: Vector>(
    tile: &[f32],
    nr: usize,
    runs: &[(usize, usize, usize)],
    rows: usize,
    output: &mut [f32],
    first_plane: usize,
    plane_len: usize,
) {
    let lanes = V::LANES;
    for r in 0..rows {
        let plane = &mut output[(first_plane + r) * plane_len..][..plane_len];
        let trow = &tile[r * nr..(r + 1) * nr];
        for &(t, o, len) in runs {
            if len < lanes {
                plane[o..o + len].copy_from_slice(&trow[t..t + len]);
                continue;
            }
            let mut i = 0;
            while i + lanes <= len {
                V::load(trow, t + i).store(plane, o + i);
                i += lanes;
            }
            if i < len {
                // Overlapping last vector: rewrites a few equal values, no scalar loop.
                V::load(trow, t + len - lanes).store(plane, o + len - lanes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Q[py][px][ci][i][j] = P[ci][s*i + py][s*j + px]`, `P` the input with a
    /// zero border of one, straight from the definition in the module docs.
    fn prepared_by_definition(g: &Geometry, x: &[f32]) -> Vec<f32> {
        let Geometry { cin, h, w, stride: s } = *g;
        let (hq, wq) = g.phase_hw();
        let padded = |ci: usize, r: usize, c: usize| {
            if r == 0 || c == 0 || r > h || c > w { 0.0 } else { x[(ci * h + r - 1) * w + c - 1] }
        };
        let mut q = vec![0.0; g.prepared_len()];
        for py in 0..s {
            for px in 0..s {
                for ci in 0..cin {
                    let plane = ((py * s + px) * cin + ci) * hq * wq;
                    for i in 0..hq {
                        for j in 0..wq {
                            q[plane + i * wq + j] = padded(ci, s * i + py, s * j + px);
                        }
                    }
                }
            }
        }
        q
    }

    /// Output rows computed band by band ([`conv3x3_rows`], each band from
    /// its own prepared rows) are bitwise the whole output's, for bands of
    /// one row, uneven bands and one band of every row; both strides, every
    /// ISA this CPU has, channel counts off the register tile, widths with
    /// a narrow last tile; the output starts as NaN so an unwritten float
    /// fails.
    #[test]
    fn row_bands_match_the_whole_output() {
        use crate::conv1x1::{pack_weights, packed_len};
        for isa in Isa::available() {
            let (nr, l) = (tile(isa).1, isa.lanes());
            // Output widths of whole vectors (row tiles pay): one vector more
            // than a tile (two narrower tiles), and two tiles and a vector.
            for (cin, m, h, w, stride) in [
                (3, 13, 9, 2 * (nr + l), 2),
                (1, 8, 6, 2 * (2 * nr + l) - 1, 2),
                (2, 6, 7, nr + l, 1),
                (3, 17, 5, 2 * nr + l, 1),
            ] {
                let g = Geometry { cin, h, w, stride };
                assert!(row_bands_supported(isa, &g), "{isa} {cin}x{h}x{w} s{stride}");
                let (oh, ow) = g.output_hw();
                let k = g.k();
                let x: Vec<f32> = (0..cin * h * w).map(|i| (i % 23) as f32 * 0.1 - 1.0).collect();
                let wts: Vec<f32> = (0..m * k).map(|i| (i % 11) as f32 * 0.07 - 0.3).collect();
                let bias: Vec<f32> = (0..m).map(|i| i as f32 * 0.01).collect();
                let mut packed = vec![0.0; packed_len(isa, m, k).unwrap()];
                pack_weights(isa, &wts, Some(&bias), m, k, &mut packed);
                let mut prepared = vec![0.0; g.prepared_len()];
                prepare_input(isa, &g, &x, &mut prepared);
                let mut offsets = vec![0; k];
                tap_offsets(&g, &mut offsets);
                let mut want = vec![0.0f32; m * oh * ow];
                let output = &mut want[..];
                let args = Conv3x3Args {
                    geometry: g,
                    m,
                    packed: &packed,
                    prepared: &prepared,
                    offsets: &offsets,
                    output,
                };
                conv3x3(isa, Activation::Relu, args);
                let cuts: [&[usize]; 3] = [&(1..oh).collect::<Vec<_>>(), &[1, oh / 2 + 1], &[]];
                for cut in cuts {
                    let mut got = vec![f32::NAN; m * oh * ow];
                    let mut rest = PlaneRowsMut::new(&mut got, m, oh, ow);
                    let mut bands = Vec::new();
                    for &c in cut {
                        let (top, bottom) = rest.split_at(c);
                        bands.push(top);
                        rest = bottom;
                    }
                    bands.push(rest);
                    for band in bands {
                        let rows = band.rows();
                        let mut prep = vec![0.0; g.rows_prepared_len(&rows)];
                        prepare_input_rows(isa, &g, &x, rows.clone(), &mut prep);
                        let mut offs = vec![0; k];
                        tap_offsets_rows(&g, &rows, &mut offs);
                        let args = Conv3x3RowsArgs {
                            geometry: g,
                            m,
                            packed: &packed,
                            prepared: &prep,
                            offsets: &offs,
                            output: band,
                        };
                        conv3x3_rows(isa, Activation::Relu, args);
                    }
                    let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{isa} {cin}x{h}x{w} s{stride} -> {m}: bands {cut:?}");
                }
            }
        }
    }

    /// A band refuses a tile or row outside its rows.
    #[test]
    #[should_panic(expected = "outside the band")]
    fn band_rejects_other_rows() {
        let mut buf = vec![0.0; 2 * 4 * 3];
        let (_, mut bottom) = PlaneRowsMut::new(&mut buf, 2, 4, 3).split_at(2);
        let _ = bottom.row(0, 1);
    }

    /// Both strides' preparation (stride 2: the row-pair split), whole and
    /// plane by plane, on every ISA this CPU has, for widths around one and
    /// two vectors of every ISA and odd and even sizes; the buffer starts
    /// full of NaN so a float left unwritten fails.
    #[test]
    fn prepared_input_matches_the_definition() {
        let sizes = [1usize, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 32, 33, 34, 47, 63, 64, 65, 66];
        for isa in Isa::available() {
            for stride in [1, 2] {
                for (n, &w) in sizes.iter().enumerate() {
                    let h = sizes[(n * 7 + 3) % sizes.len()];
                    let cin = 1 + n % 3;
                    let g = Geometry { cin, h, w, stride };
                    let x: Vec<f32> = (0..cin * h * w).map(|i| i as f32 + 1.0).collect();
                    let want = prepared_by_definition(&g, &x);
                    let mut got = vec![f32::NAN; g.prepared_len()];
                    prepare_input(isa, &g, &x, &mut got);
                    assert!(got == want, "{isa} stride {stride} {cin}x{h}x{w}: whole input");
                    let mut got = vec![f32::NAN; g.prepared_len()];
                    got[g.slack_range()].fill(0.0);
                    for (i, plane) in
                        got.chunks_exact_mut(g.plane_len()).take(g.planes()).enumerate()
                    {
                        prepare_plane(isa, &g, &x, i, plane);
                    }
                    assert!(got == want, "{isa} stride {stride} {cin}x{h}x{w}: plane by plane");
                }
            }
        }
    }
}
