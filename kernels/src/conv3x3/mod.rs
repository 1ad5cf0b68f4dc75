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

mod flat;
mod geometry;
mod prepare;
mod rows;

pub use geometry::{Geometry, GeometryError, tap_offsets, tap_offsets_rows};
pub use prepare::{prepare_input, prepare_input_rows, prepare_plane};
pub use rows::PlaneRowsMut;

use flat::conv3x3_body;
use rows::{RowTiles, row_tiles, row_tiles_pay};

use crate::act::{Act, Activation, with_act};
use crate::conv1x1::{BoundedRows, Table, tile};
use core::marker::PhantomData;

use crate::isa::{Isa, Job, RegisterTile, TileJob, Vector, dispatch};

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
            struct Body<'a, V, A>(Problem<'a>, PhantomData<(V, A)>);
            impl<V: Vector, A: Act> TileJob for Body<'_, V, A> {
                type Out = ();
                #[inline(always)]
                fn run<const MR: usize, const NRV: usize>(self) {
                    problem_body::<V, MR, NRV, A>(self.0)
                }
            }
            V::Gemm::run(Body::<V, A>(self.0, PhantomData))
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
    let rows = BoundedRows::new(rows, k).expect("tap offsets fit in usize");
    let t = RowTiles { g, m, packed, prepared, rows, rows_out };
    row_tiles::<V, MR, NRV, A>(&t, &mut output)
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
