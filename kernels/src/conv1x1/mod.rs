//! 1x1 convolution, stride 1, as a GEMM over the contiguous H*W axis:
//! `C[m][n] = A(bias[m] + Σ_k W[m][k] · B[k][n])`, where `B` is the input
//! (`k` = input channel, `n` = pixel) and `C` the output. The same driver runs
//! the general path on an im2col matrix (`k` = input channel x kernel tap) and
//! the direct 3x3 kernels (rows of `B` at tap offsets).
//!
//! # Packed weight layout (bias-first, one block per `MR` output channels)
//! ```text
//! block b: [ bias[b*MR .. b*MR+MR] | W[b*MR .. +MR][0] | W[..][1] | ... | W[..][k-1] ]
//!           MR floats               MR floats (column k=0 of the block's rows) ...
//! ```
//! Rows past `m` in the last block are zero, so a block is always full and the
//! micro-kernel never branches on the M tail. A block is `(k + 1) * MR` floats.
//! `MR` depends on the ISA ([`tile`]), so packed weights belong to one ISA.
//!
//! # Driver
//! LOOP 1 walks `NR`-wide column tiles; LOOP 2 walks the `MR`-row blocks inside
//! one column tile so the `k x NR` panel of `B` stays in L1 across blocks.
//! Full tiles are stored straight into `C`; a column tail of whole vectors is
//! read straight from `B`, its last 1-4 columns go through a GEMV along the
//! channels (with 32 registers, inside the last full tile of each block:
//! `conv1x1_tile_plus`), and other tails are copied into a
//! zero-padded panel (no garbage lanes, no reads past `B`); any partial tile
//! is computed into a stack tile of which only the valid part is copied out.
//! The last full tile and a GEMV tail run block by block, so a block's
//! weights are read once while they are in L1 (a separate tail pass read all
//! of them again from L3).

#![allow(non_snake_case)]

mod microkernel;

pub(crate) use microkernel::{
    BoundedRows, Rows, Strided, Table, TileOut, conv1x1_tile, conv1x1_tile_plus, fits,
};

use crate::act::{Act, Activation, with_act};
use core::marker::PhantomData;

use crate::isa::{Isa, Job, RegisterTile, TileJob, Vector, dispatch};
use crate::lanes::Lanes;

/// The largest register tile of any ISA, in floats (AVX-512: 8 x 48); sizes
/// the stack tile tails are computed into.
pub(crate) const MAX_TILE: usize = 8 * 48;

/// The register tile `(MR, NR)` of `isa`: output channels x pixels.
pub fn tile(isa: Isa) -> (usize, usize) {
    let t = isa.kind().traits();
    (t.gemm_mr, t.gemm_nr)
}

/// Length of the packed weights for `m` output rows and `k` reduction terms
/// with `isa`'s tile: `ceil(m / MR) * (k + 1) * MR`. `None` on overflow.
pub fn packed_len(isa: Isa, m: usize, k: usize) -> Option<usize> {
    let (mr, _) = tile(isa);
    m.div_ceil(mr).checked_mul(k.checked_add(1)?)?.checked_mul(mr)
}

/// Length of the scratch buffer [`conv1x1`] needs for a reduction of `k`
/// with `isa` (`None` on overflow).
pub fn scratch_len(isa: Isa, k: usize) -> Option<usize> {
    k.checked_mul(tile(isa).1)
}

/// Packs row-major `weights[m][k]` and an optional `bias[m]` into `dst` in the
/// layout documented at the top of this module, for `isa`'s tile.
///
/// # Panics
/// If `weights.len() != m * k`, `bias` is not `m` long, or
/// `dst.len() != packed_len(isa, m, k)`.
pub fn pack_weights(
    isa: Isa,
    weights: &[f32],
    bias: Option<&[f32]>,
    m: usize,
    k: usize,
    dst: &mut [f32],
) {
    let (mr, _) = tile(isa);
    assert_eq!(Some(weights.len()), m.checked_mul(k), "weights must be m * k");
    if let Some(b) = bias {
        assert_eq!(b.len(), m, "bias must be m long");
    }
    assert_eq!(Some(dst.len()), packed_len(isa, m, k), "dst must be packed_len(m, k)");
    if dst.is_empty() {
        return;
    }
    for (blk, block) in dst.chunks_exact_mut((k + 1) * mr).enumerate() {
        block.fill(0.0);
        for r in 0..mr {
            let row = blk * mr + r;
            if row >= m {
                break;
            }
            block[r] = bias.map_or(0.0, |b| b[row]);
            for kk in 0..k {
                block[mr + kk * mr + r] = weights[row * k + kk];
            }
        }
    }
}

