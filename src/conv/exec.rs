//! Execution: weight packing per plan, and the rayon frame that splits each
//! image's output into disjoint row blocks and hands them to the kernels.
//!
//! Every output element is computed by exactly one task, with the same
//! arithmetic in the same order whatever the split, so the result is bitwise
//! identical for any number of threads (and for `Parallelism::Serial`).

use rayon::prelude::*;
use repconv_kernels::conv1x1::{self, Conv1x1Args};
use repconv_kernels::conv3x3;
use repconv_kernels::dwconv1x1::{self, Dw1x1Args};
use repconv_kernels::dwconv3x3::{self, Dw3x3Args};
use repconv_kernels::{Activation as Act, Isa};

use super::params::Conv2dParams;
use super::plan::{Family, Plan};
use super::{Activation, Conv2d, Parallelism};
use crate::error::{Error, Result};
use crate::scratch::{with_im2col, with_offsets, with_panel};
use crate::tensor::{TensorView, TensorViewMut};

/// Below this many FLOPs a forward pass runs on the calling thread: handing
/// work to other threads costs a few microseconds, as long as the layer itself.
pub(super) const PAR_MIN_FLOPS: u64 = 2_000_000;

/// How much more time a depthwise FLOP takes than a GEMM FLOP (measured:
/// ~25 vs ~105 GFLOP/s on small planes), for the serial/parallel decision.
const DEPTHWISE_WORK_FACTOR: u64 = 4;

/// Reduction length of the GEMM one group runs: `cin/groups * kh * kw`.
fn gemm_k(p: &Conv2dParams) -> usize {
    p.in_per_group() * p.kernel[0] * p.kernel[1]
}

/// Packs OIHW weights and the bias for the plan's kernel family.
pub(super) fn pack(
    p: &Conv2dParams,
    plan: &Plan,
    weights: &[f32],
    bias: Option<&[f32]>,
) -> Result<Vec<f32>> {
    match plan.family() {
        Family::Dw1x1 => {
            let mut packed = vec![0.0; p.out_channels * dwconv1x1::PACKED_PER_CHANNEL];
            dwconv1x1::pack_weights(weights, bias, p.out_channels, &mut packed);
            Ok(packed)
        }
        Family::Dw3x3 => {
            let mut packed = vec![0.0; p.out_channels * dwconv3x3::PACKED_PER_CHANNEL];
            dwconv3x3::pack_weights(weights, bias, p.out_channels, &mut packed);
            Ok(packed)
        }
        Family::Conv1x1 | Family::General | Family::Conv3x3 => {
            let (m, k) = (p.out_per_group(), gemm_k(p));
            let isa = plan.isa();
            let per_group =
                conv1x1::packed_len(isa, m, k).ok_or(Error::TooLarge { what: "packed weights" })?;
            let total = per_group
                .checked_mul(p.groups)
                .filter(|&t| t <= crate::MAX_ELEMENTS)
                .ok_or(Error::TooLarge { what: "packed weights" })?;
            let mut packed = vec![0.0; total];
            for (g, dst) in packed.chunks_exact_mut(per_group).enumerate() {
                conv1x1::pack_weights(
                    isa,
                    &weights[g * m * k..(g + 1) * m * k],
                    bias.map(|b| &b[g * m..(g + 1) * m]),
                    m,
                    k,
                    dst,
                );
            }
            Ok(packed)
        }
    }
}

/// Runs a validated convolution (shapes already checked by the caller).
pub(super) fn run(conv: &Conv2d, input: TensorView<'_>, output: TensorViewMut<'_>) {
    let act = match conv.activation {
        Activation::None => Act::Identity,
        Activation::Relu => Act::Relu,
    };
    let p = &conv.params;
    let flops = p.flops(input.shape()).unwrap_or(u64::MAX);
    // Depthwise layers move as many bytes as they compute: a FLOP of theirs
    // takes several times longer than a GEMM FLOP, so they split earlier.
    let work = match conv.plan.family() {
        Family::Dw3x3 | Family::Dw1x1 => flops.saturating_mul(DEPTHWISE_WORK_FACTOR),
        _ => flops,
    };
    let parallel = conv.parallelism == Parallelism::Rayon
        && work >= conv.parallel_min_flops
        && rayon::current_num_threads() > 1;
    match conv.plan.family() {
        Family::Conv1x1 | Family::General => run_gemm(conv, act, input, output, parallel),
        Family::Conv3x3 => run_conv3x3(conv, act, input, output, parallel),
        Family::Dw3x3 => run_dw3x3(conv, act, input, output, parallel),
        Family::Dw1x1 => run_dw1x1(conv, act, input, output, parallel),
    }
}

