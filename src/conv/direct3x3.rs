//! The direct 3x3 runner (stride 1 or 2, padding 1): the input is padded and
//! phase-split into a prepared copy, then an implicit GEMM runs over blocks of
//! output channels. Three schedules, picked per call by the output's shape:
//!
//! - [`row_bands`]: each thread computes every channel of its own band of
//!   output rows from its own prepared rows (the stems: few channels, many
//!   rows), so no thread prepares or reads rows another one needs;
//! - [`own_copies`]: few channel blocks but rows too narrow for row tiles:
//!   each task prepares the whole input into its own thread's buffer;
//! - [`shared_copy`]: many channel blocks (a dense 3x3 layer): one prepared
//!   copy, split over threads, read by every task.
//!
//! Why each exists, with measurements: docs/performance.md.

use std::ops::Range;

use repconv_kernels::conv3x3::{self, Geometry, PlaneRowsMut};
use repconv_kernels::{Activation as KernelAct, Isa, bf16, conv1x1};

use super::Conv2d;
use super::frame::{Call, Split, for_each_chunk, for_each_row_block, in_row_bands};
use crate::scratch::{RETAIN_BYTES, with_im2col, with_offsets, with_panel};

/// What every schedule of one call shares.
struct Direct<'a> {
    conv: &'a Conv2d,
    act: KernelAct,
    isa: Isa,
    geometry: Geometry,
    /// Output channels, rows and columns.
    out: [usize; 3],
    /// Packed floats per block of `MR` output channels.
    block_len: usize,
    mr: usize,
}

/// Runs a direct 3x3 convolution (shapes checked).
pub(super) fn run(call: Call<'_>) {
    let Call { conv, act, input, output, parallel } = call;
    let [_, cin, h, w] = input.shape();
    let [_, cout, oh, ow] = output.shape();
    // Never Err: validate() checked the stride (1 or 2) and non-zero sizes,
    // and the input exists, so its padded copy (at most ~9x its floats) fits.
    let geometry = Geometry::new(cin, h, w, conv.params.stride[0])
        .expect("Conv2dParams::validate checked the geometry");
    let isa = conv.plan.isa();
    let mr = conv1x1::tile(isa).0;
    let block_len = (geometry.k() + 1) * mr;
    let call = Direct { conv, act, isa, geometry, out: [cout, oh, ow], block_len, mr };
    let x = input.as_slice();
    let y = output.into_slice();
    let threads = rayon::current_num_threads();
    let fits_retained = |floats: usize| floats.saturating_mul(size_of::<f32>()) <= RETAIN_BYTES;
    if parallel
        && oh >= threads
        && conv3x3::row_bands_supported(isa, &geometry)
        && fits_retained(geometry.rows_prepared_len(&(0..oh.div_ceil(threads))))
    {
        row_bands(&call, x, y, threads);
    } else if parallel && cout.div_ceil(mr) <= 4 * threads && fits_retained(geometry.prepared_len())
    {
        // Only for a copy small enough to stay in a thread's retained
        // scratch, so the per-thread memory bound holds.
        own_copies(&call, x, y);
    } else {
        shared_copy(&call, x, y, parallel);
    }
}

/// Every image's output rows in one band per thread; each band prepares its
/// own input rows and computes all channels of them.
fn row_bands(call: &Direct<'_>, x: &[f32], y: &mut [f32], threads: usize) {
    let Direct { act, isa, geometry: g, out: [cout, oh, ow], block_len, mr, .. } = *call;
    let packed = &call.conv.packed[..cout.div_ceil(mr) * block_len];
    let image_in = g.input_len();
    for (xb, yb) in x.chunks_exact(image_in).zip(y.chunks_exact_mut(cout * oh * ow)) {
        let band = |output: PlaneRowsMut<'_>| {
            let rows: Range<usize> = output.rows();
            with_im2col(g.rows_prepared_len(&rows), |prepared| {
                conv3x3::prepare_input_rows(isa, &g, xb, rows.clone(), prepared);
                with_offsets(g.k(), |offsets| {
                    conv3x3::tap_offsets_rows(&g, &rows, offsets);
                    let args = conv3x3::Conv3x3RowsArgs {
                        geometry: g,
                        m: cout,
                        packed,
                        prepared,
                        offsets,
                        output,
                    };
                    conv3x3::conv3x3_rows(isa, act, args);
                })
            })
        };
        in_row_bands(PlaneRowsMut::new(yb, cout, oh, ow), threads, &band);
    }
}