/// One 1x1-convolution (GEMM) problem on slices.
#[derive(Debug)]
pub struct Conv1x1Args<'a> {
    /// Output rows (channels) to compute; `packed` holds `ceil(m / MR)` blocks.
    pub m: usize,
    /// Reduction length (input channels, or im2col rows).
    pub k: usize,
    /// Columns (pixels) per row.
    pub n: usize,
    /// Packed weights for the same ISA (see [`pack_weights`]).
    pub packed: &'a [f32],
    /// Input matrix: row `kk` starts at `kk * ldb` and holds at least `n` values.
    pub b: &'a [f32],
    /// Row stride of `b`, in elements.
    pub ldb: usize,
    /// Output matrix: row `r` starts at `r * ldc` and receives `n` values.
    pub c: &'a mut [f32],
    /// Row stride of `c`, in elements.
    pub ldc: usize,
}

/// Computes `C = act(bias + W · B)` for the `m x n` output of `args` with
/// `isa`'s kernel (`conv1x1_<MR>x<NR>__<isa>`).
///
/// Writes exactly `c[r * ldc + j]` for `r < m`, `j < n`; nothing else, and
/// reads nothing outside the slices. Does not allocate.
///
/// # Panics
/// If any slice is shorter than the shapes imply, `ldc < n`, the sizes
/// overflow, or `scratch.len() < scratch_len(isa, k)`.
pub fn conv1x1(isa: Isa, act: Activation, args: Conv1x1Args<'_>, scratch: &mut [f32]) {
    let Conv1x1Args { m, k, n, packed, b, ldb, c, ldc } = args;
    let args = GemmArgs { m, k, n, packed, b, rows: Strided(ldb), c, ldc };
    gemm_dispatch(isa, act, args, scratch);
}

/// [`conv1x1`] with any crate-private row layout.
pub(crate) fn gemm_dispatch<R: Rows>(
    isa: Isa,
    act: Activation,
    args: GemmArgs<'_, R>,
    scratch: &mut [f32],
) {
    struct Run<'a, 'b, A, R: Rows>(GemmArgs<'a, R>, &'b mut [f32], core::marker::PhantomData<A>);
    impl<A: Act, R: Rows> Job for Run<'_, '_, A, R> {
        type Out = ();
        #[inline(always)]
        fn run<V: Vector>(self) {
            gemm::<V, A, R>(self.0, self.1)
        }
    }
    fn go<A: Act, R: Rows>(isa: Isa, args: GemmArgs<'_, R>, scratch: &mut [f32]) {
        dispatch(isa, Run::<A, R>(args, scratch, core::marker::PhantomData))
    }
    with_act!(act, go::<_, R>(isa, args, scratch))
}

/// A GEMM problem whose `B` rows start at `rows.at(kk)` (see [`Conv1x1Args`]).
#[derive(Debug)]
pub(crate) struct GemmArgs<'a, R: Rows> {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub packed: &'a [f32],
    pub b: &'a [f32],
    pub rows: R,
    pub c: &'a mut [f32],
    pub ldc: usize,
}

/// The GEMM with `V`'s register tile.
#[inline(always)]
pub(crate) fn gemm<V: Vector, A: Act, R: Rows>(args: GemmArgs<'_, R>, scratch: &mut [f32]) {
    struct Drive<'a, 'b, V, A, R: Rows>(GemmArgs<'a, R>, &'b mut [f32], PhantomData<(V, A)>);
    impl<V: Vector, A: Act, R: Rows> TileJob for Drive<'_, '_, V, A, R> {
        type Out = ();
        #[inline(always)]
        fn run<const MR: usize, const NRV: usize>(self) {
            drive::<V, MR, NRV, A, R>(self.0, self.1)
        }
    }
    V::Gemm::run(Drive::<V, A, R>(args, scratch, PhantomData))
}

