//! The general path: any kernel size, stride, padding, dilation and groups,
//! in scratch memory bounded independently of the layer's size (and 1x1
//! layers whose reduction is too long for the GEMM).
//!
//! # Banded im2col + GEMM (reduction `k = cin/groups * kh * kw <= 65536`)
//! The output positions of one group (flat `oy * ow + ox`) are cut into bands
//! of at most `limit / k` positions, where `limit` is
//! [`Conv2d::with_scratch_limit`] (8 MiB by default): all of them when the
//! whole `k x npix` matrix fits (today's layers), else whole output rows, else
//! (rows wider than the limit) whole GEMM tiles of columns, or fewer columns
//! when not even one tile fits. Each band's receptive fields are laid out as a
//! `k x cols` matrix in the thread's im2col buffer, and the GEMM writes the
//! band's columns of the output rows (row stride `npix`) directly. So the
//! im2col buffer holds at most `max(limit, k)` floats per thread, whatever the
//! input, padding or dilation, and the GEMM's tail panel at most `k * NR`
//! floats (12 MiB at `k = 65536`).
//!
//! # Direct taps (`k > 65536`, or one output position's `k` floats above the limit)
//! Each output row is computed on its own: bias, then for every kernel tap
//! that lands inside the input (padding taps are skipped; where one meets a
//! non-finite weight the output is NaN, as `w · 0` is in PyTorch),
//! `row[ox] += w · x` over the row's in-bounds span, then the activation. No scratch at all, and work proportional to the in-bounds taps,
//! so a 1024x1024 kernel with 1024 padding on a 63x63 input costs what its
//! 63x63 useful taps per output cost, not 10^6. It is much slower than the
//! GEMM on ordinary shapes, which never reach it.
//!
//! Both give bitwise identical results for any thread count: band boundaries
//! depend only on the geometry and the limit, every output element is computed
//! by one task, and the split over threads is by whole output rows (GEMM
//! `MR`-row blocks, or taps output rows).

use repconv_kernels::Activation as Act;

use super::Conv2d;
use super::frame::{Call, Split, for_each_chunk};
use super::gemm::{self, Gemm};
use super::params::Conv2dParams;
use super::plan::Family;
use crate::scratch::with_im2col;

/// The longest reduction the GEMM runs: its tail panel is `k * NR` floats
/// (12 MiB here at `NR = 48`). Longer ones run the direct tap loop.
pub(super) const GEMM_MAX_K: usize = 1 << 16;

/// The default im2col band limit of the general path, in bytes (8 MiB: every
/// MobileOne and benchmark layer shape fits in one band, so runs as before).
pub(super) const DEFAULT_SCRATCH_LIMIT_BYTES: usize = 8 << 20;

/// What [`Conv2d::kernel_name`] reports when the direct tap loop runs.
pub(super) const TAPS_NAME: &str = "general_taps";

/// Reduction length of the GEMM one group runs: `cin/groups * kh * kw`.
pub(super) fn gemm_k(p: &Conv2dParams) -> usize {
    p.in_per_group() * p.kernel[0] * p.kernel[1]
}

/// Whether the reduction is too long for the GEMM, whatever the limit.
pub(super) fn beyond_gemm(p: &Conv2dParams) -> bool {
    gemm_k(p) > GEMM_MAX_K
}

/// Whether `conv` runs the direct tap loop rather than a GEMM.
pub(super) fn uses_taps(conv: &Conv2d) -> bool {
    let p = &conv.params;
    match conv.plan.family() {
        Family::Conv1x1 => beyond_gemm(p),
        Family::General => beyond_gemm(p) || gemm_k(p) > conv.scratch_limit,
        _ => false,
    }
}

