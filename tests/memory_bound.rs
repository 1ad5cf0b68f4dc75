//! The memory contract: every geometry that `Conv2d::new` accepts runs (or
//! returns a typed error) within bounded scratch memory.
//!
//! **Bound.** The bytes allocated during one `forward_into` on top of what was
//! live before it (input, output and weights are allocated by the caller
//! beforehand) peak at no more than
//! `64 MiB × threads + 32 × input bytes`,
//! where `threads` is the size of the rayon pool running it. The 64 MiB per
//! thread covers the general path's im2col band (8 MiB by default) and the
//! GEMM's tail panel (at most 12 MiB); the input term covers the direct 3x3
//! kernels, which copy the input into a padded, phase-split layout with a tap
//! table (about 27x the input for 1x1 planes, about 1x for large ones), and is
//! zero on the general path. After the call, each thread keeps at most
//! 3 × 16 MiB of scratch for the next one.
//!
//! **Measurement.** A counting global allocator (below) tracks the bytes live
//! in the whole process and their high-water mark; each case resets the mark
//! to the current live count, runs `forward_into` on a fresh 2-thread pool
//! (fresh threads, so no scratch grown by an earlier case hides a need), and
//! reads the mark back. The tests in this file hold one lock, so no other
//! test's allocations run concurrently.
//!
//! The geometries are hostile but valid: a 1024x1024 kernel with 1024 padding
//! on a 63x63 input (before bands, it asked for one 5 TB im2col buffer and
//! aborted), huge dilation with huge padding, huge padding alone, 1-pixel
//! planes with thousands of channels (the 1x1 GEMM, the direct 3x3 kernel, a
//! grouped general conv, and a 100000-channel reduction too long for the
//! GEMM), and a grouped general conv whose padding makes every group's im2col
//! matrix hundreds of MB. Each is checked at a few output positions against an
//! f64 evaluation of the convolution (itself checked against the reference).

mod common;

use common::values;
use repconv::{Activation, Conv2d, Conv2dParams, Error, Parallelism, Tensor};
use repconv_kernels::reference::conv2d_nchw_ref;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting live bytes and their high-water mark.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let now = LIVE.fetch_add(bytes, Ordering::SeqCst) + bytes;
    PEAK.fetch_max(now, Ordering::SeqCst);
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged and returns its result unchanged, so `System`'s guarantees hold;
// the counters are only updated, never consulted, by the allocation itself.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract for `layout`.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
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
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::SeqCst);
            }
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// One test at a time in this file, so the counters see one case only.
static SERIAL: Mutex<()> = Mutex::new(());

const MIB: usize = 1 << 20;
const THREADS: usize = 2;
/// Scratch per pool thread (see the module docs).
const PER_THREAD: usize = 64 * MIB;
/// What a thread may keep between calls: three buffers of at most 16 MiB.
const RETAINED_PER_THREAD: usize = 3 * 16 * MIB;

/// Bytes of scratch one forward pass may allocate (see the module docs).
fn bound(input_len: usize) -> usize {
    PER_THREAD * THREADS + 32 * 4 * input_len
}