#[inline(always)]
fn drive<V: Vector, const MR: usize, const NRV: usize, A: Act, R: Rows>(
    args: GemmArgs<'_, R>,
    scratch: &mut [f32],
) {
    let GemmArgs { m, k, n, packed, b, rows: brows, c, ldc } = args;
    if m == 0 || n == 0 {
        return;
    }
    let lanes = V::LANES;
    let nr = NRV * lanes;
    let brows = BoundedRows::new(brows, k).expect("input row offsets overflow");
    let max_row = brows.max();
    assert!(ldc >= n, "output row stride must cover n");
    let block_len = k.checked_add(1).and_then(|k1| k1.checked_mul(MR)).expect("k overflows");
    let blocks = m.div_ceil(MR);
    assert!(
        blocks.checked_mul(block_len).is_some_and(|len| packed.len() >= len),
        "packed weights too short"
    );
    assert!(k == 0 || fits(max_row, n, b.len()), "input too short");
    assert!((m - 1).checked_mul(ldc).is_some_and(|r| fits(r, n, c.len())), "output too short");
    assert!(k.checked_mul(nr).is_some_and(|len| scratch.len() >= len), "scratch too short");

    let t = TileArgs { k, b, brows, ldc, m, block_len, nr };
    let tail = n % nr;
    let full_end = n - tail;
    // A tail of whole vectors plus at most GEMV_MAX_COLS columns: the vectors
    // straight from `b` (they are in bounds), the last few columns as a
    // matrix-vector product along the channels, instead of a whole vector
    // per row for one to four useful lanes. It runs block by block right
    // after the last full tile, while the block's weights are still in L1/L2,
    // not as a pass that reads all the weights again (docs/experiments.md).
    let gemv_tail = tail > 0 && tail % lanes <= GEMV_MAX_COLS;
    let last_full = (gemv_tail && full_end > 0).then(|| full_end - nr);

    // The tail's columns, copied once into a panel that every block reads.
    let tail_kind = if gemv_tail {
        let (nv, r) = (tail / lanes, tail % lanes);
        let col0 = full_end + nv * lanes;
        // With 32 registers the last full tile of each whole block computes
        // the GEMV columns too ([`conv1x1_tile_plus`]); other blocks run the
        // GEMV on its own, over a `k x r` panel of the columns, copied once so
        // that row blocks do not fetch a cache line per reduction step each
        // (docs/experiments.md).
        let fuse =
            last_full.is_some() && V::REGISTERS >= 32 && <V::V8 as Vector>::LANES == MR && r > 0;
        if r > 0 && !(fuse && m.is_multiple_of(MR)) {
            for (kk, row) in scratch[..k * r].chunks_exact_mut(r).enumerate() {
                let src = brows.at(kk) + col0;
                row.copy_from_slice(&b[src..src + r]);
            }
        }
        Tail::Gemv { last_full, full_end, nv, r, col0, fuse }
    } else if tail > 0 {
        // A zero-padded k x width panel, so every lane the micro-kernel reads
        // is a real zero, then narrow tiles over it.
        let width = tail.div_ceil(lanes) * lanes;
        for (kk, row) in scratch[..k * width].chunks_exact_mut(width).enumerate() {
            let src = brows.at(kk) + full_end;
            row[..tail].copy_from_slice(&b[src..src + tail]);
            row[tail..].fill(0.0);
        }
        Tail::Padded { n0: full_end, cols: tail, width }
    } else {
        Tail::None
    };
    let scratch = &*scratch;
    let main_end = last_full.unwrap_or(full_end);
    // LOOP 1: full column tiles of NR pixels; LOOP 2: the row blocks over
    // one column panel of B (it stays in L1/L2 across blocks). Row blocks
    // outside the column tiles gained nothing, even with all of B in L2
    // (docs/experiments.md).
    for n0 in (0..main_end).step_by(nr) {
        for blk in 0..blocks {
            full_tile::<V, MR, NRV, A, R>(&t, packed, c, n0, blk);
        }
    }
    for blk in 0..blocks {
        tail_block::<V, MR, NRV, A, R>(&t, packed, c, blk, &tail_kind, scratch);
    }
}

