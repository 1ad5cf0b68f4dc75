//! 1x1 convolution, stride 1, as a GEMM over the contiguous H*W axis:
//! `C[m][n] = A(bias[m] + Σ_k W[m][k] · B[k][n])`, where `B` is the input
//! (`k` = input channel, `n` = pixel) and `C` the output. The same driver runs
//! the general path on an im2col matrix (`k` = input channel x kernel tap).
//!
//! # Packed weight layout (bias-first, one block per `MR` output channels)
//! ```text
//! block b: [ bias[b*MR .. b*MR+MR] | W[b*MR .. +MR][0] | W[..][1] | ... | W[..][k-1] ]
//!           MR floats               MR floats (column k=0 of the block's rows) ...
//! ```
//! Rows past `m` in the last block are zero, so a block is always full and the
//! micro-kernel never branches on the M tail. A block is `(k + 1) * MR` floats.
//!
//! # Driver
//! LOOP 1 walks `NR`-wide column tiles; LOOP 2 walks the `MR`-row blocks inside
//! one column tile so the `k x NR` panel of `B` stays in L1 across blocks.
//! Full tiles are stored straight into `C`; a column tail is first copied into a
//! zero-padded panel (no garbage lanes, no reads past `B`), and any tail tile is
//! computed into a stack tile of which only the valid part is copied out.

#![allow(non_snake_case)]

mod microkernel;

pub use microkernel::{Rows, Strided, Table, conv1x1_tile};

use crate::act::Act;
use crate::lanes::LANES;

/// Output channels per register tile.
#[cfg(target_feature = "avx512f")]
pub const MR: usize = 8;
/// Vectors per register-tile row (`NR = NRV * LANES` pixels).
#[cfg(target_feature = "avx512f")]
pub const NRV: usize = 3;
/// Output channels per register tile.
#[cfg(not(target_feature = "avx512f"))]
pub const MR: usize = 6;
/// Vectors per register-tile row (`NR = NRV * LANES` pixels).
#[cfg(not(target_feature = "avx512f"))]
pub const NRV: usize = 2;
/// Pixels per register tile.
pub const NR: usize = NRV * LANES;

/// The kernel's name, `conv1x1_<MR>x<NR>__<lanes>`.
#[cfg(target_feature = "avx512f")]
pub const NAME: &str = "conv1x1_8x48__x16";
/// The kernel's name, `conv1x1_<MR>x<NR>__<lanes>`.
#[cfg(not(target_feature = "avx512f"))]
pub const NAME: &str = "conv1x1_6x16__x8";

/// Length of the packed weights for `m` output rows and `k` reduction terms:
/// `ceil(m / MR) * (k + 1) * MR`. `None` on overflow.
pub fn packed_len(m: usize, k: usize) -> Option<usize> {
    m.div_ceil(MR).checked_mul(k.checked_add(1)?)?.checked_mul(MR)
}

/// Length of the scratch buffer [`conv1x1`] needs for a reduction of `k`.
pub fn scratch_len(k: usize) -> usize {
    k * NR
}

/// Packs row-major `weights[m][k]` and an optional `bias[m]` into `dst` in the
/// layout documented at the top of this module.
///
/// # Panics
/// If `weights.len() != m * k`, `bias` is not `m` long, or `dst.len() != packed_len(m, k)`.
pub fn pack_weights(weights: &[f32], bias: Option<&[f32]>, m: usize, k: usize, dst: &mut [f32]) {
    assert_eq!(weights.len(), m * k, "weights must be m * k");
    if let Some(b) = bias {
        assert_eq!(b.len(), m, "bias must be m long");
    }
    assert_eq!(Some(dst.len()), packed_len(m, k), "dst must be packed_len(m, k)");
    for (blk, block) in dst.chunks_exact_mut((k + 1) * MR).enumerate() {
        block.fill(0.0);
        for r in 0..MR {
            let row = blk * MR + r;
            if row >= m {
                break;
            }
            block[r] = bias.map_or(0.0, |b| b[row]);
            for kk in 0..k {
                block[MR + kk * MR + r] = weights[row * k + kk];
            }
        }
    }
}