/// Output positions per band: all `npix` when the `k x npix` matrix fits in
/// `limit` floats; else as many whole output rows (`ow` positions each) as
/// fit; else, when not even one row fits, as many positions as fit, rounded
/// down to whole GEMM tiles of `tile` columns when at least one fits. Depends
/// only on the geometry and the limit, never on threads. Needs `k <= limit`
/// unless everything fits.
fn band_len(k: usize, [oh, ow]: [usize; 2], limit: usize, tile: usize) -> usize {
    let npix = oh * ow;
    if k.saturating_mul(npix) <= limit {
        return npix;
    }
    if k.saturating_mul(ow) <= limit {
        return limit / (k * ow) * ow;
    }
    let cols = (limit / k).max(1);
    if cols >= tile { cols / tile * tile } else { cols }
}

/// Runs a general convolution, or a 1x1 one whose reduction is too long for
/// the GEMM (shapes already checked).
pub(super) fn run(call: Call<'_>) {
    let Call { conv, act, input, output, parallel } = call;
    let [_, cin, h, w] = input.shape();
    let [_, cout, oh, ow] = output.shape();
    let x = input.as_slice();
    let y = output.into_slice();
    if uses_taps(conv) {
        let taps = Taps { x, input: [cin, h, w], output: [cout, oh, ow] };
        taps.run(conv, act, y, parallel);
        return;
    }
    let p = &conv.params;
    let npix = oh * ow;
    let (m, k) = (p.out_per_group(), gemm_k(p));
    let isa = conv.plan.isa();
    // `pack` computed this length with checked arithmetic when the Conv2d
    // was built (and returned an error if it overflowed).
    let group_packed = gemm::packed_len(isa, m, k).expect("checked when packing");
    let band = band_len(k, [oh, ow], conv.scratch_limit, gemm::tile_cols(isa));
    let cin_g = p.in_per_group();
    for (xb, yb) in x.chunks_exact(cin * h * w).zip(y.chunks_exact_mut(cout * npix)) {
        // One group's output rows `yg`, band after band; `inner` splits each
        // band's im2col fill and GEMM over threads.
        let per_group = |g: usize, yg: &mut [f32], inner: bool| {
            let xg = &xb[g * cin_g * h * w..(g + 1) * cin_g * h * w];
            let packed = &conv.packed[g * group_packed..(g + 1) * group_packed];
            with_im2col(k * band, |col| {
                for p0 in (0..npix).step_by(band) {
                    let cols = band.min(npix - p0);
                    let col = &mut col[..k * cols];
                    fill_band(p, xg, [h, w], [oh, ow], p0, col, inner);
                    let gemm = Gemm {
                        isa,
                        act,
                        packed,
                        m,
                        k,
                        n: cols,
                        b: col,
                        ldb: cols,
                        ldc: npix,
                        col0: p0,
                    };
                    gemm.run(yg, inner);
                }
            });
        };
        if p.groups == 1 {
            per_group(0, yb, parallel);
        } else {
            for_each_chunk(yb, m * npix, Split::from(parallel), |g, yg| per_group(g, yg, false));
        }
    }
}

