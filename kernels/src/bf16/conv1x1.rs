//! bf16 1x1 convolution, stride 1, as a GEMM over the contiguous H*W axis
//! (`conv1x1_bf16_8x48__<isa>`):
//! `C[r][j] = A(bias[r] + Σ_kk bf16(W[r][kk]) · bf16(B[kk][j]))`, products
//! exact, sums in f32, bias and activation in f32, f32 output (see
//! [`super`] for the rounding and NaN rules).
//!
//! # Packed weight layout (bias-first, one block per `MR = 8` output rows)
//! ```text
//! block b (u32 words):
//!   [ bias[8b] .. bias[8b+7]             8 words: f32 bits
//!   | pair 0:   W[8b+0][0,1] .. W[8b+7][0,1]   8 words: bf16 of k=0 in bits 0..16, k=1 in 16..32
//!   | pair 1:   W[8b+0][2,3] .. W[8b+7][2,3]
//!   | ...
//!   | pair kp-1                         (an odd k: the high half is 0) ]
//! ```
//! `kp = ceil(k/2)`; a block is `(kp + 1) * 8` words; rows past `m` in the
//! last block are zero, so the micro-kernel never branches on the M tail.
//! Weights are rounded (RNE, [`super::f32_to_bf16`]) once, here. The layout
//! is the same for every [`Bf16Isa`].
//!
//! # Activations
//! [`conv1x1_bf16`] takes f32 rows and converts a band of columns at a time
//! into the pair-interleaved panel `[kp][cols][2 x bf16]` in the caller's
//! scratch (one `vcvtne2ps2bf16` + one `vpermw` per 16 pixels x 2 channels),
//! then runs every output row over that band; a band is at most
//! [`BAND_WORDS`] words, so it stays in L2 while all row blocks read it.
//! [`conv1x1_bf16_paired`] takes a panel a producer wrote in that layout
//! ([`super::pack_panel`]) and reads it in place.
//!
//! # Driver
//! LOOP 1 walks 48-pixel column tiles, LOOP 2 the 8-row blocks over one
//! column tile (its `kp x 48` panel strip stays in L1/L2 across blocks).
//! Whole tiles of whole blocks are stored straight into `C`; a block with
//! fewer than 8 rows, or the last `n % 48` columns, go through a stack tile
//! of which only the valid part is copied out. A tail of 1-4 columns (7x7
//! and 14x14 planes) is instead a GEMV over the block's 8 rows
//! (`vdpbf16ps ymm`, one per pair and column), run block by block right after
//! the block's last full tile: a 16-lane tile for one useful column cost 8 of
//! the block's 32 `vdpbf16ps` per pair on a 7x7 plane. The column tail reads whole
//! vectors from a zero-padded panel (the converted band has its width
//! rounded up to 16 with zero pairs; a caller's panel has its tail copied
//! into scratch first), so no lane is garbage and nothing is read past a
//! slice.

use super::convert::{PanelSrc, convert_rows, f32_to_bf16, input_fits, panel_len};
use super::microkernel::{fits, tile};
use super::simd::Simd;
use super::{Bf16Isa, Bf16Job, LANES, dispatch};
use crate::act::Activation;

/// Output rows per register tile (and per packed block).
pub const MR: usize = 8;
/// Pixels per register tile: 3 vectors of 16 lanes.
pub const NR: usize = 48;
/// Vectors of 16 lanes per register tile row.
const NRV: usize = NR / LANES;

/// The most panel words one band of [`conv1x1_bf16`] converts: 96 Ki words =
/// 384 KiB, which leaves room in a 1 MiB L2 for the weights streamed past it
/// (all MobileOne S0/S1 1x1 layers at 28x28 and below fit in one band).
pub const BAND_WORDS: usize = 96 * 1024;

/// The name of the kernel `isa` runs: `conv1x1_bf16_8x48__avx512bf16` or
/// `conv1x1_bf16_8x48__emulated`.
pub fn kernel_name(isa: Bf16Isa) -> &'static str {
    match isa.kind() {
        super::Bf16Kind::Avx512Bf16 => "conv1x1_bf16_8x48__avx512bf16",
        super::Bf16Kind::Emulated => "conv1x1_bf16_8x48__emulated",
    }
}