/// One 1x1-convolution (GEMM) problem on slices.
#[derive(Debug)]
pub struct Conv1x1Args<'a, R: Rows> {
    /// Output rows (channels) to compute; `packed` holds `ceil(m / MR)` blocks.
    pub m: usize,
    /// Reduction length (input channels, or im2col rows).
    pub k: usize,
    /// Columns (pixels) per row.
    pub n: usize,
    /// Packed weights, see the module docs.
    pub packed: &'a [f32],
    /// Input matrix: row `kk` starts at `rows.at(kk)` and holds at least `n` values.
    pub b: &'a [f32],
    /// Where each row of `b` starts ([`Strided`] for a plain matrix).
    pub rows: R,
    /// Output matrix: row `r` starts at `r * ldc` and receives `n` values.
    pub c: &'a mut [f32],
    /// Row stride of `c`, in elements.
    pub ldc: usize,
}

/// Computes `C = A(bias + W · B)` for the `m x n` output of `args`.
///
/// Writes exactly `c[r * ldc + j]` for `r < m`, `j < n`; nothing else.
///
/// # Panics
/// If any slice is shorter than the shapes imply, `ldc < n`, or
/// `scratch.len() < scratch_len(k)`.
pub fn conv1x1<A: Act, R: Rows>(args: Conv1x1Args<'_, R>, scratch: &mut [f32]) {
    let Conv1x1Args { m, k, n, packed, b, rows: brows, c, ldc } = args;
    if m == 0 || n == 0 {
        return;
    }
    let max_row = if k == 0 { 0 } else { brows.max(k) };
    assert!(ldc >= n, "output row stride must cover n");
    let block_len = (k + 1) * MR;
    let blocks = m.div_ceil(MR);
    assert!(packed.len() >= blocks * block_len, "packed weights too short");
    assert!(k == 0 || b.len() >= max_row + n, "input too short");
    assert!(c.len() >= (m - 1) * ldc + n, "output too short");
    assert!(scratch.len() >= scratch_len(k), "scratch too short");

    // LOOP 1: column tiles of NR pixels.
    let mut n0 = 0;
    while n0 < n {
        let cols = (n - n0).min(NR);
        if cols == NR {
            // LOOP 2: row blocks over one full-width column panel of B.
            for blk in 0..blocks {
                let pk = &packed[blk * block_len..(blk + 1) * block_len];
                let rows = (m - blk * MR).min(MR);
                if rows == MR {
                    conv1x1_tile::<MR, NRV, A, R>(
                        k,
                        pk,
                        b,
                        n0,
                        brows,
                        max_row,
                        c,
                        blk * MR * ldc + n0,
                        ldc,
                    );
                } else {
                    let mut tile = [0.0f32; MR * NR];
                    conv1x1_tile::<MR, NRV, A, R>(k, pk, b, n0, brows, max_row, &mut tile, 0, NR);
                    copy_tile(&tile, NR, rows, cols, c, blk * MR * ldc + n0, ldc);
                }
            }
        } else if cols % LANES <= GEMV_MAX_COLS {
            // Column tail of whole vectors plus at most GEMV_MAX_COLS columns:
            // the vectors straight from `b` (they are in bounds), the last few
            // columns as a matrix-vector product along the channels, instead
            // of a whole vector per row for one to four useful lanes.
            let nv = cols / LANES;
            let (r, col0) = (cols % LANES, n0 + nv * LANES);
            for blk in 0..blocks {
                let pk = &packed[blk * block_len..(blk + 1) * block_len];
                let rows = (m - blk * MR).min(MR);
                if nv > 0 {
                    let mut tile = [0.0f32; MR * NR];
                    let direct = rows == MR;
                    let (cc, off, ld): (&mut [f32], usize, usize) = if direct {
                        (&mut *c, blk * MR * ldc + n0, ldc)
                    } else {
                        (&mut tile, 0, NR)
                    };
                    match nv {
                        1 => conv1x1_tile::<MR, 1, A, R>(k, pk, b, n0, brows, max_row, cc, off, ld),
                        _ => conv1x1_tile::<MR, 2, A, R>(k, pk, b, n0, brows, max_row, cc, off, ld),
                    }
                    if !direct {
                        copy_tile(&tile, NR, rows, nv * LANES, c, blk * MR * ldc + n0, ldc);
                    }
                }
                let mut put = |j: usize, col: &[f32; 8]| {
                    for (i, v) in col.iter().enumerate().take(rows) {
                        c[(blk * MR + i) * ldc + col0 + j] = A::apply_scalar(*v);
                    }
                };
                match r {
                    0 => {}
                    1 => gemv_cols::<1, R>(k, pk, b, brows, col0)
                        .iter()
                        .enumerate()
                        .for_each(|(j, v)| put(j, v)),
                    2 => gemv_cols::<2, R>(k, pk, b, brows, col0)
                        .iter()
                        .enumerate()
                        .for_each(|(j, v)| put(j, v)),
                    3 => gemv_cols::<3, R>(k, pk, b, brows, col0)
                        .iter()
                        .enumerate()
                        .for_each(|(j, v)| put(j, v)),
                    _ => gemv_cols::<4, R>(k, pk, b, brows, col0)
                        .iter()
                        .enumerate()
                        .for_each(|(j, v)| put(j, v)),
                }
            }
        } else {
            // Column tail: a zero-padded k x NR panel, so every lane the
            // micro-kernel reads is a real zero, then narrow tiles over it.
            let nrv = cols.div_ceil(LANES);
            let width = nrv * LANES;
            let panel = &mut scratch[..k * width];
            for kk in 0..k {
                let row = &mut panel[kk * width..(kk + 1) * width];
                let src = brows.at(kk) + n0;
                row[..cols].copy_from_slice(&b[src..src + cols]);
                row[cols..].fill(0.0);
            }
            for blk in 0..blocks {
                let pk = &packed[blk * block_len..(blk + 1) * block_len];
                let rows = (m - blk * MR).min(MR);
                let mut tile = [0.0f32; MR * NR];
                tail_tile::<A>(nrv, k, pk, panel, width, &mut tile);
                copy_tile(&tile, NR, rows, cols, c, blk * MR * ldc + n0, ldc);
            }
        }
        n0 += cols;
    }
}