/// The columns past the full tiles, and how they run.
enum Tail {
    /// None: `n` is a multiple of the tile width.
    None,
    /// `nv` whole vectors from `full_end` read in place, then `r` columns
    /// from `col0` as a GEMV (inside the last full tile, which starts at
    /// `last_full` and runs with the tail block by block, when `fuse`).
    Gemv { last_full: Option<usize>, full_end: usize, nv: usize, r: usize, col0: usize, fuse: bool },
    /// `cols` columns from `n0` through a zero-padded panel `width` wide.
    Padded { n0: usize, cols: usize, width: usize },
}

/// Block `blk`'s last full tile (when a GEMV tail follows it) and its tail.
#[inline(always)]
fn tail_block<V: Vector, const MR: usize, const NRV: usize, A: Act, R: Rows>(
    t: &TileArgs<'_, R>,
    packed: &[f32],
    c: &mut [f32],
    blk: usize,
    tail: &Tail,
    panel: &[f32],
) {
    let TileArgs { k, ldc, m, block_len, nr, .. } = *t;
    match *tail {
        Tail::None => {}
        Tail::Gemv { last_full, full_end, nv, r, col0, fuse } => {
            let full_rows = (m - blk * MR) >= MR;
            let fused = fuse && full_rows && last_full.is_some();
            match last_full {
                Some(n0) if fused => {
                    tile_plus::<V, MR, NRV, A, R>(t, packed, c, n0, blk, r, col0 - n0)
                }
                Some(n0) => full_tile::<V, MR, NRV, A, R>(t, packed, c, n0, blk),
                None => {}
            }
            if nv > 0 {
                vector_tail::<V, MR, A, R>(t, packed, c, full_end, nv, blk);
            }
            if r > 0 && !fused {
                gemv_block::<V, MR, A>(t, packed, &panel[..k * r], r, c, col0, blk);
            }
        }
        Tail::Padded { n0, cols, width } => {
            let panel = &panel[..k * width];
            let prows = BoundedRows::new(Strided(width), k).expect("the panel fits in memory");
            let pk = &packed[blk * block_len..(blk + 1) * block_len];
            let rows = (m - blk * MR).min(MR);
            let mut tile = [0.0f32; MAX_TILE];
            let tl = &mut tile;
            match width / V::LANES {
                1 => conv1x1_tile::<V, MR, 1, A, _>(k, pk, panel, 0, prows, tl, 0, nr),
                2 => conv1x1_tile::<V, MR, 2, A, _>(k, pk, panel, 0, prows, tl, 0, nr),
                _ => conv1x1_tile::<V, MR, NRV, A, _>(k, pk, panel, 0, prows, tl, 0, nr),
            }
            copy_tile(&tile, nr, rows, cols, c, blk * MR * ldc + n0, ldc);
        }
    }
}

/// What every tile of one GEMM shares.
struct TileArgs<'a, R: Rows> {
    k: usize,
    b: &'a [f32],
    brows: BoundedRows<R>,
    ldc: usize,
    m: usize,
    block_len: usize,
    nr: usize,
}

/// The full `MR x NR` tile of block `blk` at columns `n0..n0 + NR`: straight
/// into `c`, or through a stack tile for a last block with fewer rows.
#[inline(always)]
fn full_tile<V: Vector, const MR: usize, const NRV: usize, A: Act, R: Rows>(
    t: &TileArgs<'_, R>,
    packed: &[f32],
    c: &mut [f32],
    n0: usize,
    blk: usize,
) {
    let TileArgs { k, b, brows, ldc, m, block_len, nr } = *t;
    let pk = &packed[blk * block_len..(blk + 1) * block_len];
    let rows = (m - blk * MR).min(MR);
    if rows == MR {
        let off = blk * MR * ldc + n0;
        conv1x1_tile::<V, MR, NRV, A, R>(k, pk, b, n0, brows, c, off, ldc);
    } else {
        let mut tile = [0.0f32; MAX_TILE];
        conv1x1_tile::<V, MR, NRV, A, R>(k, pk, b, n0, brows, &mut tile, 0, nr);
        copy_tile(&tile, nr, rows, nr, c, blk * MR * ldc + n0, ldc);
    }
}