/// The 1x1 path (GEMM straight over the input) and the general path (im2col,
/// then the same GEMM).
fn run_gemm(
    conv: &Conv2d,
    act: Act,
    input: TensorView<'_>,
    output: TensorViewMut<'_>,
    parallel: bool,
) {
    let p = &conv.params;
    let [_, cin, h, w] = input.shape();
    let [_, cout, oh, ow] = output.shape();
    let npix = oh * ow;
    let (m, k) = (p.out_per_group(), gemm_k(p));
    // `pack` computed this same length with checked arithmetic when the
    // Conv2d was built (and returned an error if it overflowed).
    let isa = conv.plan.isa();
    let group_packed = conv1x1::packed_len(isa, m, k).expect("checked when packing");
    let direct = conv.plan.family() == Family::Conv1x1;
    let x = input.as_slice();
    let y = output.into_slice();

    for (xb, yb) in x.chunks_exact(cin * h * w).zip(y.chunks_exact_mut(cout * npix)) {
        if direct {
            gemm_rows(isa, act, &conv.packed, m, k, npix, xb, h * w, yb, parallel);
        } else if p.groups == 1 {
            with_im2col(k * npix, |col| {
                im2col(p, xb, [h, w], [oh, ow], col, parallel);
                gemm_rows(isa, act, &conv.packed, m, k, npix, col, npix, yb, parallel);
            });
        } else {
            let cin_g = p.in_per_group();
            let per_group = |(g, yg): (usize, &mut [f32])| {
                let xg = &xb[g * cin_g * h * w..(g + 1) * cin_g * h * w];
                let pk = &conv.packed[g * group_packed..(g + 1) * group_packed];
                with_im2col(k * npix, |col| {
                    im2col(p, xg, [h, w], [oh, ow], col, false);
                    gemm_rows(isa, act, pk, m, k, npix, col, npix, yg, false);
                });
            };
            if parallel {
                yb.par_chunks_mut(m * npix).enumerate().for_each(per_group);
            } else {
                yb.chunks_mut(m * npix).enumerate().for_each(per_group);
            }
        }
    }
}

/// Splits the `m` output rows (`row_len` floats each) of `c` into tasks of
/// whole `MR` blocks and runs `f(first_block, rows)` on each, on rayon when
/// `parallel`. The split never changes what any element's arithmetic is.
fn for_each_row_block(
    isa: Isa,
    c: &mut [f32],
    m: usize,
    row_len: usize,
    parallel: bool,
    f: impl Fn(usize, &mut [f32]) + Sync + Send,
) {
    let (mr, _) = conv1x1::tile(isa);
    let blocks = m.div_ceil(mr);
    // Each task streams the whole input panel once for all its blocks, so
    // tasks hold as many blocks as balance allows: one task per thread when
    // blocks are few (the stem's 6), two per thread otherwise.
    let threads = rayon::current_num_threads();
    let blocks_per_task = if !parallel {
        blocks
    } else if blocks <= 4 * threads {
        blocks.div_ceil(threads)
    } else {
        (blocks / (2 * threads)).max(1)
    };
    let chunk = blocks_per_task * mr * row_len;
    let c = &mut c[..m * row_len];
    if parallel && blocks > 1 {
        c.par_chunks_mut(chunk).enumerate().for_each(|(t, ct)| f(t * blocks_per_task, ct));
    } else {
        c.chunks_mut(chunk).enumerate().for_each(|(t, ct)| f(t * blocks_per_task, ct));
    }
}

