//! An in-process measurement of the f32 FMA peak of one ISA, so kernel speeds
//! are reported as a fraction of a peak measured in the same run, on the same
//! core, with the same instructions.

use crate::isa::{Isa, Job, Vector, dispatch};

/// Independent accumulator chains: more than FMA latency (4 cycles) times FMA
/// ports (2), so the loop is throughput-bound, not latency-bound.
const CHAINS: usize = 16;

/// Runs `iters` rounds of `CHAINS` independent vector FMAs with `isa`'s
/// vectors and returns the number of floating-point operations done (2 per
/// multiply-add per lane). The result of the arithmetic is passed through
/// `black_box` so it cannot be optimised away.
pub fn fma_loop(isa: Isa, iters: u64) -> u64 {
    dispatch(isa, FmaLoop(iters))
}

struct FmaLoop(u64);

impl Job for FmaLoop {
    type Out = u64;
    #[inline(always)]
    fn run<V: Vector>(self) -> u64 {
        let mut acc = [V::zero(); CHAINS];
        for (i, a) in acc.iter_mut().enumerate() {
            *a = V::splat(i as f32 * 1e-3);
        }
        // Multipliers near 1 keep values finite and away from denormals.
        let m = std::hint::black_box(V::splat(0.999_999));
        let c = std::hint::black_box(V::splat(1e-7));
        for _ in 0..self.0 {
            for a in acc.iter_mut() {
                *a = a.mul_add(m, c);
            }
        }
        std::hint::black_box(&acc);
        self.0 * (CHAINS * V::LANES * 2) as u64
    }
}