/// Length in `u32` words of the packed weights for `m` output rows and `k`
/// reduction terms: `ceil(m / 8) * (ceil(k / 2) + 1) * 8`. `None` on overflow.
pub fn packed_len(m: usize, k: usize) -> Option<usize> {
    m.div_ceil(MR).checked_mul(k.div_ceil(2).checked_add(1)?)?.checked_mul(MR)
}

/// Pixels per band of [`conv1x1_bf16`] for a reduction of `k`: a multiple of
/// 48, at least 48, at most [`BAND_WORDS`] / `ceil(k/2)` when that allows.
pub(crate) fn band_cols(k: usize) -> usize {
    let kp = k.div_ceil(2).max(1);
    (BAND_WORDS / kp / NR * NR).max(NR)
}

/// Length in `u32` words of the scratch both entry points need for a
/// reduction of `k` over `n` pixels: `ceil(k/2) * round_up(min(n, band), 16)`
/// (the band is a multiple of 48 chosen from `k`, see [`BAND_WORDS`]).
/// `None` on overflow.
pub fn scratch_len(k: usize, n: usize) -> Option<usize> {
    let cols = n.min(band_cols(k));
    k.div_ceil(2).checked_mul(cols.checked_next_multiple_of(LANES)?)
}

/// Rounds row-major `weights[m][k]` to bf16 and packs them with an optional
/// f32 `bias[m]` into `dst` in the layout documented at the top of this
/// module.
///
/// # Panics
/// If `weights.len() != m * k`, `bias` is not `m` long, or
/// `dst.len() != packed_len(m, k)`.
pub fn pack_weights(weights: &[f32], bias: Option<&[f32]>, m: usize, k: usize, dst: &mut [u32]) {
    assert_eq!(Some(weights.len()), m.checked_mul(k), "weights must be m * k");
    if let Some(b) = bias {
        assert_eq!(b.len(), m, "bias must be m long");
    }
    assert_eq!(Some(dst.len()), packed_len(m, k), "dst must be packed_len(m, k)");
    if dst.is_empty() {
        return;
    }
    let kp = k.div_ceil(2);
    for (blk, block) in dst.chunks_exact_mut((kp + 1) * MR).enumerate() {
        block.fill(0);
        for r in 0..MR {
            let row = blk * MR + r;
            if row >= m {
                break;
            }
            block[r] = bias.map_or(0.0f32, |b| b[row]).to_bits();
            let w = &weights[row * k..(row + 1) * k];
            for p in 0..kp {
                let lo = u32::from(f32_to_bf16(w[2 * p]));
                let hi = w.get(2 * p + 1).map_or(0, |&x| u32::from(f32_to_bf16(x)));
                block[MR + p * MR + r] = lo | hi << 16;
            }
        }
    }
}

/// One bf16 1x1-convolution (GEMM) problem with f32 input rows.
#[derive(Debug)]
pub struct Conv1x1Bf16Args<'a> {
    /// Output rows (channels); `packed` holds `ceil(m / 8)` blocks.
    pub m: usize,
    /// Reduction length (input channels).
    pub k: usize,
    /// Columns (pixels) per row.
    pub n: usize,
    /// Packed weights ([`pack_weights`] with the same `m` and `k`).
    pub packed: &'a [u32],
    /// f32 input: row `kk` starts at `kk * ldb` and holds at least `n` values.
    pub b: &'a [f32],
    /// Row stride of `b`, in elements.
    pub ldb: usize,
    /// f32 output: row `r` starts at `r * ldc` and receives `n` values.
    pub c: &'a mut [f32],
    /// Row stride of `c`, in elements.
    pub ldc: usize,
}

