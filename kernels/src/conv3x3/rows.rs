//! Row-aligned tiles: each output row in tiles of its own (no dropped
//! columns), in bands of rows, and the disjoint row-band output type that
//! lets threads each compute a band ([`PlaneRowsMut`]).

use core::marker::PhantomData;
use core::ops::Range;

use super::Geometry;
use crate::act::Act;
use crate::conv1x1::{BoundedRows, MAX_TILE, Table, TileOut, conv1x1_tile_plus};
use crate::isa::Vector;
use crate::lanes::Lanes;

/// What the row-tile loop reads: the problem, and the output rows it
/// computes (`rows_out`, whose prepared phase rows start at `rows_out.start`).
pub(super) struct RowTiles<'a> {
    pub(super) g: Geometry,
    pub(super) m: usize,
    pub(super) packed: &'a [f32],
    pub(super) prepared: &'a [f32],
    pub(super) rows: BoundedRows<Table<'a>>,
    pub(super) rows_out: Range<usize>,
}

/// The row-aligned tiles of output rows `t.rows_out`: each output row on its
/// own, in NR-wide tiles and one narrower last tile; no dropped columns are
/// computed at all.
///
/// Rows go in bands whose prepared input stays in L2, and inside a band one
/// block of MR channels after the other, so that MR output planes are
/// written at a time, not all of them: the hardware prefetcher follows that
/// many store streams, which matters for a stem output larger than the
/// caches (numbers in docs/experiments.md).
#[inline(always)]
pub(super) fn row_tiles<V: Vector, const MR: usize, const NRV: usize, A: Act>(
    t: &RowTiles<'_>,
    out: &mut PlaneRowsMut<'_>,
) {
    let RowTiles { g, m, packed, prepared, rows, .. } = *t;
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
                            k, pk, prepared, q0, rows, c, lanes,
                        ),
                        2 => conv1x1_tile_plus::<V, V, MR, 2, 0, A, _>(
                            k,
                            pk,
                            prepared,
                            q0,
                            rows,
                            c,
                            2 * lanes,
                        ),
                        _ => conv1x1_tile_plus::<V, V, MR, NRV, 0, A, _>(
                            k, pk, prepared, q0, rows, c, nr,
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
/// band of output rows of the same planes ([`conv3x3_rows`](super::conv3x3_rows)). Made with
/// [`PlaneRowsMut::new`] and cut with [`PlaneRowsMut::split_at`]; every
/// write through it lands in its own rows.
#[derive(Debug)]
pub struct PlaneRowsMut<'a> {
    ptr: *mut f32,
    pub(super) planes: usize,
    pub(super) oh: usize,
    pub(super) ow: usize,
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
    pub(super) fn row(&mut self, plane: usize, oy: usize) -> &mut [f32] {
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
pub(super) const BAND_BYTES: usize = 128 * 1024;

/// Width of the next row-aligned tile when `left` pixels of the row remain:
/// full `NRV`-vector tiles, except that `NRV + 1` remaining vectors become
/// two tiles of about half (a 112-pixel stem row is 48 + 32 + 32, not
/// 48 + 48 + 16: a one-vector tile loads a vector and `MR` weights for only
/// `MR` FMAs, and ran the stem's last 16 columns at half the speed).
pub(super) fn row_tile_cols(left: usize, lanes: usize, nrv: usize) -> usize {
    let vectors = left.div_ceil(lanes);
    if nrv >= 3 && vectors == nrv + 1 { vectors / 2 * lanes } else { left.min(nrv * lanes) }
}

/// Whether row-aligned tiles beat flat tiles: a row must hold a whole
/// `nr`-wide tile (narrower row tiles load a vector and `MR` weights for
/// `MR` FMAs per vector, which bounds them by loads: docs/experiments.md), and
/// row tiles must waste no more lanes (`ceil(ow / LANES) * LANES - ow` per
/// row) than flat tiles (the `wq - ow` dropped columns plus the rounding of
/// `n`).
pub(super) fn row_tiles_pay(ow: usize, wq: usize, n: usize, lanes: usize, nr: usize) -> bool {
    let row_util = ow as f64 / (ow.div_ceil(lanes) * lanes) as f64;
    let flat_util = (ow as f64 / wq as f64) * (n as f64 / (n.div_ceil(lanes) * lanes) as f64);
    ow >= nr && row_util >= flat_util
}

/// Copies the runs `(offset in tile row, index in plane, length)` of the first
/// `rows` tile rows into output planes `first_plane..` (`plane_len` apart).
/// Vector-sized pieces go through registers, so short runs cost no `memcpy` call.
#[inline(always)]
pub(super) fn copy_runs<V: Vector>(
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