/// `(output, magnitude, terms)` at `[b, oc, oy, ox]`, in f64: `bias + Σ w·x`
/// over the in-bounds taps, its `|bias| + Σ |w·x|`, and the number of terms.
#[allow(clippy::too_many_arguments)]
fn point(
    p: &Conv2dParams,
    shape: [usize; 4],
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    relu: bool,
    [b, oc, oy, ox]: [usize; 4],
) -> (f64, f64, usize) {
    let [_, cin, h, wd] = shape;
    let (cin_g, cout_g) = (p.in_per_group(), p.out_per_group());
    let [kh, kw] = p.kernel;
    let g = oc / cout_g;
    let (mut acc, mut mag, mut terms) = (f64::from(bias[oc]), f64::from(bias[oc].abs()), 1);
    for ci in 0..cin_g {
        for ky in 0..kh {
            let iy = (oy * p.stride[0] + ky * p.dilation[0]) as i64 - p.padding[0] as i64;
            if iy < 0 || iy >= h as i64 {
                continue;
            }
            for kx in 0..kw {
                let ix = (ox * p.stride[1] + kx * p.dilation[1]) as i64 - p.padding[1] as i64;
                if ix < 0 || ix >= wd as i64 {
                    continue;
                }
                let xv =
                    f64::from(x[((b * cin + g * cin_g + ci) * h + iy as usize) * wd + ix as usize]);
                let wv = f64::from(w[((oc * cin_g + ci) * kh + ky) * kw + kx]);
                acc += xv * wv;
                mag += (xv * wv).abs();
                terms += 1;
            }
        }
    }
    (if relu { acc.max(0.0) } else { acc }, mag, terms)
}

/// Builds the layer (weights and bias from `seed`), runs it once on a fresh
/// pool (split over both threads, or serially), measures, and checks
/// `checks` output positions (plus the corners) against [`point`].
fn run_case(
    name: &str,
    params: Conv2dParams,
    shape: [usize; 4],
    parallel: bool,
    checks: &[[usize; 4]],
) {
    let weights = values(1, params.weight_len().unwrap());
    let bias = values(2, params.out_channels);
    let conv = Conv2d::new(params, &weights, Some(&bias), Activation::Relu).unwrap();
    let conv = if parallel {
        conv.with_parallel_threshold(0)
    } else {
        conv.with_parallelism(Parallelism::Serial)
    };
    let x = Tensor::from_vec(shape, values(3, shape.iter().product())).unwrap();
    let out_shape = conv.output_shape(shape).unwrap();
    let mut y = Tensor::zeros(out_shape).unwrap();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(THREADS).build().unwrap();

    let base = LIVE.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    pool.install(|| conv.forward_into(x.view(), y.view_mut())).unwrap();
    let peak = PEAK.load(Ordering::SeqCst) - base;
    let retained = LIVE.load(Ordering::SeqCst).saturating_sub(base);
    drop(pool);

    eprintln!(
        "{name} ({}, {}): peak {:.2} MiB during forward_into, {:.2} MiB kept; output {out_shape:?}",
        conv.kernel_name(),
        if parallel { "2 threads" } else { "serial" },
        peak as f64 / MIB as f64,
        retained as f64 / MIB as f64,
    );
    assert!(peak <= bound(x.len()), "{name}: peak {peak} bytes over the bound {}", bound(x.len()));
    assert!(
        retained <= RETAINED_PER_THREAD * (THREADS + 1),
        "{name}: {retained} bytes of scratch kept after the call"
    );

    let [n, c, oh, ow] = out_shape;
    let corners = [[0, 0, 0, 0], [n - 1, c - 1, oh - 1, ow - 1], [0, c - 1, 0, ow - 1]];
    let mut informative = false;
    for &at in checks.iter().chain(&corners) {
        let (want, mag, terms) = point(&params, shape, x.as_slice(), &weights, &bias, true, at);
        let [b, oc, oy, ox] = at;
        let got = f64::from(y.as_slice()[((b * c + oc) * oh + oy) * ow + ox]);
        let tol = tolerance(terms, mag);
        assert!(
            (got - want).abs() <= tol,
            "{name} at {at:?}: got {got}, want {want} (tolerance {tol:e}, {terms} terms)"
        );
        informative |= want.abs() > 2.0 * tol;
    }
    // At least one checked output is far from 0 compared with its tolerance,
    // so an output stuck at 0 (or anywhere near it) fails.
    assert!(informative, "{name}: every checked output is within its tolerance of 0");
}