/// One bf16 GEMM problem whose input is already a pair-interleaved panel
/// (see [`super::pack_panel`]).
#[derive(Debug)]
pub struct Conv1x1Bf16PairedArgs<'a> {
    /// Output rows (channels); `packed` holds `ceil(m / 8)` blocks.
    pub m: usize,
    /// Reduction length (input channels); the panel has `ceil(k / 2)` rows.
    pub k: usize,
    /// Columns (pixels) per row.
    pub n: usize,
    /// Packed weights ([`pack_weights`] with the same `m` and `k`).
    pub packed: &'a [u32],
    /// Pair panel: word `p * ldp + j` holds channels `2p` (bits 0..16) and
    /// `2p + 1` (bits 16..32) of pixel `j`, as bf16.
    pub panel: &'a [u32],
    /// Row stride of `panel`, in words.
    pub ldp: usize,
    /// f32 output: row `r` starts at `r * ldc` and receives `n` values.
    pub c: &'a mut [f32],
    /// Row stride of `c`, in elements.
    pub ldc: usize,
}

/// Computes `C = act(bias + bf16(W) · bf16(B))` for the `m x n` output of
/// `args` with `isa`'s kernel ([`kernel_name`]), converting `B` to the pair
/// panel a band at a time in `scratch`.
///
/// Writes exactly `c[r * ldc + j]` for `r < m`, `j < n`; nothing else, and
/// reads nothing outside the slices. Does not allocate. The contents of
/// `scratch` on entry do not matter.
///
/// # Panics
/// If any slice is shorter than the shapes imply (`packed` than
/// [`packed_len`], `b` than `(k - 1) * ldb + n`, `c` than `(m - 1) * ldc + n`,
/// `scratch` than [`scratch_len`]), `ldc < n`, or the sizes overflow.
pub fn conv1x1_bf16(isa: Bf16Isa, act: Activation, args: Conv1x1Bf16Args<'_>, scratch: &mut [u32]) {
    let Conv1x1Bf16Args { m, k, n, packed, b, ldb, c, ldc } = args;
    check_common(m, k, n, packed, c, ldc, scratch);
    assert!(input_fits(b.len(), k, ldb, 0, n), "input too short");
    if m == 0 || n == 0 {
        return;
    }
    struct Run<'a, const RELU: bool> {
        g: Gemm<'a>,
        b: &'a [f32],
        ldb: usize,
        scratch: &'a mut [u32],
    }
    impl<const RELU: bool> Bf16Job for Run<'_, RELU> {
        type Out = ();
        #[inline(always)]
        fn run<S: Simd>(self) {
            let Run { g, b, ldb, scratch } = self;
            let band = band_cols(g.k);
            let kp = g.k.div_ceil(2);
            // LOOP 0: bands of columns, each converted once into `scratch`
            // and then read by every row block.
            for col0 in (0..g.n).step_by(band) {
                let cols = band.min(g.n - col0);
                let width = cols.next_multiple_of(LANES);
                let src = PanelSrc { b, ldb, k: g.k, col0, cols };
                let panel = &mut scratch[..kp * width];
                convert_rows::<S>(&src, panel, width, width);
                let c = &mut g.c[col0..];
                let band_gemm = Gemm { m: g.m, k: g.k, n: cols, packed: g.packed, c, ldc: g.ldc };
                let x = Panel { words: panel, ldp: width, padded: true };
                drive::<S, RELU>(band_gemm, x, &mut []);
            }
        }
    }
    let g = Gemm { m, k, n, packed, c, ldc };
    match act {
        Activation::Identity => dispatch(isa, Run::<false> { g, b, ldb, scratch }),
        Activation::Relu => dispatch(isa, Run::<true> { g, b, ldb, scratch }),
    }
}

