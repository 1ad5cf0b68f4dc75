//! The elementwise passes of the multi-branch form (BN, branch sums, ReLU,
//! squeeze-excitation scaling), written as plain loops that LLVM vectorises
//! (a multiply then an add: `f32::mul_add` would be a libm call per element in
//! a build without FMA; these passes are memory-bound), split over `(n, c)` planes on
//! rayon when the tensor is large enough to pay for the hand-off. Every
//! element is computed by one task with the same arithmetic, so results do not
//! depend on the thread count.

use rayon::prelude::*;
use repconv_kernels::Isa;

/// ReLU with PyTorch's NaN semantics: `relu(NaN) = NaN` (`f32::max` would
/// return 0), the same function the kernels' epilogue applies.
#[inline(always)]
pub(crate) fn relu_nan(x: f32) -> f32 {
    repconv_kernels::act::relu(x)
}

/// Below this many elements a pass runs on the calling thread.
const PAR_MIN_ELEMENTS: usize = 1 << 15;

fn parallel(len: usize) -> bool {
    len >= PAR_MIN_ELEMENTS && crate::parallel::may_fork()
}

/// Runs `f(plane_index, plane)` over the `hw`-long planes of `y`.
fn each_plane(y: &mut [f32], hw: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if hw == 0 {
        return;
    }
    if parallel(y.len()) {
        y.par_chunks_mut(hw).enumerate().for_each(|(p, plane)| f(p, plane));
    } else {
        y.chunks_mut(hw).enumerate().for_each(|(p, plane)| f(p, plane));
    }
}

/// `y = y * scale[c] + shift[c]` (then ReLU when `relu`), `c = plane % scale.len()`.
pub(crate) fn affine_inplace(y: &mut [f32], hw: usize, scale: &[f32], shift: &[f32], relu: bool) {
    let c = scale.len();
    each_plane(y, hw, |p, plane| {
        let (s, b) = (scale[p % c], shift[p % c]);
        if relu {
            plane.iter_mut().for_each(|v| *v = relu_nan(*v * s + b));
        } else {
            plane.iter_mut().for_each(|v| *v = *v * s + b);
        }
    });
}

/// `acc += x * scale[c] + shift[c]` (then ReLU when `relu`): one normalised
/// branch added to the running sum in a single pass.
pub(crate) fn affine_accumulate(
    acc: &mut [f32],
    x: &[f32],
    hw: usize,
    scale: &[f32],
    shift: &[f32],
    relu: bool,
) {
    let c = scale.len();
    each_plane(acc, hw, |p, plane| {
        let (s, b) = (scale[p % c], shift[p % c]);
        let xs = &x[p * hw..(p + 1) * hw];
        if relu {
            plane.iter_mut().zip(xs).for_each(|(a, &v)| *a = relu_nan(*a + (v * s + b)));
        } else {
            plane.iter_mut().zip(xs).for_each(|(a, &v)| *a += v * s + b);
        }
    });
}

/// Sum of a slice with 16 independent lane accumulators (vectorisable, and
/// more accurate than one serial accumulator).
pub(crate) fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().sum();
    for ch in chunks {
        for (a, v) in acc.iter_mut().zip(ch) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `means[p] = mean of plane p` for the `hw`-long planes of `y`.
pub(crate) fn plane_means(y: &[f32], hw: usize, means: &mut [f32]) {
    if hw == 0 {
        return;
    }
    let inv = 1.0 / hw as f32;
    if parallel(y.len()) {
        means.par_iter_mut().zip(y.par_chunks(hw)).for_each(|(m, plane)| *m = sum(plane) * inv);
    } else {
        means.iter_mut().zip(y.chunks(hw)).for_each(|(m, plane)| *m = sum(plane) * inv);
    }
}

/// `y = max(y * s[p], 0)` with one factor per plane (squeeze-excitation's
/// channel scale followed by the block's ReLU), or without the ReLU.
pub(crate) fn scale_planes(y: &mut [f32], hw: usize, s: &[f32], relu: bool) {
    each_plane(y, hw, |p, plane| {
        let f = s[p];
        if relu {
            plane.iter_mut().for_each(|v| *v = relu_nan(*v * f));
        } else {
            plane.iter_mut().for_each(|v| *v *= f);
        }
    });
}

/// `y[o] = bias[o] + dot(w[o, ..], x)` for a row-major `w` of `y.len()` rows
/// of `x.len()` columns (the SE 1x1 convolutions on pooled vectors and the
/// linear head), with `isa`'s dot product: chunks of 16 rows per task, each
/// row's arithmetic the same whatever the split. `w.len()` must be
/// `y.len() * x.len()`.
pub(crate) fn matvec(isa: Isa, w: &[f32], bias: &[f32], x: &[f32], y: &mut [f32]) {
    const ROWS: usize = 16;
    let k = x.len();
    let chunk = |(i, ys): (usize, &mut [f32])| {
        let o = i * ROWS;
        let rows = ys.len();
        repconv_kernels::dot::matvec(isa, &w[o * k..(o + rows) * k], &bias[o..o + rows], x, ys);
    };
    if parallel(w.len()) {
        y.par_chunks_mut(ROWS).enumerate().for_each(chunk);
    } else {
        y.chunks_mut(ROWS).enumerate().for_each(chunk);
    }
}
