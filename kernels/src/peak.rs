//! An in-process measurement of this build's f32 FMA peak, so kernel speeds are
//! reported as a fraction of a peak measured in the same run, on the same core,
//! with the same vector width.

use crate::lanes::{LANES, V};

/// Independent accumulator chains: more than FMA latency (4 cycles) times FMA
/// ports (2), so the loop is throughput-bound, not latency-bound.
const CHAINS: usize = 16;

/// Runs `iters` rounds of `CHAINS` independent vector FMAs and returns the
/// number of floating-point operations done (2 per multiply-add per lane).
/// The result of the arithmetic is passed through `black_box` so it cannot be
/// optimised away.
pub fn fma_loop(iters: u64) -> u64 {
    let mut acc = [V::ZERO; CHAINS];
    for (i, a) in acc.iter_mut().enumerate() {
        *a = V::splat(i as f32 * 1e-3);
    }
    // Multipliers near 1 keep values finite and away from denormals.
    let m = std::hint::black_box(V::splat(0.999_999));
    let c = std::hint::black_box(V::splat(1e-7));
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = a.mul_add(m, c);
        }
    }
    std::hint::black_box(acc);
    iters * (CHAINS * LANES * 2) as u64
}
