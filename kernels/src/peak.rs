//! An in-process measurement of the f32 FMA peak of one ISA, so kernel speeds
//! are reported as a fraction of a peak measured in the same run, on the same
//! core, with the same instructions.

use crate::isa::{Isa, Job, Vector, dispatch};

/// The most accumulator chains of any ISA (`Vector::PEAK_CHAINS`).
const MAX_CHAINS: usize = 16;

/// Runs `iters` rounds of `PEAK_CHAINS` independent vector FMAs with `isa`'s
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
        // A new chain count is a compile error here, not a silent 6.
        const { assert!(matches!(V::PEAK_CHAINS, 6 | 12 | 16)) };
        match V::PEAK_CHAINS {
            16 => chains::<V, 16>(self.0),
            12 => chains::<V, 12>(self.0),
            _ => chains::<V, 6>(self.0),
        }
    }
}

/// `iters` rounds of `C` independent FMA chains; returns the FLOPs done.
#[inline(always)]
fn chains<V: Vector, const C: usize>(iters: u64) -> u64 {
    const { assert!(C <= MAX_CHAINS) };
    let mut acc = [V::zero(); C];
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
    std::hint::black_box(&acc);
    iters * (C * V::LANES * 2) as u64
}