/// Lays out the receptive fields of one group for the `cols = col.len() / k`
/// output positions `p0..p0 + cols` (flat `oy * ow + ox`) as a `k x cols`
/// matrix: row `(ci, ky, kx)`, column `j` holds the input tap that position
/// `p0 + j` multiplies with weight `[ci][ky][kx]`, or 0 in the padding.
fn fill_band(
    p: &Conv2dParams,
    x: &[f32],
    [h, w]: [usize; 2],
    [_, ow]: [usize; 2],
    p0: usize,
    col: &mut [f32],
    parallel: bool,
) {
    let [kh, kw] = p.kernel;
    let k = gemm_k(p);
    let cols = col.len() / k;
    // Where the band starts, and the length of its partial first row.
    let (oy0, ox0) = (p0 / ow, p0 % ow);
    let head = if ox0 > 0 { (ow - ox0).min(cols) } else { 0 };
    let full_rows = (cols - head) / ow;
    let tail = cols - head - full_rows * ow;
    // Output columns whose input column lies inside [0, w), for kernel column kx:
    // ix = ox*sw + kx*dw - pw, so ox_lo = ceil((pw - kx*dw) / sw), ox_hi = ceil((w + pw - kx*dw) / sw).
    let in_bounds = |kx: usize| {
        let shift = kx * p.dilation[1];
        let ox_lo = p.padding[1].saturating_sub(shift).div_ceil(p.stride[1]).min(ow);
        let ox_hi = (w + p.padding[1]).saturating_sub(shift).div_ceil(p.stride[1]).clamp(ox_lo, ow);
        (shift, ox_lo, ox_hi)
    };
    // Matrix row r = (ci, ky, kx): its input plane, ky and kx.
    let tap = |r: usize| (&x[(r / (kh * kw)) * h * w..][..h * w], (r / kw) % kh, r % kw);
    if head == 0 && tail == 0 {
        // A band of whole output rows (the usual case): the plain per-row
        // loop, kept apart because the partial-row logic below makes it
        // measurably slower on small planes.
        let fill_row = |(r, row): (usize, &mut [f32])| {
            let (ci, ky, kx) = (r / (kh * kw), (r / kw) % kh, r % kw);
            let plane = &x[ci * h * w..(ci + 1) * h * w];
            let shift = kx * p.dilation[1];
            let ox_lo = p.padding[1].saturating_sub(shift).div_ceil(p.stride[1]).min(ow);
            let ox_hi =
                (w + p.padding[1]).saturating_sub(shift).div_ceil(p.stride[1]).clamp(ox_lo, ow);
            for (i, out) in row.chunks_exact_mut(ow).enumerate() {
                let iy = ((oy0 + i) * p.stride[0] + ky * p.dilation[0]).wrapping_sub(p.padding[0]);
                if iy >= h {
                    out.fill(0.0);
                    continue;
                }
                let src = &plane[iy * w..(iy + 1) * w];
                out[..ox_lo].fill(0.0);
                out[ox_hi..].fill(0.0);
                if ox_lo == ox_hi {
                    continue;
                }
                let ix0 = ox_lo * p.stride[1] + shift - p.padding[1];
                if p.stride[1] == 1 {
                    out[ox_lo..ox_hi].copy_from_slice(&src[ix0..ix0 + (ox_hi - ox_lo)]);
                } else {
                    for (o, ix) in out[ox_lo..ox_hi].iter_mut().zip((ix0..).step_by(p.stride[1])) {
                        *o = src[ix];
                    }
                }
            }
        };
        for_each_matrix_row(col, cols, parallel, fill_row);
        return;
    }
    // A band that starts or ends inside an output row (output rows too wide
    // for the limit): a partial first row from ox0, whole rows, a partial last row.
    for_each_matrix_row(col, cols, parallel, |(r, row): (usize, &mut [f32])| {
        let (plane, ky, kx) = tap(r);
        let (shift, ox_lo, ox_hi) = in_bounds(kx);
        // Input row of output row oy, or None in the padding.
        let src = |oy: usize| {
            let iy = (oy * p.stride[0] + ky * p.dilation[0]).wrapping_sub(p.padding[0]);
            (iy < h).then(|| &plane[iy * w..(iy + 1) * w])
        };
        // Input column of output column ox (only used for ox in [ox_lo, ox_hi)).
        let ix = |ox: usize| (ox * p.stride[1] + shift).wrapping_sub(p.padding[1]);
        let sw = p.stride[1];
        let (first, rest) = row.split_at_mut(head);
        if head > 0 {
            // Output columns ox0..ox0 + head; in bounds: [a, b) of those.
            let a = ox_lo.clamp(ox0, ox0 + head);
            let b = ox_hi.clamp(a, ox0 + head);
            fill_segment(first, src(oy0), [a - ox0, b - ox0], ix(a), sw);
        }
        let oy1 = oy0 + usize::from(head > 0);
        let (whole, last) = rest.split_at_mut(full_rows * ow);
        for (i, out) in whole.chunks_exact_mut(ow).enumerate() {
            fill_segment(out, src(oy1 + i), [ox_lo, ox_hi], ix(ox_lo), sw);
        }
        if !last.is_empty() {
            let (a, b) = (ox_lo.min(last.len()), ox_hi.min(last.len()));
            fill_segment(last, src(oy1 + full_rows), [a, b], ix(a), sw);
        }
    });
}