/// The channel blocks of `yc` (starting at block `first_block`) from one
/// prepared input.
fn blocks(
    call: &Direct<'_>,
    prepared: &[f32],
    offsets: &[usize],
    first_block: usize,
    yc: &mut [f32],
) {
    let [_, oh, ow] = call.out;
    let args = conv3x3::Conv3x3Args {
        geometry: call.geometry,
        m: yc.len() / (oh * ow),
        packed: &call.conv.packed[first_block * call.block_len..],
        prepared,
        offsets,
        output: yc,
    };
    conv3x3::conv3x3(call.isa, call.act, args);
}

/// Runs `f(image input, image output, tap offsets)` on every image, with
/// the tap offset table made once.
fn per_image(
    call: &Direct<'_>,
    x: &[f32],
    y: &mut [f32],
    f: impl Fn(&[f32], &mut [f32], &[usize]),
) {
    let Direct { geometry: g, out: [cout, oh, ow], .. } = *call;
    with_offsets(g.k(), |offsets| {
        conv3x3::tap_offsets(&g, offsets);
        for (xb, yb) in x.chunks_exact(g.input_len()).zip(y.chunks_exact_mut(cout * oh * ow)) {
            f(xb, yb, offsets);
        }
    });
}

/// One task per thread, each preparing the whole input into its own buffer
/// and computing its channel blocks from it (no prepared half read across
/// cores, one fork-join).
fn own_copies(call: &Direct<'_>, x: &[f32], y: &mut [f32]) {
    let Direct { isa, geometry: g, out: [cout, oh, ow], mr, .. } = *call;
    per_image(call, x, y, |xb, yb, offsets| {
        for_each_row_block(mr, yb, cout, oh * ow, true, |first_block, yc| {
            with_im2col(g.prepared_len(), |prepared| {
                conv3x3::prepare_input(isa, &g, xb, prepared);
                blocks(call, prepared, offsets, first_block, yc);
            });
        });
    });
}

/// One prepared copy per image (its planes prepared in parallel when
/// `parallel`), read by every task of channel blocks.
fn shared_copy(call: &Direct<'_>, x: &[f32], y: &mut [f32], parallel: bool) {
    let Direct { isa, geometry: g, out: [cout, oh, ow], mr, .. } = *call;
    per_image(call, x, y, |xb, yb, offsets| {
        with_im2col(g.prepared_len(), |prepared| {
            if parallel {
                let slack = g.slack_range();
                prepared[slack.clone()].fill(0.0);
                let planes = &mut prepared[..slack.start];
                for_each_chunk(planes, g.plane_len(), Split::from(true), |i, plane| {
                    conv3x3::prepare_plane(isa, &g, xb, i, plane)
                });
            } else {
                conv3x3::prepare_input(isa, &g, xb, prepared);
            }
            let prepared = &*prepared;
            for_each_row_block(mr, yb, cout, oh * ow, parallel, |first_block, yc| {
                blocks(call, prepared, offsets, first_block, yc)
            });
        });
    });
}

/// The bf16 direct 3x3 (`Precision::Bf16`): per image, tasks of whole 8-row
/// blocks of output channels, each preparing the (small) input and its pair
/// panels in its own scratch; the split never changes any element's
/// arithmetic (bands of rows depend only on the geometry).
pub(super) fn run_bf16(call: Call<'_>) {
    let Call { conv, act, input, output, parallel } = call;
    let [_, cin, h, w] = input.shape();
    let [_, cout, oh, ow] = output.shape();
    let stride = conv.params.stride[0];
    // Plan::with_precision picks a bf16 kernel only together with its
    // Bf16Isa, and exec sends only such plans here: never None.
    let isa = conv.plan.bf16().expect("a bf16 plan");
    let block_len = ((cin * 9).div_ceil(2) + 1) * bf16::MR;
    // Never None: the registry's predicate bounds cin (<= 4096), validate()
    // the stride, and the input exists, so both lengths fit in usize.
    let (prepared_len, panel_len) =
        bf16::conv3x3_scratch_len(cin, h, w, stride).expect("scratch fits");
    let x = input.as_slice();
    let y = output.into_slice();
    for (xb, yb) in x.chunks_exact(cin * h * w).zip(y.chunks_exact_mut(cout * oh * ow)) {
        for_each_row_block(bf16::MR, yb, cout, oh * ow, parallel, |first_block, yc| {
            with_im2col(prepared_len, |prepared| {
                with_panel(panel_len, |panel| {
                    let args = bf16::Conv3x3Bf16Args {
                        cin,
                        h,
                        w,
                        cout: yc.len() / (oh * ow),
                        stride,
                        packed: &conv.packed_bf16[first_block * block_len..],
                        input: xb,
                        output: yc,
                    };
                    bf16::conv3x3_bf16(isa, act, args, prepared, bytemuck::cast_slice_mut(panel));
                })
            })
        });
    }
}
