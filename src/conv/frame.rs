//! The frame every runner works in: whether a call forks, how its output is
//! cut into tasks (chunks, `MR`-row blocks, row bands), and the one helper that
//! runs the tasks on rayon or on the calling thread.
//!
//! Every split here depends only on the geometry and the thread count, and
//! every output element is written by exactly one task with the same
//! arithmetic whatever the split, so results are bitwise identical for any
//! number of threads (and for `Parallelism::Serial`).

use rayon::prelude::*;
use repconv_kernels::Activation as KernelAct;
use repconv_kernels::conv3x3::PlaneRowsMut;

use super::plan::Family;
use super::{Activation, Conv2d, Parallelism};
use crate::tensor::{TensorView, TensorViewMut};

/// One call of a convolution, as every runner receives it: shapes already
/// checked, the activation in the kernels' terms, the fork decided.
pub(super) struct Call<'a> {
    /// The convolution (its plan, packed weights, parameters).
    pub conv: &'a Conv2d,
    /// The fused activation.
    pub act: KernelAct,
    /// The input, `n x cin x h x w`.
    pub input: TensorView<'a>,
    /// The output, `n x cout x oh x ow`.
    pub output: TensorViewMut<'a>,
    /// Whether the runner may split the work over threads.
    pub parallel: bool,
}

/// Below this many FLOPs a forward pass runs on the calling thread: handing
/// work to other threads costs about as long as such a layer takes.
pub(super) const PAR_MIN_FLOPS: u64 = 2_000_000;

/// How many GEMM FLOPs one depthwise FLOP is worth in the fork decision:
/// depthwise layers move as many bytes as they compute (docs/performance.md).
const DEPTHWISE_WORK_FACTOR: u64 = 4;

/// Whether one call of `conv` on `flops` of work splits over threads.
pub(super) fn forks(conv: &Conv2d, flops: u64) -> bool {
    let work = match conv.plan.family() {
        Family::Dw3x3 | Family::Dw1x1 => flops.saturating_mul(DEPTHWISE_WORK_FACTOR),
        _ => flops,
    };
    conv.parallelism == Parallelism::Rayon
        && work >= conv.parallel_min_flops
        && crate::parallel::may_fork()
}

/// The kernels' name for an activation.
pub(super) fn kernel_act(a: Activation) -> KernelAct {
    match a {
        Activation::None => KernelAct::Identity,
        Activation::Relu => KernelAct::Relu,
    }
}

/// How [`for_each_chunk`] runs its tasks.
#[derive(Clone, Copy, Debug)]
pub(super) enum Split {
    /// One after the other on the calling thread.
    Serial,
    /// On rayon, each task taking at least `min_chunks` consecutive chunks.
    Parallel {
        /// Fewest chunks per rayon task (1: any split).
        min_chunks: usize,
    },
}

impl Split {
    /// `Parallel` with any split when `parallel`, else `Serial`.
    pub(super) fn from(parallel: bool) -> Split {
        if parallel { Split::Parallel { min_chunks: 1 } } else { Split::Serial }
    }
}

/// Runs `f(i, chunk)` on each `chunk_len`-long chunk `i` of `data` (the last
/// may be shorter): the one place the crate's runners choose between rayon
/// and the calling thread.
pub(super) fn for_each_chunk<T: Send>(
    data: &mut [T],
    chunk_len: usize,
    split: Split,
    f: impl Fn(usize, &mut [T]) + Sync + Send,
) {
    let chunk_len = chunk_len.max(1);
    match split {
        Split::Parallel { min_chunks } => data
            .par_chunks_mut(chunk_len)
            .with_min_len(min_chunks.max(1))
            .enumerate()
            .for_each(|(i, c)| f(i, c)),
        Split::Serial => data.chunks_mut(chunk_len).enumerate().for_each(|(i, c)| f(i, c)),
    }
}

/// The largest divisor of `n` not above `target` (at least 1), so chunks of
/// that many channels tile every image exactly.
pub(super) fn largest_divisor_at_most(n: usize, target: usize) -> usize {
    (1..=target.clamp(1, n.max(1))).rev().find(|d| n.is_multiple_of(*d)).unwrap_or(1)
}

/// Splits the `m` output rows (`row_len` floats each) of `c` into tasks of
/// whole `mr`-row blocks and runs `f(first_block, rows)` on each, on rayon
/// when `parallel`. Each task streams its whole input once for all its
/// blocks, so tasks hold as many blocks as balance allows: one task per
/// thread when blocks are few (a stem's 6), two per thread otherwise.
pub(super) fn for_each_row_block(
    mr: usize,
    c: &mut [f32],
    m: usize,
    row_len: usize,
    parallel: bool,
    f: impl Fn(usize, &mut [f32]) + Sync + Send,
) {
    let blocks = m.div_ceil(mr);
    let threads = rayon::current_num_threads();
    let blocks_per_task = if !parallel {
        blocks
    } else if blocks <= 4 * threads {
        blocks.div_ceil(threads)
    } else {
        (blocks / (2 * threads)).max(1)
    };
    let split = Split::from(parallel && blocks > 1);
    for_each_chunk(&mut c[..m * row_len], blocks_per_task * mr * row_len, split, |t, ct| {
        f(t * blocks_per_task, ct)
    });
}

/// Splits `out` into `parts` bands of nearly equal rows and runs `f` on each,
/// on rayon (halving, so no list of bands is allocated).
pub(super) fn in_row_bands(
    out: PlaneRowsMut<'_>,
    parts: usize,
    f: &(dyn Fn(PlaneRowsMut<'_>) + Sync),
) {
    let rows = out.rows();
    if parts <= 1 || rows.len() <= 1 {
        return f(out);
    }
    let top_parts = parts / 2;
    let (top, bottom) = out.split_at(rows.start + rows.len() * top_parts / parts);
    rayon::join(|| in_row_bands(top, top_parts, f), || in_row_bands(bottom, parts - top_parts, f));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largest_divisor_tiles_exactly() {
        assert_eq!(largest_divisor_at_most(48, 24), 24);
        assert_eq!(largest_divisor_at_most(48, 20), 16);
        assert_eq!(largest_divisor_at_most(7, 4), 1);
        assert_eq!(largest_divisor_at_most(9, 5), 3);
        assert_eq!(largest_divisor_at_most(9, 0), 1);
        assert_eq!(largest_divisor_at_most(9, 100), 9);
    }

    #[test]
    fn every_chunk_is_visited_once_in_both_splits() {
        for split in [Split::Serial, Split::Parallel { min_chunks: 3 }] {
            let mut data = vec![0u32; 103];
            for_each_chunk(&mut data, 10, split, |i, c| {
                c.iter_mut().for_each(|v| *v += i as u32 + 1)
            });
            for (j, v) in data.iter().enumerate() {
                assert_eq!(*v, j as u32 / 10 + 1, "{split:?} at {j}");
            }
        }
    }
}
