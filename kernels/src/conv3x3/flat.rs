//! Flat tiles: output positions `q = oy*wq + ox` in `NR`-wide tiles over
//! the `oh x wq` grid (the columns past `ow` computed and dropped), for
//! outputs whose rows are too narrow for row-aligned tiles.

use super::Conv3x3Args;
use super::geometry::MAX_NR;
use super::rows::{PlaneRowsMut, RowTiles, copy_runs, row_tiles, row_tiles_pay};
use crate::act::Act;
use crate::conv1x1::{BoundedRows, MAX_TILE, Table, conv1x1_tile};
use crate::isa::Vector;

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
pub(super) fn conv3x3_body<V: Vector, const MR: usize, const NRV: usize, A: Act>(
    args: Conv3x3Args<'_>,
) {
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
    let rows = BoundedRows::new(rows, k).expect("tap offsets fit in usize");

    // One stack tile for every tail; the micro-kernel overwrites the part it uses.
    let mut tile = [0.0f32; MAX_TILE];
    if row_tiles_pay(ow, wq, n, lanes, nr) {
        // All rows: the same band type the threads' row bands use.
        let mut out = PlaneRowsMut::new(output, m, oh, ow);
        let t = RowTiles { g, m, packed, prepared, rows, rows_out: 0..oh };
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
                        output,
                        off,
                        oh * ow,
                    );
                } else {
                    conv1x1_tile::<V, MR, NRV, A, _>(k, pk, prepared, q0, rows, &mut tile, 0, nr);
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
                1 => conv1x1_tile::<V, MR, 1, A, _>(k, pk, prepared, q0, rows, &mut tile, 0, nr),
                2 => conv1x1_tile::<V, MR, 2, A, _>(k, pk, prepared, q0, rows, &mut tile, 0, nr),
                _ => conv1x1_tile::<V, MR, NRV, A, _>(k, pk, prepared, q0, rows, &mut tile, 0, nr),
            }
            let valid_rows = (m - blk * MR).min(MR);
            copy_runs::<V>(&tile, nr, &runs[..nruns], valid_rows, output, blk * MR, oh * ow);
        }
    }
}