/// Columns past the last whole vector that [`gemv_cols`] handles; more go
/// through a zero-padded panel and a whole vector.
const GEMV_MAX_COLS: usize = 4;

/// `bias[i] + Σ_kk w[kk][i] · b[kk][col0 + j]` for the block's `MR` rows and
/// `RC <= GEMV_MAX_COLS` columns `j`, vectorised along the rows (`MR <= 8`
/// lanes of an `f32x8`). Four partial sums over `kk mod 4` break the FMA
/// latency chain; the order is fixed, so results do not depend on threading.
#[inline(always)]
fn gemv_cols<const RC: usize, R: Rows>(
    k: usize,
    pk: &[f32],
    b: &[f32],
    rows: R,
    col0: usize,
) -> [[f32; 8]; RC] {
    type W = wide::f32x8;
    const { assert!(MR <= 8) };
    let w = &pk[MR..(k + 1) * MR];
    let mut acc = [[W::ZERO; 4]; RC];
    let step = |kk: usize, s: usize, acc: &mut [[W; 4]; RC]| {
        let wk = W::from(&w[kk * MR..(kk + 1) * MR]);
        let base = rows.at(kk) + col0;
        let xs = &b[base..base + RC];
        for (a, &x) in acc.iter_mut().zip(xs) {
            a[s] = W::splat(x).mul_add(wk, a[s]);
        }
    };
    let k4 = k / 4 * 4;
    for kk in (0..k4).step_by(4) {
        step(kk, 0, &mut acc);
        step(kk + 1, 1, &mut acc);
        step(kk + 2, 2, &mut acc);
        step(kk + 3, 3, &mut acc);
    }
    for kk in k4..k {
        step(kk, kk - k4, &mut acc);
    }
    let bias = W::from(&pk[..MR]);
    acc.map(|a| (bias + ((a[0] + a[1]) + (a[2] + a[3]))).to_array())
}

/// Runs the micro-kernel with `nrv` (<= NRV) vectors per row into `tile` (row stride NR).
#[inline(always)]
fn tail_tile<A: Act>(
    nrv: usize,
    k: usize,
    pk: &[f32],
    panel: &[f32],
    width: usize,
    tile: &mut [f32],
) {
    let rows = Strided(width);
    let max_row = k.saturating_sub(1) * width;
    match nrv {
        1 => conv1x1_tile::<MR, 1, A, _>(k, pk, panel, 0, rows, max_row, tile, 0, NR),
        2 if NRV >= 2 => conv1x1_tile::<MR, 2, A, _>(k, pk, panel, 0, rows, max_row, tile, 0, NR),
        _ => conv1x1_tile::<MR, NRV, A, _>(k, pk, panel, 0, rows, max_row, tile, 0, NR),
    }
}

/// Copies the valid `rows x cols` corner of a stack tile into `c`.
#[inline(always)]
fn copy_tile(
    tile: &[f32],
    ld_tile: usize,
    rows: usize,
    cols: usize,
    c: &mut [f32],
    off: usize,
    ldc: usize,
) {
    for r in 0..rows {
        c[off + r * ldc..off + r * ldc + cols]
            .copy_from_slice(&tile[r * ld_tile..r * ld_tile + cols]);
    }
}
