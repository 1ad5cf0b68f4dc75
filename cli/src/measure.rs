//! Measurement helpers for the CLI's tables: wall-clock medians and this
//! machine's f32 FMA peak (and, on CPUs with AVX512_BF16, its `vdpbf16ps`
//! peak), measured in-process so every "% of peak" compares two numbers from
//! the same run, build and machine.

use std::time::Instant;

/// Runs `f` `warmup` times, then `runs` times, and returns the median
/// wall-clock time of one run in milliseconds.
pub fn median_ms(warmup: usize, runs: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..warmup {
        f();
    }
    let mut times: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// The f32 FMA peak of `threads` threads with `isa`'s vectors, in GFLOP/s:
/// every thread of a fresh rayon pool runs the `repconv_kernels::peak` loop;
/// the best of five 20 ms rounds is reported. Fails only if the operating
/// system refuses to start the threads.
pub fn fma_peak_gflops(
    isa: repconv_kernels::Isa,
    threads: usize,
) -> Result<f64, rayon::ThreadPoolBuildError> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads.max(1)).build()?;
    // ~20 ms per round at 250 GFLOP/s per thread.
    let iters = 10_000_000 / (isa.lanes() as u64 / 8);
    let mut best = 0.0f64;
    for _ in 0..5 {
        let t = Instant::now();
        let flops: u64 =
            pool.broadcast(|_| repconv_kernels::peak::fma_loop(isa, iters)).iter().sum();
        best = best.max(flops as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    Ok(best)
}

/// The bf16 dot-product peak of `threads` threads, in GFLOP/s, or `None`
/// where the CPU lacks AVX512_BF16 (the software model's speed is no peak):
/// every thread of a fresh rayon pool runs the `vdpbf16ps` loop
/// ([`repconv_kernels::bf16::dpbf16_loop`], 24 chains, 64 FLOPs per
/// instruction); the best of five rounds of about 20 ms is reported, as for
/// [`fma_peak_gflops`]. Fails only if the operating system refuses to start
/// the threads.
pub fn bf16_peak_gflops(threads: usize) -> Result<Option<f64>, rayon::ThreadPoolBuildError> {
    let Ok(isa) = repconv_kernels::bf16::Bf16Isa::native() else {
        return Ok(None);
    };
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads.max(1)).build()?;
    // ~20 ms per round at 250 GFLOP/s per thread (1536 FLOPs per iteration).
    let iters = 3_300_000;
    let mut best = 0.0f64;
    for _ in 0..5 {
        let t = Instant::now();
        let flops: u64 =
            pool.broadcast(|_| repconv_kernels::bf16::dpbf16_loop(isa, iters)).iter().sum();
        best = best.max(flops as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    Ok(Some(best))
}
