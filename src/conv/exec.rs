//! Execution: weight packing per plan, and the rayon frame that splits each
//! image's output into disjoint row blocks and hands them to the kernels. The
//! 1x1 and general paths are driven from [`super::general`], which reaches the
//! GEMM kernel only through [`gemm`]; every call into `repconv_kernels` is in
//! this file.
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

use super::general;
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
        // Too long a reduction for the GEMM's panels: the general path runs
        // the direct tap loop on the OIHW weights instead, so nothing to pack.
        Family::Conv1x1 | Family::General if general::beyond_gemm(p) => Ok(Vec::new()),
        Family::Conv1x1 | Family::General | Family::Conv3x3 => {
            let (m, k) = (p.out_per_group(), general::gemm_k(p));
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
    let act = kernel_act(conv.activation);
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
        && crate::parallel::may_fork();
    match conv.plan.family() {
        Family::Conv1x1 | Family::General => general::run(conv, act, input, output, parallel),
        Family::Conv3x3 => run_conv3x3(conv, act, input, output, parallel),
        Family::Dw3x3 => run_dw3x3(conv, act, input, output, parallel),
        Family::Dw1x1 => run_dw1x1(conv, act, input, output, parallel),
    }
}

/// The kernels' name for an activation.
fn kernel_act(a: Activation) -> Act {
    match a {
        Activation::None => Act::Identity,
        Activation::Relu => Act::Relu,
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

/// The GEMM every 1x1 and general convolution runs, on one group: for the
/// `m` output rows `r` and the `n` columns `j` of a column band starting at
/// output column `col0`,
/// `c[r * ldc + col0 + j] = A(bias[r] + Σ_kk W[r][kk] · b[kk * ldb + j])`,
/// split into tasks of whole `MR`-row blocks when `parallel`. `c` holds the
/// group's `m` whole output rows (`ldc` long); nothing outside the band is
/// written. The split never changes any element's arithmetic: that depends
/// only on `k`, `n` and the element's column in the band.
///
/// This and [`pack`] are the only places that call the GEMM kernel.
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm(
    isa: Isa,
    act: Act,
    packed: &[f32],
    [m, k, n]: [usize; 3],
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    col0: usize,
    parallel: bool,
) {
    let block_len = (k + 1) * conv1x1::tile(isa).0;
    // `pack` sized the packed weights, k * MR, with checked arithmetic; the
    // panel is k * NR <= 8 k * MR floats.
    let scratch = conv1x1::scratch_len(isa, k).expect("checked when packing");
    for_each_row_block(isa, c, m, ldc, parallel, |first_block, ct| {
        let args = Conv1x1Args {
            m: ct.len() / ldc,
            k,
            n,
            packed: &packed[first_block * block_len..],
            b,
            ldb,
            c: &mut ct[col0..],
            ldc,
        };
        with_panel(scratch, |s| conv1x1::conv1x1(isa, act, args, s));
    });
}

/// Pixels per GEMM register tile of `isa`: bands of the general path are
/// whole multiples of it where they can be.
pub(super) fn gemm_tile_cols(isa: Isa) -> usize {
    conv1x1::tile(isa).1
}

/// Length of one group's packed GEMM weights (`m` rows, reduction `k`) for `isa`.
pub(super) fn gemm_packed_len(isa: Isa, m: usize, k: usize) -> Option<usize> {
    conv1x1::packed_len(isa, m, k)
}

/// The direct 3x3 path: pad and phase-split the input, then run the implicit
/// GEMM over blocks of output channels.
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
    let (mr, _) = conv1x1::tile(isa);
    let block_len = (k + 1) * mr;
    let x = input.as_slice();
    let y = output.into_slice();
    // Row-aligned tiles (the stems): each thread computes every channel of
    // its own band of output rows from its own prepared rows, so no thread
    // prepares or reads rows another one needs. Splitting the channels
    // instead had each thread prepare the whole input (the S0 stem: 11 of
    // its 80 µs on two threads) and split 11 AVX2 blocks 6 + 5.
    let bands_fit = |rows: &std::ops::Range<usize>| {
        g.rows_prepared_len(rows).saturating_mul(size_of::<f32>()) <= crate::scratch::RETAIN_BYTES
    };
    let threads = rayon::current_num_threads();
    if parallel
        && oh >= threads
        && conv3x3::row_bands_supported(isa, &g)
        && bands_fit(&(0..oh.div_ceil(threads)))
    {
        let packed = &conv.packed[..cout.div_ceil(mr) * block_len];
        for (xb, yb) in x.chunks_exact(cin * h * w).zip(y.chunks_exact_mut(cout * oh * ow)) {
            let band = |out: conv3x3::PlaneRowsMut<'_>| {
                let rows = out.rows();
                with_im2col(g.rows_prepared_len(&rows), |prepared| {
                    conv3x3::prepare_input_rows(isa, &g, xb, rows.clone(), prepared);
                    with_offsets(k, |offsets| {
                        conv3x3::tap_offsets_rows(&g, &rows, offsets);
                        let args = conv3x3::Conv3x3RowsArgs {
                            geometry: g,
                            m: cout,
                            packed,
                            prepared,
                            offsets,
                            output: out,
                        };
                        conv3x3::conv3x3_rows(isa, act, args);
                    })
                })
            };
            in_row_bands(conv3x3::PlaneRowsMut::new(yb, cout, oh, ow), threads, &band);
        }
        return;
    }
    // One task per thread (few output blocks: a stem whose output rows are
    // too narrow for row-aligned tiles): every task prepares the whole input
    // into its own thread's buffer and computes its blocks from there. A prepared copy shared between the threads (split
    // by planes, then read whole by both) made each thread read the half the
    // other wrote through L3 or memory, and took two fork-joins: the S0 stem
    // ran at 120-150 GFLOP/s on two threads against 200-210 on one in a
    // stretch when this host's memory was slow, 180-370 this way. Only for a
    // copy small enough to stay in a thread's retained scratch, so the
    // per-thread memory bound (README, "Memory") holds.
    let own_copy = parallel
        && cout.div_ceil(mr) <= 4 * rayon::current_num_threads()
        && g.prepared_len().saturating_mul(size_of::<f32>()) <= crate::scratch::RETAIN_BYTES;
    with_offsets(k, |offsets| {
        conv3x3::tap_offsets(&g, offsets);
        let offsets = &*offsets;
        for (xb, yb) in x.chunks_exact(cin * h * w).zip(y.chunks_exact_mut(cout * oh * ow)) {
            let blocks = |prepared: &[f32], first_block: usize, ct: &mut [f32]| {
                let args = conv3x3::Conv3x3Args {
                    geometry: g,
                    m: ct.len() / (oh * ow),
                    packed: &conv.packed[first_block * block_len..],
                    prepared,
                    offsets,
                    output: ct,
                };
                conv3x3::conv3x3(isa, act, args);
            };
            if own_copy {
                for_each_row_block(isa, yb, cout, oh * ow, parallel, |first_block, ct| {
                    with_im2col(g.prepared_len(), |prepared| {
                        conv3x3::prepare_input(isa, &g, xb, prepared);
                        blocks(prepared, first_block, ct);
                    });
                });
                continue;
            }
            with_im2col(g.prepared_len(), |prepared| {
                if parallel {
                    // Many blocks (a dense 3x3 layer): the phase split of a
                    // large input is split across the threads too.
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
                    blocks(prepared, first_block, ct)
                });
            });
        }
    });
}