/// [`full_tile`] of a whole block fused with the `r` GEMV columns that start
/// `extra` columns after `n0` ([`conv1x1_tile_plus`]).
#[inline(always)]
fn tile_plus<V: Vector, const MR: usize, const NRV: usize, A: Act, R: Rows>(
    t: &TileArgs<'_, R>,
    packed: &[f32],
    c: &mut [f32],
    n0: usize,
    blk: usize,
    r: usize,
    extra: usize,
) {
    let TileArgs { k, b, brows, ldc, block_len, .. } = *t;
    let pk = &packed[blk * block_len..(blk + 1) * block_len];
    let out = TileOut::of_slice(c, blk * MR * ldc + n0, ldc, MR, extra + r);
    match r {
        1 => conv1x1_tile_plus::<V, V::V8, MR, NRV, 1, A, R>(k, pk, b, n0, brows, out, extra),
        2 => conv1x1_tile_plus::<V, V::V8, MR, NRV, 2, A, R>(k, pk, b, n0, brows, out, extra),
        3 => conv1x1_tile_plus::<V, V::V8, MR, NRV, 3, A, R>(k, pk, b, n0, brows, out, extra),
        _ => conv1x1_tile_plus::<V, V::V8, MR, NRV, 4, A, R>(k, pk, b, n0, brows, out, extra),
    }
}

/// The `nv` (1 or 2) whole vectors of a column tail at `n0`, block `blk`.
#[inline(always)]
fn vector_tail<V: Vector, const MR: usize, A: Act, R: Rows>(
    t: &TileArgs<'_, R>,
    packed: &[f32],
    c: &mut [f32],
    n0: usize,
    nv: usize,
    blk: usize,
) {
    let TileArgs { k, b, brows, ldc, m, block_len, nr } = *t;
    let pk = &packed[blk * block_len..(blk + 1) * block_len];
    let rows = (m - blk * MR).min(MR);
    let mut tile = [0.0f32; MAX_TILE];
    let direct = rows == MR;
    let (cc, off, ld): (&mut [f32], usize, usize) =
        if direct { (&mut *c, blk * MR * ldc + n0, ldc) } else { (&mut tile, 0, nr) };
    match nv {
        1 => conv1x1_tile::<V, MR, 1, A, R>(k, pk, b, n0, brows, cc, off, ld),
        _ => conv1x1_tile::<V, MR, 2, A, R>(k, pk, b, n0, brows, cc, off, ld),
    }
    if !direct {
        copy_tile(&tile, nr, rows, nv * V::LANES, c, blk * MR * ldc + n0, ldc);
    }
}

/// The `r` GEMV columns at `col0` of one block, 8 lanes per vector.
#[inline(always)]
fn gemv_block<V: Vector, const MR: usize, A: Act>(
    t: &TileArgs<'_, impl Rows>,
    packed: &[f32],
    panel: &[f32],
    r: usize,
    c: &mut [f32],
    col0: usize,
    blk: usize,
) {
    let (k, ldc, block_len) = (t.k, t.ldc, t.block_len);
    let pk = &packed[blk * block_len..(blk + 1) * block_len];
    let rows = (t.m - blk * MR).min(MR);
    let mut put = |j: usize, col: &[f32; 8]| {
        for (i, v) in col.iter().enumerate().take(rows) {
            c[(blk * MR + i) * ldc + col0 + j] = A::apply_scalar(*v);
        }
    };
    let p = Strided(r);
    match r {
        1 => gemv_cols::<V::V8, MR, 1, _>(k, pk, panel, p, 0)
            .iter()
            .enumerate()
            .for_each(|(j, v)| put(j, v)),
        2 => gemv_cols::<V::V8, MR, 2, _>(k, pk, panel, p, 0)
            .iter()
            .enumerate()
            .for_each(|(j, v)| put(j, v)),
        3 => gemv_cols::<V::V8, MR, 3, _>(k, pk, panel, p, 0)
            .iter()
            .enumerate()
            .for_each(|(j, v)| put(j, v)),
        _ => gemv_cols::<V::V8, MR, 4, _>(k, pk, panel, p, 0)
            .iter()
            .enumerate()
            .for_each(|(j, v)| put(j, v)),
    }
}