/// [`conv1x1_bf16`] on an input that is already a pair-interleaved bf16
/// panel (the layout [`super::pack_panel`] writes), read in place; only the
/// last `n % 48` columns are copied into `scratch` (zero-padded to whole
/// vectors). The result is bit for bit that of [`conv1x1_bf16`] on the f32
/// rows the panel was made from.
///
/// # Panics
/// As [`conv1x1_bf16`] (`panel` shorter than
/// [`super::panel_len`]`(k, n, ldp)`), and if `k` is odd and a high half of
/// the last panel row's first `n` words is not `+0` (it meets a zero weight:
/// `0 · Inf` would poison the output and `-0` could flip the sign of a zero
/// result; [`super::pack_panel`] writes `+0` there).
pub fn conv1x1_bf16_paired(
    isa: Bf16Isa,
    act: Activation,
    args: Conv1x1Bf16PairedArgs<'_>,
    scratch: &mut [u32],
) {
    let Conv1x1Bf16PairedArgs { m, k, n, packed, panel, ldp, c, ldc } = args;
    check_common(m, k, n, packed, c, ldc, scratch);
    assert!(panel_len(k, n, ldp).is_some_and(|len| panel.len() >= len), "panel too short");
    if k % 2 == 1 && n > 0 {
        let last = (k / 2) * ldp;
        assert!(
            panel[last..last + n].iter().all(|&w| w >> 16 == 0),
            "odd k: the pad halves of the last panel row must be +0"
        );
    }
    if m == 0 || n == 0 {
        return;
    }
    struct Run<'a, const RELU: bool>(Gemm<'a>, Panel<'a>, &'a mut [u32]);
    impl<const RELU: bool> Bf16Job for Run<'_, RELU> {
        type Out = ();
        #[inline(always)]
        fn run<S: Simd>(self) {
            drive::<S, RELU>(self.0, self.1, self.2)
        }
    }
    let g = Gemm { m, k, n, packed, c, ldc };
    let p = Panel { words: panel, ldp, padded: false };
    match act {
        Activation::Identity => dispatch(isa, Run::<false>(g, p, scratch)),
        Activation::Relu => dispatch(isa, Run::<true>(g, p, scratch)),
    }
}

/// The checks both entry points share.
fn check_common(
    m: usize,
    k: usize,
    n: usize,
    packed: &[u32],
    c: &[f32],
    ldc: usize,
    scratch: &[u32],
) {
    assert!(ldc >= n, "output row stride must cover n");
    assert!(packed_len(m, k).is_some_and(|len| packed.len() >= len), "packed weights too short");
    assert!(
        m == 0 || (m - 1).checked_mul(ldc).is_some_and(|last| fits(last, n, c.len())),
        "output too short"
    );
    assert!(scratch_len(k, n).is_some_and(|len| scratch.len() >= len), "scratch too short");
}

/// The output side of one GEMM (see [`Conv1x1Bf16Args`]).
pub(crate) struct Gemm<'a> {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub packed: &'a [u32],
    pub c: &'a mut [f32],
    pub ldc: usize,
}

/// The input side: a pair panel with row stride `ldp`; `padded` when every
/// row is readable (and zero) up to `round_up(n, 16)` columns.
pub(crate) struct Panel<'a> {
    pub words: &'a [u32],
    pub ldp: usize,
    pub padded: bool,
}

