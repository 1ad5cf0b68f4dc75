//! The 1x1 runner: the input planes of each image are the GEMM's matrix
//! already (reduction = input channels, columns = pixels), so no copy.

use repconv_kernels::bf16::{self, Conv1x1Bf16Args};

use super::frame::{Call, for_each_row_block};
use super::gemm::Gemm;
use crate::scratch::with_panel;

/// The images of a 1x1 call: `(input, output)` planes of each, and the
/// sizes `[cin, cout, pixels]`.
fn images<'c>(call: Call<'c>) -> (impl Iterator<Item = (&'c [f32], &'c mut [f32])>, [usize; 3]) {
    let [_, cin, h, w] = call.input.shape();
    let [_, cout, ..] = call.output.shape();
    let npix = h * w;
    let x = call.input.as_slice();
    let y = call.output.into_slice();
    (x.chunks_exact(cin * npix).zip(y.chunks_exact_mut(cout * npix)), [cin, cout, npix])
}

/// Runs a 1x1, stride-1, unpadded, ungrouped convolution.
pub(super) fn run(call: Call<'_>) {
    let (conv, act, parallel) = (call.conv, call.act, call.parallel);
    let (images, [cin, cout, npix]) = images(call);
    for (xb, yb) in images {
        let gemm = Gemm {
            isa: conv.plan.isa(),
            act,
            packed: &conv.packed,
            m: cout,
            k: cin,
            n: npix,
            b: xb,
            ldb: npix,
            ldc: npix,
            col0: 0,
        };
        gemm.run(yb, parallel);
    }
}

/// [`run`] with the bf16 GEMM (`Precision::Bf16`): each task of whole
/// 8-row blocks converts the input to bf16 pairs a band at a time in its own
/// scratch and computes its rows; the split never changes any element's
/// arithmetic.
pub(super) fn run_bf16(call: Call<'_>) {
    let (conv, act, parallel) = (call.conv, call.act, call.parallel);
    // Plan::with_precision picks a bf16 kernel only together with its
    // Bf16Isa, and exec sends only such plans here: never None.
    let isa = conv.plan.bf16().expect("a bf16 plan");
    let (images, [cin, cout, npix]) = images(call);
    let block_len = (cin.div_ceil(2) + 1) * bf16::MR;
    // At most BAND_WORDS, or 48 columns of cin <= 65536 channel pairs.
    let scratch = bf16::scratch_len(cin, npix).expect("bounded by the registry's predicate");
    for (xb, yb) in images {
        for_each_row_block(bf16::MR, yb, cout, npix, parallel, |first_block, yc| {
            let args = Conv1x1Bf16Args {
                m: yc.len() / npix,
                k: cin,
                n: npix,
                packed: &conv.packed_bf16[first_block * block_len..],
                b: xb,
                ldb: npix,
                c: yc,
                ldc: npix,
            };
            with_panel(scratch, |s| {
                bf16::conv1x1_bf16(isa, act, args, bytemuck::cast_slice_mut(s))
            });
        });
    }
}
