//! Software prefetch: asks the cache hierarchy for data the next kernel call
//! will read, so that it arrives while the current call computes.

/// Requests every cache line of `data` into the L2 cache (`prefetcht1` on
/// x86-64; nothing elsewhere). A hint only: it never faults, changes no
/// value, and costs one instruction per 64 bytes.
pub fn prefetch_l2(data: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_MM_HINT_T1, _mm_prefetch};
        for line in data.chunks(16) {
            // SAFETY: `prefetcht1` is SSE (in every x86-64 CPU), only reads
            // the address as a hint and never faults; `line` is in bounds.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(line.as_ptr().cast()) }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}
