//! Any parameters and input shape, hostile ones included (kernels, padding and
//! dilation in the thousands, channel counts up to a million, sizes that
//! overflow): planning and running give `Ok` or a typed error, never a panic,
//! and a forward pass stays within the memory contract of
//! `tests/memory_bound.rs`: at most 64 MiB of scratch per rayon thread plus 32
//! times the input's bytes. A counting allocator enforces it: while a forward
//! pass runs, an allocation that would take the bytes live above what they
//! were before the call plus that cap fails, which aborts the process ("memory
//! allocation of N bytes failed"), a crash for libFuzzer.
//!
//! What is skipped, and why: weights over 2^24 floats, inputs and outputs over
//! 2^22 elements (the caller would allocate those, not the library; with them
//! the cap would have to exceed the fuzzer's RSS limit), and layers over 2^26
//! multiply-adds on the path that actually runs (time, not memory: under
//! AddressSanitizer that is about a second; the direct tap loop is counted by
//! its in-bounds taps only, so huge kernels with huge padding on small inputs
//! do run). `fuzz/corpus/plan_total` holds seeds of each hostile kind.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use repconv::{Activation, Conv2d, Conv2dParams, Parallelism, Tensor};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, failing allocations above `LIMIT` live bytes.
struct Capped;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Counts `bytes` more as live, or refuses (and counts nothing) when that
/// would exceed the limit.
fn admit(bytes: usize) -> bool {
    let now = LIVE.fetch_add(bytes, Ordering::SeqCst).saturating_add(bytes);
    if now > LIMIT.load(Ordering::SeqCst) {
        LIVE.fetch_sub(bytes, Ordering::SeqCst);
        return false;
    }
    true
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, or returns null (allowed: it reports allocation failure) without
// touching the allocator; the counters never affect what `System` returns.
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !admit(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract for `layout`.
        let p = unsafe { System.alloc(layout) };
        if p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !admit(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller passes a block this allocator (hence `System`)
        // returned, with its layout.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size();
        if new_size > old && !admit(new_size - old) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if p.is_null() {
            if new_size > old {
                LIVE.fetch_sub(new_size - old, Ordering::SeqCst);
            }
        } else if new_size < old {
            LIVE.fetch_sub(old - new_size, Ordering::SeqCst);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Capped = Capped;

/// A size: 0..=3 (so the specialised kernels' 1, 3, stride 2, padding 1 are
/// common), near a power of two (up to 2^20, so kernels, paddings,
/// dilations and channel counts in the thousands and millions), or any `usize`
/// (mostly overflowing).
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Size {
    Small(u8),
    NearPow2 { shift: u8, delta: i8 },
    Any(usize),
}

impl Size {
    fn get(self) -> usize {
        match self {
            Size::Small(v) => usize::from(v % 4),
            Size::NearPow2 { shift, delta } => {
                (1usize << (shift % 21)).saturating_add_signed(isize::from(delta % 4))
            }
            Size::Any(v) => v,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    cin: Size,
    cout: Size,
    kernel: [Size; 2],
    stride: [Size; 2],
    padding: [Size; 2],
    dilation: [Size; 2],
    groups: Size,
    shape: [Size; 4],
    serial: bool,
}

/// Multiply-adds of the path that runs: every (output, tap) pair on the GEMM
/// paths; only the in-bounds ones on the direct tap loop.
fn work(conv: &Conv2d, [n, _, h, w]: [usize; 4], [_, cout, oh, ow]: [usize; 4]) -> u128 {
    let p = conv.params();
    let per_output = (p.in_per_group() as u128) * (p.kernel[0] * p.kernel[1]) as u128;
    let dense = (n * cout * oh * ow) as u128 * per_output;
    if conv.kernel_name() != "general_taps" {
        return dense;
    }
    // Pairs (output index, kernel index) along one axis that land inside the input.
    let in_bounds = |axis: usize, len: usize, out: usize| -> u128 {
        let (s, d, pad, k) = (p.stride[axis], p.dilation[axis], p.padding[axis], p.kernel[axis]);
        (0..out)
            .map(|o| {
                let lo = pad.saturating_sub(o * s).div_ceil(d).min(k);
                let hi = (len + pad).saturating_sub(o * s).div_ceil(d).clamp(lo, k);
                (hi - lo) as u128
            })
            .sum()
    };
    (n * cout) as u128 * p.in_per_group() as u128 * in_bounds(0, h, oh) * in_bounds(1, w, ow)
}

fuzz_target!(|inp: Input| {
    let params = Conv2dParams {
        in_channels: inp.cin.get(),
        out_channels: inp.cout.get(),
        kernel: inp.kernel.map(Size::get),
        stride: inp.stride.map(Size::get),
        padding: inp.padding.map(Size::get),
        dilation: inp.dilation.map(Size::get),
        groups: inp.groups.get(),
    };
    let shape = inp.shape.map(Size::get);
    let _ = params.output_hw([shape[2], shape[3]]);
    if params.validate().is_err() {
        return;
    }
    // Valid, so out_channels <= weight_len.
    let Ok(wlen) = params.weight_len() else { return };
    if wlen > 1 << 24 {
        return;
    }
    let weights = vec![0.25f32; wlen];
    let bias = vec![0.5f32; params.out_channels];
    let Ok(conv) = Conv2d::new(params, &weights, Some(&bias), Activation::Relu) else { return };
    let conv = if inp.serial { conv.with_parallelism(Parallelism::Serial) } else { conv };
    let Ok(out_shape) = conv.output_shape(shape) else { return };
    let Some(in_len) = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) else { return };
    if in_len > 1 << 22 || out_shape.iter().product::<usize>() > 1 << 22 {
        return;
    }
    if work(&conv, shape, out_shape) > 1 << 26 {
        return;
    }
    let (Ok(x), Ok(mut y)) = (Tensor::full(shape, 1.0), Tensor::zeros(out_shape)) else { return };

    let cap = 64 * (1 << 20) * rayon::current_num_threads() + 32 * 4 * in_len;
    LIMIT.store(LIVE.load(Ordering::SeqCst) + cap, Ordering::SeqCst);
    let result = conv.forward_into(x.view(), y.view_mut());
    LIMIT.store(usize::MAX, Ordering::SeqCst);
    result.expect("shapes were checked: forward_into must succeed");
    // Every output sees some taps or only the bias: with all inputs 1, weights
    // 0.25 and bias 0.5, each is 0.5 + 0.25 * (its in-bounds taps) >= 0.5.
    let first = y.as_slice()[0];
    assert!(first >= 0.5 && first.is_finite(), "output {first}");
});
