//! An in-process measurement of the `vdpbf16ps` peak, so bf16 kernel speeds
//! are reported as a fraction of a peak measured in the same run, on the same
//! core, with the same instruction (as [`crate::peak`] does for f32 FMA).
//!
//! FLOPs count 2 per product and 2 products per lane: 64 per 512-bit
//! `vdpbf16ps`. 12 independent chains read about 10% low on Zen 4
//! (latency-bound, `../shared/BF16.md`), so the default is 24 chains: 24
//! accumulators + 2 operands of 32 zmm.

use super::simd::Simd;
use super::{Bf16Isa, Bf16Job, LANES, dispatch};

/// The chain counts [`dpbf16_loop_chains`] accepts.
pub const CHAINS: [usize; 4] = [12, 16, 20, 24];

/// Runs `iters` rounds of 24 independent `vdpbf16ps` chains with `isa` and
/// returns the floating-point operations done (`iters * 24 * 64`).
pub fn dpbf16_loop(isa: Bf16Isa, iters: u64) -> u64 {
    dpbf16_loop_chains(isa, 24, iters)
}

/// [`dpbf16_loop`] with `chains` independent accumulators, one of [`CHAINS`]
/// (to see where the loop stops being latency-bound).
///
/// # Panics
/// If `chains` is not one of [`CHAINS`].
pub fn dpbf16_loop_chains(isa: Bf16Isa, chains: usize, iters: u64) -> u64 {
    struct Run(usize, u64);
    impl Bf16Job for Run {
        type Out = u64;
        #[inline(always)]
        fn run<S: Simd>(self) -> u64 {
            match self.0 {
                12 => run_chains::<S, 12>(self.1),
                16 => run_chains::<S, 16>(self.1),
                20 => run_chains::<S, 20>(self.1),
                24 => run_chains::<S, 24>(self.1),
                c => panic!("{c} chains: expected one of {CHAINS:?}"),
            }
        }
    }
    if !CHAINS.contains(&chains) {
        panic!("{chains} chains: expected one of {CHAINS:?}");
    }
    dispatch(isa, Run(chains, iters))
}

/// `iters` rounds of `C` independent dot-product chains; returns the FLOPs.
#[inline(always)]
fn run_chains<S: Simd, const C: usize>(iters: u64) -> u64 {
    let mut acc = [S::zero(); C];
    for (i, a) in acc.iter_mut().enumerate() {
        *a = S::splat(i as f32);
    }
    // Pairs (1, -1) and (2^-10, 2^-10): each instruction adds 2^-10 and
    // takes it away again, so the accumulators stay near their start
    // (no overflow, no denormals, however long the loop).
    let a = std::hint::black_box(S::splat_pair(0xbf80_3f80));
    let b = std::hint::black_box(S::splat_pair(0x3a80_3a80));
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = S::dot(*x, a, b);
        }
    }
    std::hint::black_box(&acc);
    iters * (C * LANES * 4) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bf16::convert::bf16_to_f32;

    #[test]
    fn operands_are_what_the_comment_says_and_flops_count() {
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
        assert_eq!(bf16_to_f32(0xbf80), -1.0);
        assert_eq!(bf16_to_f32(0x3a80), 1.0 / 1024.0);
        for isa in Bf16Isa::available() {
            assert_eq!(dpbf16_loop(isa, 10), 10 * 24 * 64);
            assert_eq!(dpbf16_loop_chains(isa, 12, 3), 3 * 12 * 64);
        }
    }
}