/// Splits `out` into `parts` bands of nearly equal rows and runs `f` on each,
/// on rayon (halving, so no list of bands is allocated).
fn in_row_bands(
    out: conv3x3::PlaneRowsMut<'_>,
    parts: usize,
    f: &(dyn Fn(conv3x3::PlaneRowsMut<'_>) + Sync),
) {
    let rows = out.rows();
    if parts <= 1 || rows.len() <= 1 {
        return f(out);
    }
    let top_parts = parts / 2;
    let (top, bottom) = out.split_at(rows.start + rows.len() * top_parts / parts);
    rayon::join(|| in_row_bands(top, top_parts, f), || in_row_bands(bottom, parts - top_parts, f));
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
    // Whole images x channel chunks: one chunk per thread, of at least
    // ~64 KiB of output (smaller layers split into fewer chunks).
    let threads = if parallel { rayon::current_num_threads() } else { 1 };
    let target = if parallel {
        // One chunk per thread: with four, a fork-join's overhead weighed on
        // layers of a few µs, and channel counts whose divisors do not split
        // evenly left one thread a chunk more (48 channels in chunks of 16
        // on two threads). Zen 5, two threads, GFLOP/s: 48 channels on
        // 56x56 at stride 2 100-105 -> 129-137, 192 on 28x28 at stride 2
        // 102-104 -> 134-137, 48 on 56x56 183-208 -> 222-225; S0 and S1
        // 0.98x the time (5 of 6 interleaved rounds).
        let by_threads = (n * c).div_ceil(threads);
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