/// Runs `f((r, row))` on every `cols`-long row of the band matrix `col`, split
/// over threads when `parallel` (at least ~16K floats per task, so narrow
/// bands do not become thousands of tiny tasks).
fn for_each_matrix_row(
    col: &mut [f32],
    cols: usize,
    parallel: bool,
    f: impl Fn((usize, &mut [f32])) + Sync + Send,
) {
    let split = if parallel {
        Split::Parallel { min_chunks: ((1 << 14) / cols.max(1)).max(1) }
    } else {
        Split::Serial
    };
    for_each_chunk(col, cols, split, |r, row| f((r, row)));
}

/// One segment of an im2col row: zeros, except `out[a..b]`, which takes the
/// input columns `ix0, ix0 + stride, ...` of `src` (`None`: the kernel row
/// lies in the padding, all zeros).
#[inline(always)]
fn fill_segment(
    out: &mut [f32],
    src: Option<&[f32]>,
    [a, b]: [usize; 2],
    ix0: usize,
    stride: usize,
) {
    let Some(src) = src else {
        out.fill(0.0);
        return;
    };
    out[..a].fill(0.0);
    out[b..].fill(0.0);
    if a == b {
        return;
    }
    if stride == 1 {
        out[a..b].copy_from_slice(&src[ix0..ix0 + (b - a)]);
    } else {
        for (o, ix) in out[a..b].iter_mut().zip((ix0..).step_by(stride)) {
            *o = src[ix];
        }
    }
}

/// The direct tap loop's view of one call (see the module docs).
struct Taps<'a> {
    x: &'a [f32],
    input: [usize; 3],
    output: [usize; 3],
}

impl Taps<'_> {
    /// One task per output row over all images and channels, each element
    /// `bias + Σ w·x` over its in-bounds taps in a fixed order (kernel
    /// column, then input channel, then kernel row), then the activation.
    fn run(&self, conv: &Conv2d, act: Act, y: &mut [f32], parallel: bool) {
        let Taps { x, input: [cin, h, w], output: [cout, oh, ow] } = *self;
        let p = &conv.params;
        let (cin_g, cout_g) = (p.in_per_group(), p.out_per_group());
        let [kh, kw] = p.kernel;
        let [sh, sw] = p.stride;
        let [dh, dw] = p.dilation;
        let [ph, pw] = p.padding;
        let weights = &conv.weights[..];
        let bias = conv.bias.as_deref();
        // Output columns whose input column ox*sw + kx*dw - pw lies in [0, w).
        let columns_inside = |kx: usize| {
            let shift = kx * dw;
            let ox_lo = pw.saturating_sub(shift).div_ceil(sw).min(ow);
            let ox_hi = (w + pw).saturating_sub(shift).div_ceil(sw).clamp(ox_lo, ow);
            (shift, ox_lo, ox_hi)
        };
        let row_task = |t: usize, row: &mut [f32]| {
            // Row t is output row oy of channel oc of image img.
            let (oy, plane) = (t % oh, t / oh);
            let (oc, img) = (plane % cout, plane / cout);
            let g = oc / cout_g;
            row.fill(bias.map_or(0.0, |b| b[oc]));
            // Kernel rows whose input row iy = oy*sh + ky*dh - ph lies in [0, h).
            let base = oy * sh;
            let ky_lo = ph.saturating_sub(base).div_ceil(dh).min(kh);
            let ky_hi = (h + ph).saturating_sub(base).div_ceil(dh).clamp(ky_lo, kh);
            if ky_lo < ky_hi {
                let x_img =
                    &x[(img * cin + g * cin_g) * h * w..(img * cin + (g + 1) * cin_g) * h * w];
                let w_oc = &weights[oc * cin_g * kh * kw..(oc + 1) * cin_g * kh * kw];
                for kx in 0..kw {
                    let (shift, ox_lo, ox_hi) = columns_inside(kx);
                    if ox_lo == ox_hi {
                        continue;
                    }
                    let ix0 = ox_lo * sw + shift - pw;
                    let out = &mut row[ox_lo..ox_hi];
                    for (plane, wk) in x_img.chunks_exact(h * w).zip(w_oc.chunks_exact(kh * kw)) {
                        for ky in ky_lo..ky_hi {
                            let wv = wk[ky * kw + kx];
                            let iy = base + ky * dh - ph;
                            let src = &plane[iy * w + ix0..(iy + 1) * w];
                            if sw == 1 {
                                for (o, &s) in out.iter_mut().zip(src) {
                                    *o += wv * s;
                                }
                            } else {
                                for (o, &s) in out.iter_mut().zip(src.iter().step_by(sw)) {
                                    *o += wv * s;
                                }
                            }
                        }
                    }
                }
            }
            // A non-finite weight times a padding zero is NaN (PyTorch, and
            // every kernel that multiplies the padding): the outputs whose
            // skipped taps meet one are NaN.
            for (ky, kx) in conv.nonfinite_taps.of(oc) {
                if (base + ky * dh).wrapping_sub(ph) >= h {
                    row.fill(f32::NAN);
                    break;
                }
                let (_, ox_lo, ox_hi) = columns_inside(kx);
                row[..ox_lo].fill(f32::NAN);
                row[ox_hi..].fill(f32::NAN);
            }
            if act == Act::Relu {
                for v in row.iter_mut() {
                    *v = repconv_kernels::act::relu(*v);
                }
            }
        };
        for_each_chunk(y, ow, Split::from(parallel), row_task);
    }
}