/// `c[m][n] = A(bias + W · b)` for one group, split into row blocks of whole
/// `MR` tiles when `parallel`.
#[allow(clippy::too_many_arguments)]
fn gemm_rows(
    isa: Isa,
    act: Act,
    packed: &[f32],
    m: usize,
    k: usize,
    n: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    parallel: bool,
) {
    let block_len = (k + 1) * conv1x1::tile(isa).0;
    // `pack` sized the packed weights, k * MR, with checked arithmetic; the
    // panel is k * NR <= 8 k * MR floats.
    let scratch = conv1x1::scratch_len(isa, k).expect("checked when packing");
    for_each_row_block(isa, c, m, n, parallel, |first_block, ct| {
        let args = Conv1x1Args {
            m: ct.len() / n,
            k,
            n,
            packed: &packed[first_block * block_len..],
            b,
            ldb,
            c: ct,
            ldc: n,
        };
        with_panel(scratch, |s| conv1x1::conv1x1(isa, act, args, s));
    });
}

/// The direct 3x3 path: pad and phase-split the input once per image, then
/// every task runs the implicit GEMM over its block of output channels.
fn run_conv3x3(
    conv: &Conv2d,
    act: Act,
    input: TensorView<'_>,
    output: TensorViewMut<'_>,
    parallel: bool,
) {
    let [_, cin, h, w] = input.shape();
    let [_, cout, oh, ow] = output.shape();
    let g = conv3x3::Geometry { cin, h, w, stride: conv.params.stride[0] };
    let k = g.k();
    let isa = conv.plan.isa();
    let block_len = (k + 1) * conv1x1::tile(isa).0;
    let x = input.as_slice();
    let y = output.into_slice();
    with_offsets(k, |offsets| {
        conv3x3::tap_offsets(&g, offsets);
        let offsets = &*offsets;
        with_im2col(g.prepared_len(), |prepared| {
            for (xb, yb) in x.chunks_exact(cin * h * w).zip(y.chunks_exact_mut(cout * oh * ow)) {
                if parallel {
                    // The phase split of a large input (the stem's) costs as much
                    // as its few-channel convolution: split it across threads too.
                    let slack = g.slack_range();
                    prepared[slack.clone()].fill(0.0);
                    prepared[..slack.start]
                        .par_chunks_mut(g.plane_len())
                        .enumerate()
                        .for_each(|(i, plane)| conv3x3::prepare_plane(isa, &g, xb, i, plane));
                } else {
                    conv3x3::prepare_input(isa, &g, xb, prepared);
                }
                let prepared = &*prepared;
                for_each_row_block(isa, yb, cout, oh * ow, parallel, |first_block, ct| {
                    let m = ct.len() / (oh * ow);
                    let args = conv3x3::Conv3x3Args {
                        geometry: g,
                        m,
                        packed: &conv.packed[first_block * block_len..],
                        prepared,
                        offsets,
                        output: ct,
                    };
                    conv3x3::conv3x3(isa, act, args);
                });
            }
        });
    });
}

/// The depthwise path: images x channel chunks, each chunk through the
/// depthwise driver with its own scratch.
fn run_dw3x3(
    conv: &Conv2d,
    act: Act,
    input: TensorView<'_>,
    output: TensorViewMut<'_>,
    parallel: bool,
) {
    let [n, c, h, w] = input.shape();
    let [_, _, oh, ow] = output.shape();
    let stride = conv.params.stride[0];
    let (plane_in, plane_out) = (h * w, oh * ow);
    // Whole images x channel chunks: at least ~64 KiB of output per task, and
    // enough tasks for every thread when the layer is large.
    let threads = if parallel { rayon::current_num_threads() } else { 1 };
    let target = if parallel {
        let by_threads = (n * c).div_ceil(4 * threads);
        let by_size = (16 * 1024usize).div_ceil(plane_out);
        by_threads.max(by_size).min(c)
    } else {
        c
    };
    // The largest divisor of c not above the target, so chunks tile each image.
    let per_task = (1..=target.max(1)).rev().find(|d| c % d == 0).unwrap_or(1);
    let x = input.as_slice();
    let y = output.into_slice();
    let packed = &conv.packed;
    let isa = conv.plan.isa();
    let scratch = dwconv3x3::scratch_len(isa, h, w, stride);
    let task = |(t, yc): (usize, &mut [f32])| {
        // Task t covers channels [c0, c0 + len) of image b.
        let chunks_per_image = c / per_task;
        let (b, ci) = (t / chunks_per_image, t % chunks_per_image);
        let c0 = ci * per_task;
        let len = yc.len() / plane_out;
        let xs = &x[(b * c + c0) * plane_in..(b * c + c0 + len) * plane_in];
        let pk =
            &packed[c0 * dwconv3x3::PACKED_PER_CHANNEL..(c0 + len) * dwconv3x3::PACKED_PER_CHANNEL];
        let args = Dw3x3Args { channels: len, h, w, packed: pk, input: xs, output: yc };
        with_panel(scratch, |s| {
            if stride == 1 {
                dwconv3x3::dw3x3_s1p1(isa, act, args, s)
            } else {
                dwconv3x3::dw3x3_s2p1(isa, act, args, s)
            }
        });
    };
    if parallel {
        y.par_chunks_mut(per_task * plane_out).enumerate().for_each(task);
    } else {
        y.chunks_mut(per_task * plane_out).enumerate().for_each(task);
    }
}