/// The tiles of one GEMM over one panel (see the module docs). The slices
/// are checked by the micro-kernel's entry asserts; the entry points check
/// them once more up front, with the messages their docs name.
#[inline(always)]
pub(crate) fn drive<S: Simd, const RELU: bool>(g: Gemm<'_>, x: Panel<'_>, scratch: &mut [u32]) {
    let Gemm { m, k, n, packed, c, ldc } = g;
    let kp = k.div_ceil(2);
    let block_len = (kp + 1) * MR;
    let blocks = m.div_ceil(MR);
    let full_end = n / NR * NR;
    let tail = n - full_end;
    // A tail of at most GEMV_MAX_COLS columns (7x7 planes: 1, 14x14: 4) runs
    // as a matrix-vector product per block right after the block's last full
    // tile, while its weights are in L1.
    let gemv = (1..=GEMV_MAX_COLS).contains(&tail);
    let main_end = if gemv { full_end.saturating_sub(NR) } else { full_end };
    // LOOP 1: full 48-column tiles; LOOP 2: the row blocks over one panel strip.
    for n0 in (0..main_end).step_by(NR) {
        for blk in 0..blocks {
            let pk = &packed[blk * block_len..(blk + 1) * block_len];
            let rows = (m - blk * MR).min(MR);
            let out = Out { c: &mut *c, off: blk * MR * ldc + n0, ldc, rows, cols: NR };
            run_tile::<S, NRV, RELU>(kp, pk, x.words, n0, x.ldp, out);
        }
    }
    if gemv {
        for blk in 0..blocks {
            let pk = &packed[blk * block_len..(blk + 1) * block_len];
            let rows = (m - blk * MR).min(MR);
            if full_end > 0 {
                let n0 = full_end - NR;
                let out = Out { c: &mut *c, off: blk * MR * ldc + n0, ldc, rows, cols: NR };
                run_tile::<S, NRV, RELU>(kp, pk, x.words, n0, x.ldp, out);
            }
            let out = Out { c: &mut *c, off: blk * MR * ldc + full_end, ldc, rows, cols: tail };
            gemv_block::<S, RELU>(kp, pk, x.words, full_end, x.ldp, out);
        }
        return;
    }
    if tail == 0 {
        return;
    }
    // The column tail: whole vectors from a zero-padded panel.
    let nv = tail.div_ceil(LANES);
    let width = nv * LANES;
    let (words, p_off, ldp) = if x.padded {
        (x.words, full_end, x.ldp)
    } else {
        let dst = &mut scratch[..kp * width];
        for (p, row) in dst.chunks_exact_mut(width).enumerate() {
            let src = p * x.ldp + full_end;
            row[..tail].copy_from_slice(&x.words[src..src + tail]);
            row[tail..].fill(0);
        }
        (&*dst, 0, width)
    };
    for blk in 0..blocks {
        let pk = &packed[blk * block_len..(blk + 1) * block_len];
        let rows = (m - blk * MR).min(MR);
        let out = Out { c: &mut *c, off: blk * MR * ldc + full_end, ldc, rows, cols: tail };
        match nv {
            1 => run_tile::<S, 1, RELU>(kp, pk, words, p_off, ldp, out),
            2 => run_tile::<S, 2, RELU>(kp, pk, words, p_off, ldp, out),
            _ => run_tile::<S, 3, RELU>(kp, pk, words, p_off, ldp, out),
        }
    }
}

/// Column tails up to this many pixels run as a GEMV ([`gemv_cols`]); wider
/// ones as a zero-padded tile of whole vectors.
const GEMV_MAX_COLS: usize = 4;

/// The `cols <= 4` GEMV columns at `col0` of one block, stored to `out`.
#[inline(always)]
fn gemv_block<S: Simd, const RELU: bool>(
    kp: usize,
    pk: &[u32],
    panel: &[u32],
    col0: usize,
    ldp: usize,
    out: Out<'_>,
) {
    let Out { c, off, ldc, rows, cols } = out;
    let mut put = |j: usize, v: &[f32; 8]| {
        for (i, &x) in v.iter().enumerate().take(rows) {
            c[off + i * ldc + j] = if RELU { crate::act::relu(x) } else { x };
        }
    };
    match cols {
        1 => gemv_cols::<S, 1>(kp, pk, panel, col0, ldp)
            .iter()
            .enumerate()
            .for_each(|(j, v)| put(j, v)),
        2 => gemv_cols::<S, 2>(kp, pk, panel, col0, ldp)
            .iter()
            .enumerate()
            .for_each(|(j, v)| put(j, v)),
        3 => gemv_cols::<S, 3>(kp, pk, panel, col0, ldp)
            .iter()
            .enumerate()
            .for_each(|(j, v)| put(j, v)),
        _ => gemv_cols::<S, 4>(kp, pk, panel, col0, ldp)
            .iter()
            .enumerate()
            .for_each(|(j, v)| put(j, v)),
    }
}