/// The tolerance for an f32 sum of `terms` products whose absolute values
/// add up to `mag`: 4 sqrt(terms) · 2^-24 of `mag`, never tighter than the
/// suite's 1e-5. The rounding errors of a long sum are close to independent
/// and partly cancel, so they grow like sqrt(terms): the 10^5-term sums of
/// the tap loop below are off by under 1e-3, against a tolerance of 1.9.
/// The worst case, terms · 2^-24 of `mag`, is never approached, and for
/// 10^5 terms it is about 150, as large as the outputs themselves: an output
/// stuck at 0 passed.
fn tolerance(terms: usize, mag: f64) -> f64 {
    (4.0 * (terms as f64).sqrt() * f64::from(f32::EPSILON) / 2.0).max(1e-5) * mag + 1e-6
}

#[test]
fn point_evaluation_matches_the_reference() {
    let _lock = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let params = Conv2dParams::new(6, 4, [3, 4])
        .with_stride([2, 1])
        .with_padding([2, 3])
        .with_dilation([1, 2])
        .with_groups(2);
    let shape = [2, 6, 7, 9];
    let x = values(5, shape.iter().product());
    let w = values(6, params.weight_len().unwrap());
    let b = values(7, 4);
    let rc = common::ref_conv(&params, shape, Activation::Relu);
    let (want, mag) = conv2d_nchw_ref(&rc, &x, &w, Some(&b));
    let [n, c, oh, ow] = params.output_shape(shape).unwrap();
    for i in 0..n * c * oh * ow {
        let at = [i / (c * oh * ow), i / (oh * ow) % c, i / ow % oh, i % ow];
        let (v, m, _) = point(&params, shape, &x, &w, &b, true, at);
        assert!((v - f64::from(want[i])).abs() <= 1e-6 * (1.0 + m), "{at:?}");
        assert!((m - f64::from(mag[i])).abs() <= 1e-5 * (1.0 + m), "{at:?}");
    }
}