/// The depthwise 1x1 path: chunks of whole planes (batch and channels are
/// one axis here, since every plane has its own weight).
fn run_dw1x1(
    conv: &Conv2d,
    act: Act,
    input: TensorView<'_>,
    output: TensorViewMut<'_>,
    parallel: bool,
) {
    let [_, c, h, w] = input.shape();
    let [_, _, oh, ow] = output.shape();
    let stride = conv.params.stride[0];
    let x = input.as_slice();
    let y = output.into_slice();
    // Planes per task: a divisor of c, so a chunk never straddles images.
    let target = if parallel { c.div_ceil(2 * rayon::current_num_threads()) } else { c };
    let per_task = (1..=target.max(1)).rev().find(|d| c % d == 0).unwrap_or(1);
    let task = |(t, yc): (usize, &mut [f32])| {
        let first = t * per_task; // plane index over batch x channels
        let c0 = first % c;
        let xs = &x[first * h * w..(first + per_task) * h * w];
        let pk = &conv.packed[c0 * dwconv1x1::PACKED_PER_CHANNEL..];
        let args =
            Dw1x1Args { channels: per_task, h, w, stride, packed: pk, input: xs, output: yc };
        dwconv1x1::dw1x1(conv.plan.isa(), act, args);
    };
    if parallel {
        y.par_chunks_mut(per_task * oh * ow).enumerate().for_each(task);
    } else {
        y.chunks_mut(per_task * oh * ow).enumerate().for_each(task);
    }
}

/// Lays out the receptive fields of one group as a `k x npix` matrix: row
/// `(ci, ky, kx)`, column `(oy, ox)` holds the input tap that output pixel
/// multiplies with weight `[ci][ky][kx]`, or 0 in the padding.
fn im2col(
    p: &Conv2dParams,
    x: &[f32],
    [h, w]: [usize; 2],
    [oh, ow]: [usize; 2],
    col: &mut [f32],
    parallel: bool,
) {
    let [kh, kw] = p.kernel;
    let npix = oh * ow;
    let fill_row = |(r, row): (usize, &mut [f32])| {
        let (ci, ky, kx) = (r / (kh * kw), (r / kw) % kh, r % kw);
        let plane = &x[ci * h * w..(ci + 1) * h * w];
        // Output columns whose input column lies inside [0, w):
        // ix = ox*sw + kx*dw - pw, so ox_lo = ceil((pw - kx*dw) / sw), ox_hi = ceil((w + pw - kx*dw) / sw).
        let shift = kx * p.dilation[1];
        let ox_lo = p.padding[1].saturating_sub(shift).div_ceil(p.stride[1]).min(ow);
        let ox_hi = (w + p.padding[1]).saturating_sub(shift).div_ceil(p.stride[1]).clamp(ox_lo, ow);
        for (oy, out) in row.chunks_exact_mut(ow).enumerate() {
            let iy = (oy * p.stride[0] + ky * p.dilation[0]).wrapping_sub(p.padding[0]);
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
    let col = &mut col[..gemm_k(p) * npix];
    if parallel {
        col.par_chunks_mut(npix).enumerate().for_each(fill_row);
    } else {
        col.chunks_mut(npix).enumerate().for_each(fill_row);
    }
}