/// `bias[r] + Σ_p dot(wpair[p][r], panel[p][col0 + j])` for the block's 8
/// rows `r` (the lanes of one 256-bit vector) and `RC` columns `j`: one
/// `vdpbf16ps ymm` per pair and column instead of a 16-lane tile for 1-4
/// useful lanes. Four partial sums over `p mod 4` break the latency chain;
/// the order is fixed (`bias + ((s0 + s1) + (s2 + s3))`), so the result does
/// not depend on threading, but it rounds differently from a tile column.
///
/// # Panics
/// If the block is shorter than `(kp + 1) * 8` words or the panel does not
/// hold columns `col0..col0 + RC` of rows `0..kp`.
#[inline(always)]
fn gemv_cols<S: Simd, const RC: usize>(
    kp: usize,
    block: &[u32],
    panel: &[u32],
    col0: usize,
    ldp: usize,
) -> [[f32; 8]; RC] {
    const { assert!(MR == 8) };
    let words = kp.checked_add(1).and_then(|k1| k1.checked_mul(MR));
    assert!(words.is_some_and(|len| block.len() >= len), "packed block too short");
    assert!(
        kp == 0
            || (kp - 1)
                .checked_mul(ldp)
                .and_then(|last| last.checked_add(col0))
                .is_some_and(|last| fits(last, RC, panel.len())),
        "panel columns out of bounds"
    );
    let mut acc = [[S::zero8(); 4]; RC];
    let k4 = kp / 4 * 4;
    for p in (0..k4).step_by(4) {
        // Literal partial-sum indices, so `acc` stays in registers.
        gemv_step::<S, RC>(block, panel, col0, ldp, p, 0, &mut acc);
        gemv_step::<S, RC>(block, panel, col0, ldp, p + 1, 1, &mut acc);
        gemv_step::<S, RC>(block, panel, col0, ldp, p + 2, 2, &mut acc);
        gemv_step::<S, RC>(block, panel, col0, ldp, p + 3, 3, &mut acc);
    }
    for p in k4..kp {
        gemv_step::<S, RC>(block, panel, col0, ldp, p, p % 4, &mut acc);
    }
    // SAFETY: the block's first 8 words are the bias as f32 bits (`u32` and
    // `f32` have the same size and alignment), in bounds by the entry assert.
    let bias = unsafe { S::load_f32x8(block.as_ptr().cast::<f32>()) };
    let mut out = [[0.0f32; 8]; RC];
    for (o, a) in out.iter_mut().zip(acc.iter()) {
        *o = S::to_array8(S::add8(bias, S::add8(S::add8(a[0], a[1]), S::add8(a[2], a[3]))));
    }
    out
}

/// One reduction pair of [`gemv_cols`] into partial sum `s`. A function, not
/// a closure: a closure would be compiled without the entry point's target
/// features, and its intrinsics would not inline.
#[inline(always)]
fn gemv_step<S: Simd, const RC: usize>(
    block: &[u32],
    panel: &[u32],
    col0: usize,
    ldp: usize,
    p: usize,
    s: usize,
    acc: &mut [[S::F8; 4]; RC],
) {
    // SAFETY: words MR + p*MR .. + 8 of the block are in bounds (p < kp and
    // the block holds (kp + 1) * MR words, asserted by `gemv_cols`).
    let w = unsafe { S::load_pairs8(block.as_ptr().add(MR + p * MR)) };
    let row = &panel[p * ldp + col0..p * ldp + col0 + RC];
    for (a, &x) in acc.iter_mut().zip(row) {
        a[s] = S::dot8(a[s], w, S::splat_pair8(x));
    }
}

/// Where one tile's valid `rows x cols` go in `c`.
struct Out<'a> {
    c: &'a mut [f32],
    off: usize,
    ldc: usize,
    rows: usize,
    cols: usize,
}

/// One `MR x (V*16)` tile: straight into `c` when it is whole, else through
/// a stack tile of which the valid `rows x cols` corner is copied out.
#[inline(always)]
fn run_tile<S: Simd, const V: usize, const RELU: bool>(
    kp: usize,
    pk: &[u32],
    panel: &[u32],
    p_off: usize,
    ldp: usize,
    out: Out<'_>,
) {
    let Out { c, off, ldc, rows, cols } = out;
    let nr = V * LANES;
    if rows == MR && cols == nr {
        tile::<S, MR, V, RELU>(kp, pk, panel, p_off, ldp, c, off, ldc);
    } else {
        let mut t = [0.0f32; MR * NR];
        tile::<S, MR, V, RELU>(kp, pk, panel, p_off, ldp, &mut t, 0, nr);
        for r in 0..rows {
            c[off + r * ldc..off + r * ldc + cols].copy_from_slice(&t[r * nr..r * nr + cols]);
        }
    }
}