/// Columns past the last whole vector that [`gemv_cols`] handles; more go
/// through a zero-padded panel and a whole vector.
const GEMV_MAX_COLS: usize = 4;

/// `bias[i] + Σ_kk w[kk][i] · b[kk][col0 + j]` for the block's `MR` rows and
/// `RC <= GEMV_MAX_COLS` columns `j`, vectorised along the rows (`MR <= 8`
/// lanes of an 8-lane vector `G`). Four partial sums over `kk mod 4` break
/// the FMA latency chain; the order is fixed, so results do not depend on
/// threading. Lanes `MR..8` may hold the next step's weights; they are never
/// stored.
#[inline(always)]
fn gemv_cols<G: Vector, const MR: usize, const RC: usize, R: Rows>(
    k: usize,
    pk: &[f32],
    b: &[f32],
    rows: R,
    col0: usize,
) -> [[f32; 8]; RC] {
    const { assert!(MR <= 8) };
    let w = &pk[MR..(k + 1) * MR];
    let mut acc = [[G::zero(); 4]; RC];
    // Steps whose `LANES` weights lie inside `w` (all of them when MR ==
    // LANES; all but the last with AVX2's 6 rows in 8 lanes) load them
    // whole; the rest copy through a buffer, outside the hot loop: with that
    // copy's `memcpy` call inside it, the accumulators lived on the stack and
    // the AVX2 tail of a 7x7 layer took 1.6x the time of its 48 columns.
    let whole = if w.len() >= G::LANES { ((w.len() - G::LANES) / MR + 1).min(k) } else { 0 };
    let k4 = whole / 4 * 4;
    for kk in (0..k4).step_by(4) {
        // Literal partial-sum indices (not a loop over `s`), so `acc` stays
        // in registers.
        gemv_step::<G, MR, RC, R, true>(w, b, rows, col0, kk, 0, &mut acc);
        gemv_step::<G, MR, RC, R, true>(w, b, rows, col0, kk + 1, 1, &mut acc);
        gemv_step::<G, MR, RC, R, true>(w, b, rows, col0, kk + 2, 2, &mut acc);
        gemv_step::<G, MR, RC, R, true>(w, b, rows, col0, kk + 3, 3, &mut acc);
    }
    for kk in k4..k {
        gemv_step::<G, MR, RC, R, false>(w, b, rows, col0, kk, kk % 4, &mut acc);
    }
    let bias = G::load_partial(&pk[..MR], 0);
    // A loop, not `acc.map(..)`: closures lose the ISA's target features.
    let mut out = [[0.0f32; 8]; RC];
    for (o, a) in out.iter_mut().zip(acc.iter()) {
        let v = bias.add((a[0].add(a[1])).add(a[2].add(a[3]))).to_array();
        o.copy_from_slice(&v[..8]);
    }
    out
}

/// One reduction step of [`gemv_cols`] into partial sum `s`. A function, not
/// a closure: a closure is compiled with its defining function's target
/// features (none, for these generic bodies), so its intrinsics would not
/// inline.
#[inline(always)]
fn gemv_step<G: Vector, const MR: usize, const RC: usize, R: Rows, const WHOLE: bool>(
    w: &[f32],
    b: &[f32],
    rows: R,
    col0: usize,
    kk: usize,
    s: usize,
    acc: &mut [[G; 4]; RC],
) {
    let at = kk * MR;
    let wk =
        if WHOLE || at + G::LANES <= w.len() { G::load(w, at) } else { G::load_partial(w, at) };
    let base = rows.at(kk) + col0;
    let xs = &b[base..base + RC];
    for (a, &x) in acc.iter_mut().zip(xs) {
        a[s] = G::splat(x).mul_add(wk, a[s]);
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
