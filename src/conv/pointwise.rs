//! The 1x1 runner: the input planes of each image are the GEMM's matrix
//! already (reduction = input channels, columns = pixels), so no copy.

use repconv_kernels::Activation as KernelAct;

use super::Conv2d;
use super::gemm::Gemm;
use crate::tensor::{TensorView, TensorViewMut};

/// Runs a 1x1, stride-1, unpadded, ungrouped convolution (shapes checked).
pub(super) fn run(
    conv: &Conv2d,
    act: KernelAct,
    input: TensorView<'_>,
    output: TensorViewMut<'_>,
    parallel: bool,
) {
    let [_, cin, h, w] = input.shape();
    let [_, cout, ..] = output.shape();
    let npix = h * w;
    let x = input.as_slice();
    let y = output.into_slice();
    for (xb, yb) in x.chunks_exact(cin * npix).zip(y.chunks_exact_mut(cout * npix)) {
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