/// The kernel taps `(ky, kx)` at which an output channel has a non-finite
/// weight (for any input channel), for the direct tap loop, which skips
/// padding taps. Empty, and free, for finite weights.
#[derive(Clone, Debug, Default)]
pub(super) struct NonFiniteTaps {
    /// `(oc, ky, kx)`, sorted, no duplicates.
    taps: Vec<(usize, usize, usize)>,
}

impl NonFiniteTaps {
    /// Scans OIHW `weights` of geometry `p`.
    pub(super) fn of_weights(p: &Conv2dParams, weights: &[f32]) -> NonFiniteTaps {
        let [kh, kw] = p.kernel;
        let per_oc = p.in_per_group() * kh * kw;
        let mut taps: Vec<(usize, usize, usize)> = weights
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.is_finite())
            .map(|(i, _)| (i / per_oc.max(1), (i / kw) % kh, i % kw))
            .collect();
        taps.sort_unstable();
        taps.dedup();
        NonFiniteTaps { taps }
    }

    /// The taps `(ky, kx)` of output channel `oc`.
    fn of(&self, oc: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        let lo = self.taps.partition_point(|t| t.0 < oc);
        let hi = self.taps.partition_point(|t| t.0 <= oc);
        self.taps[lo..hi].iter().map(|&(_, ky, kx)| (ky, kx))
    }
}

#[cfg(test)]
mod tests {
    use super::band_len;

    #[test]
    fn bands_are_whole_rows_or_whole_tiles_within_the_limit() {
        // Everything fits: one band.
        assert_eq!(band_len(576, [20, 50], 1 << 20, 48), 1000);
        // 1 Mi floats / (576 * 56) = 32 whole rows of 56.
        assert_eq!(band_len(576, [56, 56], 1 << 20, 48), 32 * 56);
        // Not one row of 4000 fits: 1820 columns, rounded down to 37 tiles of 48.
        assert_eq!(band_len(576, [10, 4000], 1 << 20, 48), 1776);
        // Less than a tile fits: as many columns as fit, at least one.
        assert_eq!(band_len(50_000, [56, 56], 1 << 20, 48), 20);
        assert_eq!(band_len(1 << 20, [1024, 1024], 1 << 20, 48), 1);
    }
}
