//! The elementwise passes of the multi-branch form (BN, branch sums, ReLU,
//! squeeze-excitation scaling), written as plain loops that LLVM vectorises
//! (a multiply then an add: `f32::mul_add` would be a libm call per element in
//! a build without FMA; these passes are memory-bound), split over `(n, c)` planes on
//! rayon when the tensor is large enough to pay for the hand-off. Every
//! element is computed by one task with the same arithmetic, so results do not
//! depend on the thread count.

use rayon::prelude::*;
use repconv_kernels::Isa;

use super::workspace::grow;

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

/// Rows of `w` per task of [`matvec`] and [`matvec_batch`].
const ROWS: usize = 16;

/// `y[o] = bias[o] + dot(w[o, ..], x)` for a row-major `w` of `y.len()` rows
/// of `x.len()` columns (the SE 1x1 convolutions on pooled vectors and the
/// linear head), with `isa`'s dot product: chunks of 16 rows per task, each
/// row's arithmetic the same whatever the split. `w.len()` must be
/// `y.len() * x.len()`.
pub(crate) fn matvec(isa: Isa, w: &[f32], bias: &[f32], x: &[f32], y: &mut [f32]) {
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

/// [`matvec`] for each of the `n = xs.len() / k` samples of a batch: `xs` is
/// `n` rows of `k` features, `ys` `n` rows of `m = bias.len()` outputs.
///
/// Each block of 16 rows of `w` is read once for the whole batch (and stays in
/// L2 from one sample to the next) instead of once per sample: a classifier's
/// weights are megabytes that do not stay in cache between images. Every
/// output is the same dot product [`matvec`] computes for its sample alone,
/// so the results are bitwise equal to it. Tasks are row blocks; their
/// results go to `tmp` (block by block, sample by sample: disjoint slices per
/// task) and are then copied into `ys`.
pub(crate) fn matvec_batch(
    isa: Isa,
    w: &[f32],
    bias: &[f32],
    xs: &[f32],
    k: usize,
    ys: &mut [f32],
    tmp: &mut Vec<f32>,
) {
    let m = bias.len();
    if k == 0 || m == 0 {
        return;
    }
    let n = xs.len() / k;
    if n <= 1 {
        return matvec(isa, w, bias, &xs[..k * n], &mut ys[..m * n]);
    }
    // Block b (rows o0 = 16b .. o0 + r) holds sample i's r outputs at
    // tmp[o0 * n + i * r ..][..r].
    let tmp = grow(tmp, m * n);
    let block = |(b, t): (usize, &mut [f32])| {
        let o0 = b * ROWS;
        let r = t.len() / n;
        let (wb, bb) = (&w[o0 * k..(o0 + r) * k], &bias[o0..o0 + r]);
        for (x, out) in xs.chunks_exact(k).zip(t.chunks_exact_mut(r)) {
            repconv_kernels::dot::matvec(isa, wb, bb, x, out);
        }
    };
    if parallel(w.len()) {
        tmp.par_chunks_mut(ROWS * n).enumerate().for_each(block);
    } else {
        tmp.chunks_mut(ROWS * n).enumerate().for_each(block);
    }
    for (b, t) in tmp.chunks(ROWS * n).enumerate() {
        let (o0, r) = (b * ROWS, t.len() / n);
        for (y, out) in ys.chunks_exact_mut(m).zip(t.chunks_exact(r)) {
            y[o0..o0 + r].copy_from_slice(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mobileone::SplitMix64;

    /// The batched head must give every sample exactly what `matvec` gives it
    /// alone, whatever the batch size, row count (partial last block) and
    /// thread count (`k = 1000` makes the weights large enough to split).
    #[test]
    fn matvec_batch_is_bitwise_matvec_per_sample() {
        let mut rng = SplitMix64::new(7);
        for (m, k) in [(1, 3), (16, 19), (37, 19), (37, 1000)] {
            let w = rng.uniform_vec(m * k, -1.0, 1.0);
            let bias = rng.uniform_vec(m, -1.0, 1.0);
            for n in [0, 1, 2, 5] {
                let mut xs = rng.uniform_vec(n * k, -1.0, 1.0);
                if n == 5 {
                    xs[3 * k + 1] = f32::NAN; // stays in sample 3's outputs
                }
                let mut alone = vec![0.0; n * m];
                for (x, y) in xs.chunks_exact(k).zip(alone.chunks_exact_mut(m)) {
                    matvec(Isa::best(), &w, &bias, x, y);
                }
                for threads in [1, 3] {
                    let pool =
                        rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                    let mut ys = vec![f32::INFINITY; n * m];
                    let mut tmp = Vec::new();
                    pool.install(|| {
                        matvec_batch(Isa::best(), &w, &bias, &xs, k, &mut ys, &mut tmp)
                    });
                    let same = ys.iter().zip(&alone).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "m {m} k {k} n {n} threads {threads}");
                    if n == 5 {
                        assert!(ys[3 * m..4 * m].iter().all(|v| v.is_nan()));
                        assert!(ys[..3 * m].iter().chain(&ys[4 * m..]).all(|v| v.is_finite()));
                    }
                }
            }
        }
    }
}