#[test]
fn hostile_geometries_run_in_bounded_scratch() {
    let _lock = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // (name, geometry, input shape, output positions to check)
    type Case = (&'static str, Conv2dParams, [usize; 4], Vec<[usize; 4]>);
    let cases: Vec<Case> = vec![
        (
            // The case: a 5 TB im2col matrix before bands. The
            // reduction (2^20) is too long for the GEMM: direct tap loop.
            "1024x1024 kernel, padding 1024, 63x63 input",
            Conv2dParams::new(1, 1, [1024, 1024]).with_padding([1024, 1024]),
            [1, 1, 63, 63],
            vec![[0, 0, 544, 544], [0, 0, 1000, 30], [0, 0, 62, 1030]],
        ),
        (
            // 1003x1003 outputs of a 72-long reduction: 290 MB of im2col before.
            "3x3 dilation 500, padding 1000, 8 channels on 3x3",
            Conv2dParams::new(8, 8, [3, 3]).with_dilation([500, 500]).with_padding([1000, 1000]),
            [1, 8, 3, 3],
            vec![[0, 3, 500, 500], [0, 7, 1000, 2], [0, 0, 1, 999]],
        ),
        (
            // 3002x3002 outputs, reduction 4: 144 MB of im2col before.
            "1x1 padding 1500 on 2x2",
            Conv2dParams::new(4, 1, [1, 1]).with_padding([1500, 1500]),
            [1, 4, 2, 2],
            vec![[0, 0, 1500, 1501], [0, 0, 1501, 1501]],
        ),
        (
            // Four groups of 1204x1204 outputs with a 100-long reduction:
            // 580 MB of im2col per group (per thread) before.
            "grouped 5x5, padding 600, 4 groups on 8x8",
            Conv2dParams::new(16, 16, [5, 5]).with_padding([600, 600]).with_groups(4),
            [1, 16, 8, 8],
            vec![[0, 5, 600, 601], [0, 15, 602, 598], [0, 8, 3, 1200]],
        ),
        (
            "1x1, 4096 -> 1024 channels on 1x1 planes (GEMM)",
            Conv2dParams::new(4096, 1024, [1, 1]),
            [2, 4096, 1, 1],
            vec![[1, 517, 0, 0]],
        ),
        (
            "3x3 padding 1, 4096 -> 64 channels on a 1x1 plane (direct 3x3)",
            Conv2dParams::new(4096, 64, [3, 3]).with_padding([1, 1]),
            [1, 4096, 1, 1],
            vec![[0, 33, 0, 0]],
        ),
        (
            "grouped 3x3 padding 1, 8192 -> 64 channels, 2 groups on a 1x1 plane",
            Conv2dParams::new(8192, 64, [3, 3]).with_padding([1, 1]).with_groups(2),
            [1, 8192, 1, 1],
            vec![[0, 40, 0, 0], [0, 1, 0, 0], [0, 2, 0, 0]],
        ),
        (
            // A 100000-long reduction is too long for the GEMM: tap loop.
            "1x1, 100000 -> 16 channels on 1x3 planes",
            Conv2dParams::new(100_000, 16, [1, 1]),
            [1, 100_000, 1, 3],
            vec![[0, 9, 0, 1], [0, 2, 0, 0], [0, 5, 0, 2], [0, 12, 0, 1], [0, 14, 0, 0]],
        ),
    ];
    for (name, params, shape, checks) in cases {
        for parallel in [true, false] {
            run_case(name, params, shape, parallel, &checks);
        }
    }
}

#[test]
fn what_cannot_run_is_a_typed_error_without_allocating() {
    let _lock = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let base = LIVE.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    // An output of 2^42 elements: refused before anything is allocated.
    let conv = Conv2d::new(
        Conv2dParams::new(1, 1, [1, 1]).with_padding([1 << 20, 1 << 20]),
        &[1.0],
        None,
        Activation::None,
    )
    .unwrap();
    let x = Tensor::zeros([1, 1, 1, 1]).unwrap();
    assert_eq!(conv.forward(&x).unwrap_err(), Error::TooLarge { what: "output" });
    // A kernel span that overflows: refused by `Conv2d::new`.
    let span = Conv2dParams::new(1, 1, [2, 1]).with_dilation([usize::MAX, 1]);
    assert_eq!(
        Conv2d::new(span, &[], None, Activation::None).unwrap_err(),
        Error::TooLarge { what: "kernel span" }
    );
    let peak = PEAK.load(Ordering::SeqCst) - base;
    assert!(peak < MIB, "the refusals allocated {peak} bytes");
}

#[test]
fn scratch_above_16_mib_is_given_back_after_the_call() {
    let _lock = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // The direct 3x3 kernel copies this 17 MB input into a padded layout: more
    // than a thread keeps, so it is freed when the call returns.
    let params = Conv2dParams::new(64, 8, [3, 3]).with_padding([1, 1]);
    let shape = [1, 64, 260, 260];
    let weights = values(1, params.weight_len().unwrap());
    let conv = Conv2d::new(params, &weights, None, Activation::None)
        .unwrap()
        .with_parallelism(Parallelism::Serial);
    let x = Tensor::from_vec(shape, values(3, shape.iter().product())).unwrap();
    let mut y = Tensor::zeros(conv.output_shape(shape).unwrap()).unwrap();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let base = LIVE.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    pool.install(|| conv.forward_into(x.view(), y.view_mut())).unwrap();
    let peak = PEAK.load(Ordering::SeqCst) - base;
    let retained = LIVE.load(Ordering::SeqCst).saturating_sub(base);
    eprintln!(
        "{}: peak {:.2} MiB during forward_into, {:.2} MiB kept",
        conv.kernel_name(),
        peak as f64 / MIB as f64,
        retained as f64 / MIB as f64
    );
    assert!(peak >= 4 * x.len(), "the padded copy was not measured ({peak} bytes)");
    assert!(peak <= bound(x.len()), "peak {peak} bytes over the bound");
    assert!(retained < MIB, "{retained} bytes of scratch kept after the call");
}
