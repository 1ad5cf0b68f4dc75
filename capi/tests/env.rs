//! The C API under environment variables that the library reads once per
//! process (REPCONV_ISA, REPCONV_BF16) or when it makes its default thread
//! pool (RAYON_NUM_THREADS): each case runs one `#[ignore]`d test of this
//! binary again in a child process with the variable set, under a time
//! limit.

#[path = "../../tests/common/watchdog.rs"]
#[allow(dead_code)]
mod watchdog;

use std::ffi::{CStr, c_char, c_int};
use std::ptr::{null, null_mut};

use repconv_capi::*;
use repconv_rs::mobileone::{MobileOne, SplitMix64, Workspace};
use repconv_rs::weights::{self, LoadOptions};
use repconv_rs::{Activation, Conv2d, Conv2dParams, Precision, Tensor};
use watchdog::{expect_env, run_child};

fn fixture(name: &str) -> String {
    format!("{}/../tests/fixtures/{name}\0", env!("CARGO_MANIFEST_DIR"))
}

fn c_string(p: *const c_char) -> String {
    assert!(!p.is_null());
    // SAFETY: the library's strings are NUL-terminated and live at least
    // until the thread's next call; this copies it at once.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

#[track_caller]
fn assert_status(status: c_int, want: c_int, needle: &str) {
    let msg = c_string(repconv_last_error());
    assert_eq!(
        c_string(repconv_status_name(status)),
        c_string(repconv_status_name(want)),
        "message: {msg}"
    );
    assert!(msg.contains(needle), "{msg:?} does not mention {needle:?}");
}

/// A 3x3 convolution of 4 -> 8 channels with padding 1.
fn create_conv(isa: Option<&CStr>) -> (c_int, *mut Conv) {
    let mut params = ConvParams::default();
    // SAFETY: a local.
    assert_eq!(unsafe { repconv_conv_params_init(&mut params, 4, 8, 3, 3) }, REPCONV_OK);
    params.padding = [1, 1];
    let w = vec![0.25f32; 8 * 4 * 9];
    let mut out = null_mut();
    // SAFETY: live locals with the lengths beside them; `isa` is NULL or a C string.
    let status = unsafe {
        repconv_conv_create(
            &params,
            w.as_ptr(),
            w.len(),
            null(),
            0,
            REPCONV_ACTIVATION_RELU,
            isa.map_or(null(), CStr::as_ptr),
            &mut out,
        )
    };
    (status, out)
}

/// Runs the convolution of [`create_conv`] on a 2x4x9x11 input.
fn conv_forward(conv: *const Conv) -> c_int {
    let shape = [2usize, 4, 9, 11];
    let x = vec![1.0f32; 2 * 4 * 9 * 11];
    let mut y = vec![0.0f32; 2 * 8 * 9 * 11];
    // SAFETY: a live handle and locals of the lengths the shape implies.
    unsafe { repconv_conv_forward(conv, x.as_ptr(), shape.as_ptr(), y.as_mut_ptr(), y.len()) }
}

fn conv_isa(conv: *const Conv) -> String {
    let mut name = null();
    // SAFETY: a live handle and a local.
    assert_eq!(unsafe { repconv_conv_isa(conv, &mut name) }, REPCONV_OK);
    c_string(name)
}

fn load_net(isa: Option<&CStr>) -> (c_int, *mut Net) {
    let path = fixture("s0.fused.safetensors");
    let mut out = null_mut();
    // SAFETY: NUL-terminated strings and a local.
    let status = unsafe {
        repconv_net_load(path.as_ptr().cast(), isa.map_or(null(), CStr::as_ptr), &mut out)
    };
    (status, out)
}

fn net_forward(net: *const Net) -> c_int {
    let shape = [1usize, 3, 32, 32];
    let x = vec![0.5f32; 3 * 32 * 32];
    let mut y = vec![0.0f32; 10];
    // SAFETY: a live handle and locals of the lengths the shape implies.
    unsafe { repconv_net_forward(net, x.as_ptr(), shape.as_ptr(), y.as_mut_ptr(), y.len()) }
}

fn net_isa(net: *const Net) -> String {
    let mut name = null();
    // SAFETY: a live handle and a local.
    assert_eq!(unsafe { repconv_net_isa(net, &mut name) }, REPCONV_OK);
    c_string(name)
}

/// The number of threads of this process (Linux), or 0 if unknown.
fn os_threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, Iterator::count)
}

#[test]
fn rayon_num_threads_above_the_limit_is_an_error_not_100000_threads() {
    run_child(
        "child_rayon_num_threads_100000",
        &[("RAYON_NUM_THREADS", "100000"), ("REPCONV_ISA", "")],
        120,
    );
}

#[test]
#[ignore = "run by rayon_num_threads_above_the_limit_is_an_error_not_100000_threads"]
fn child_rayon_num_threads_100000() {
    expect_env("RAYON_NUM_THREADS", "100000");
    let (status, conv) = create_conv(None);
    assert_eq!(status, REPCONV_OK);
    let mut n = 0;
    // SAFETY: a live handle and a local.
    let status = unsafe { repconv_conv_threads(conv, &mut n) };
    assert_status(status, REPCONV_ERR_THREADS, "RAYON_NUM_THREADS=100000");
    assert_status(conv_forward(conv), REPCONV_ERR_THREADS, "more than 1024");
    let (status, net) = load_net(None);
    assert_eq!(status, REPCONV_OK);
    assert_status(net_forward(net), REPCONV_ERR_THREADS, "RAYON_NUM_THREADS=100000");
    let threads = os_threads();
    assert!(threads < 16, "{threads} threads were started");
    // A handle with a pool of its own is not affected.
    // SAFETY: live handles.
    unsafe {
        assert_eq!(repconv_conv_set_threads(conv, 2), REPCONV_OK);
        assert_eq!(repconv_net_set_threads(net, 3), REPCONV_OK);
    }
    assert_eq!(conv_forward(conv), REPCONV_OK);
    assert_eq!(net_forward(net), REPCONV_OK);
    // SAFETY: live handles, destroyed once.
    unsafe {
        repconv_conv_destroy(conv);
        repconv_net_destroy(net);
    }
}

#[test]
fn rayon_num_threads_sizes_the_default_pool() {
    run_child("child_rayon_num_threads_3", &[("RAYON_NUM_THREADS", "3"), ("REPCONV_ISA", "")], 120);
}

#[test]
#[ignore = "run by rayon_num_threads_sizes_the_default_pool"]
fn child_rayon_num_threads_3() {
    expect_env("RAYON_NUM_THREADS", "3");
    let before = os_threads();
    let (status, conv) = create_conv(None);
    assert_eq!(status, REPCONV_OK);
    assert_eq!(conv_forward(conv), REPCONV_OK);
    let mut n = 0;
    // SAFETY: a live handle and a local.
    assert_eq!(unsafe { repconv_conv_threads(conv, &mut n) }, REPCONV_OK);
    assert_eq!(n, 3);
    let after = os_threads();
    if before > 0 {
        assert_eq!(after - before, 3, "the default pool's workers");
    }
    // SAFETY: a live handle, destroyed once.
    unsafe { repconv_conv_destroy(conv) };
}

#[test]
fn explicit_isas_ignore_a_bad_repconv_isa() {
    run_child("child_bad_repconv_isa", &[("REPCONV_ISA", "no-such-isa")], 120);
}

#[test]
#[ignore = "run by explicit_isas_ignore_a_bad_repconv_isa"]
fn child_bad_repconv_isa() {
    expect_env("REPCONV_ISA", "no-such-isa");
    // The process default is the bad name: what leaves the ISA to it fails.
    let mut name = null();
    // SAFETY: a local.
    assert_status(unsafe { repconv_isa_default(&mut name) }, REPCONV_ERR_ISA, "no-such-isa");
    let (status, conv) = create_conv(None);
    assert_status(status, REPCONV_ERR_ISA, "no-such-isa");
    assert!(conv.is_null());
    let (status, net) = load_net(None);
    assert_status(status, REPCONV_ERR_ISA, "no-such-isa");
    assert!(net.is_null());
    let best = c_string(repconv_isa_best());
    // An explicit ISA does not consult it.
    for (isa, want) in [(c"portable", "portable"), (c"best", best.as_str())] {
        let (status, conv) = create_conv(Some(isa));
        assert_eq!(status, REPCONV_OK, "{isa:?}: {}", c_string(repconv_last_error()));
        assert_eq!(conv_isa(conv), want);
        assert_eq!(conv_forward(conv), REPCONV_OK);
        // SAFETY: a live handle, destroyed once.
        unsafe { repconv_conv_destroy(conv) };

        let (status, net) = load_net(Some(isa));
        assert_eq!(status, REPCONV_OK, "{isa:?}: {}", c_string(repconv_last_error()));
        assert_eq!(net_isa(net), want);
        assert_eq!(net_forward(net), REPCONV_OK);
        let mut fused = null_mut();
        // SAFETY: a live handle and a local.
        let status = unsafe { repconv_net_reparameterize(net, &mut fused) };
        assert_eq!(status, REPCONV_OK, "{}", c_string(repconv_last_error()));
        assert_eq!(net_isa(fused), want);
        assert_eq!(net_forward(fused), REPCONV_OK);
        // SAFETY: live handles, destroyed once.
        unsafe {
            repconv_net_destroy(fused);
            repconv_net_destroy(net);
        }
    }
    // A train-form checkpoint (its blocks are built, then reparameterized).
    let path = fixture("s0.train.safetensors");
    let bytes = std::fs::read(path.trim_end_matches('\0')).unwrap();
    let mut net = null_mut();
    // SAFETY: a slice with its length, a C string and a local.
    let status = unsafe {
        repconv_net_load_bytes(bytes.as_ptr(), bytes.len(), c"portable".as_ptr(), &mut net)
    };
    assert_eq!(status, REPCONV_OK, "{}", c_string(repconv_last_error()));
    let mut fused = null_mut();
    // SAFETY: a live handle and a local.
    let status = unsafe { repconv_net_reparameterize(net, &mut fused) };
    assert_eq!(status, REPCONV_OK, "{}", c_string(repconv_last_error()));
    assert_eq!(net_isa(fused), "portable");
    // SAFETY: live handles, destroyed once.
    unsafe {
        repconv_net_destroy(fused);
        repconv_net_destroy(net);
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[track_caller]
fn assert_ok(status: c_int) {
    assert_eq!(status, REPCONV_OK, "{}", c_string(repconv_last_error()));
}

fn conv_precision(conv: *const Conv) -> String {
    let mut name = null();
    // SAFETY: a live handle and a local.
    assert_ok(unsafe { repconv_conv_precision(conv, &mut name) });
    c_string(name)
}

fn net_precision(net: *const Net) -> String {
    let mut name = null();
    // SAFETY: a live handle and a local.
    assert_ok(unsafe { repconv_net_precision(net, &mut name) });
    c_string(name)
}

/// The logits of the C network on `x`.
fn c_logits(net: *const Net, x: &Tensor) -> Vec<f32> {
    let shape = x.shape();
    let mut y = vec![f32::NAN; shape[0] * 10];
    // SAFETY: a live handle and buffers of the lengths the shape implies.
    assert_ok(unsafe {
        repconv_net_forward(net, x.as_slice().as_ptr(), shape.as_ptr(), y.as_mut_ptr(), y.len())
    });
    y
}

/// The Rust network's logits on `x`, on a pool of `threads` threads.
fn rust_logits(net: &MobileOne, x: &Tensor, threads: usize) -> Vec<f32> {
    let mut y = Tensor::zeros(net.output_shape(x.shape()).unwrap()).unwrap();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| net.forward_into(x.view(), y.view_mut(), &mut Workspace::new()).unwrap());
    y.as_slice().to_vec()
}

/// The largest |a - b| over the largest |b|, NaN-aware: infinite where a NaN
/// is on one side only.
fn relative_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mut diff = 0.0f64;
    let mut scale = 0.0f64;
    for (&x, &y) in a.iter().zip(b) {
        let d = match (x.is_nan(), y.is_nan()) {
            (true, true) => 0.0,
            (false, false) => (f64::from(x) - f64::from(y)).abs(),
            _ => f64::INFINITY,
        };
        diff = if d > diff || d.is_nan() { d } else { diff };
        scale = scale.max(f64::from(y).abs());
    }
    diff / scale
}

/// bf16 through the C API with the bf16 kernels' software model (or the
/// hardware, on a CPU with AVX512_BF16 and the avx512 ISA).
#[test]
fn bf16_runs_with_repconv_bf16_emulated() {
    run_child("child_bf16_emulated", &[("REPCONV_BF16", "emulated")], 600);
}

#[test]
#[ignore = "run by bf16_runs_with_repconv_bf16_emulated"]
fn child_bf16_emulated() {
    expect_env("REPCONV_BF16", "emulated");
    let io = std::fs::read(fixture("s0.io.safetensors").trim_end_matches('\0')).unwrap();
    let io = weights::read_tensors(&io).unwrap();
    let x = io.iter().find(|t| t.name == "input").unwrap().to_nchw().unwrap();

    // A network: the fused and the train form (the latter reparameterized in C).
    for file in ["s0.fused.safetensors", "s0.train.safetensors"] {
        let path = fixture(file);
        let rust = weights::load(path.trim_end_matches('\0'), &LoadOptions::default()).unwrap();
        let rust_bf16 = rust.clone().with_precision(Precision::Bf16).unwrap();
        let mut net = null_mut();
        // SAFETY: a C string and a local.
        assert_ok(unsafe { repconv_net_load(path.as_ptr().cast(), null(), &mut net) });
        let f32_logits = c_logits(net, &x);
        assert_eq!(bits(&f32_logits), bits(&rust_logits(&rust, &x, 2)), "{file} f32");
        // SAFETY: a live handle and a C string.
        assert_ok(unsafe { repconv_net_set_precision(net, c"bf16".as_ptr()) });
        assert_eq!(net_precision(net), "bf16");
        let want = bits(&rust_logits(&rust_bf16, &x, 2));
        for threads in [1, 2] {
            // SAFETY: a live handle.
            assert_ok(unsafe { repconv_net_set_threads(net, threads) });
            let bf16_logits = c_logits(net, &x);
            assert_eq!(bits(&bf16_logits), want, "{file} bf16, {threads} threads");
            let rel = relative_diff(&bf16_logits, &f32_logits);
            println!("{file}: bf16 vs f32 logits: max |diff| / max |logit| = {rel:.2e}");
            assert!(rel <= 0.1, "{file}: bf16 logits {rel} off the f32 ones");
            assert_ne!(bits(&bf16_logits), bits(&f32_logits), "{file}: bf16 did not run");
        }
        let mut fused = null_mut();
        // SAFETY: a live handle and a local.
        assert_ok(unsafe { repconv_net_reparameterize(net, &mut fused) });
        assert_eq!(net_precision(fused), "bf16", "reparameterize keeps the precision");
        let want_fused = rust_logits(&rust_bf16.reparameterize().unwrap(), &x, 2);
        assert_eq!(bits(&c_logits(fused, &x)), bits(&want_fused), "{file} reparameterized");
        // SAFETY: a live handle and a C string.
        assert_ok(unsafe { repconv_net_set_precision(net, c"f32".as_ptr()) });
        assert_eq!(net_precision(net), "f32");
        assert_eq!(bits(&c_logits(net, &x)), bits(&f32_logits), "{file} f32 again");
        // SAFETY: live handles, destroyed once.
        unsafe {
            repconv_net_destroy(fused);
            repconv_net_destroy(net);
        }
    }

    // A 1x1 convolution: the bf16 kernel, bit for bit the Rust API's; the
    // kernel names returned earlier stay valid.
    let params = Conv2dParams::new(40, 24, [1, 1]);
    let w = SplitMix64::new(7).uniform_vec(40 * 24, -1.0, 1.0);
    let b = SplitMix64::new(8).uniform_vec(24, -1.0, 1.0);
    let shape = [2usize, 40, 9, 13];
    let x = Tensor::from_vec(shape, SplitMix64::new(9).uniform_vec(2 * 40 * 9 * 13, -1.0, 1.0))
        .unwrap();
    let rust = Conv2d::new(params, &w, Some(&b), Activation::Relu).unwrap();
    let rust_bf16 = rust.clone().with_precision(Precision::Bf16).unwrap();
    let want =
        [rust.forward(&x).unwrap(), rust_bf16.forward(&x).unwrap()].map(|y| bits(y.as_slice()));
    assert_ne!(want[0], want[1], "bf16 and f32 differ on these values");
    let mut params_c = ConvParams::default();
    // SAFETY: a local.
    assert_ok(unsafe { repconv_conv_params_init(&mut params_c, 40, 24, 1, 1) });
    let mut conv = null_mut();
    // SAFETY: live locals with their lengths.
    assert_ok(unsafe {
        repconv_conv_create(
            &params_c,
            w.as_ptr(),
            w.len(),
            b.as_ptr(),
            b.len(),
            REPCONV_ACTIVATION_RELU,
            null(),
            &mut conv,
        )
    });
    let conv_forward = move |conv: *const Conv, x: &Tensor| {
        let mut y = vec![f32::NAN; 2 * 24 * 9 * 13];
        // SAFETY: a live handle and buffers of the lengths the shape implies.
        assert_ok(unsafe {
            repconv_conv_forward(
                conv,
                x.as_slice().as_ptr(),
                shape.as_ptr(),
                y.as_mut_ptr(),
                y.len(),
            )
        });
        bits(&y)
    };
    let kernel_name = |conv: *const Conv| {
        let mut name = null();
        // SAFETY: a live handle and a local.
        assert_ok(unsafe { repconv_conv_kernel_name(conv, &mut name) });
        name
    };
    let f32_name = kernel_name(conv);
    // SAFETY: a live handle and a C string.
    assert_ok(unsafe { repconv_conv_set_precision(conv, c"bf16".as_ptr()) });
    assert_eq!(conv_precision(conv), "bf16");
    let bf16_name = kernel_name(conv);
    assert_eq!(c_string(bf16_name), rust_bf16.kernel_name());
    assert_ne!(rust_bf16.kernel_name(), rust.kernel_name());
    assert_eq!(conv_forward(conv, &x), want[1], "conv bf16");
    // SAFETY: a live handle and a C string.
    assert_ok(unsafe { repconv_conv_set_precision(conv, c"f32".as_ptr()) });
    assert_eq!(conv_forward(conv, &x), want[0], "conv f32 again");
    assert_eq!(kernel_name(conv), f32_name, "the same string as before");
    assert_eq!(c_string(f32_name), rust.kernel_name());
    assert_eq!(c_string(bf16_name), rust_bf16.kernel_name(), "still valid");

    // Forward passes from three threads while a fourth switches the
    // precision (and the threads): each result is bitwise the f32 or the
    // bf16 one (a pass keeps the convolution it started with), no hang. The
    // passes go on until the setter has made 8 changes (at most 2000 each).
    let shared = SharedConv(conv);
    let (seen, changes) =
        watchdog::within(300, "forward passes while set_precision runs", move || {
            use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
            let (stop, changes) = (AtomicBool::new(false), AtomicUsize::new(0));
            std::thread::scope(|s| {
                let setter = s.spawn(|| {
                    for n in 0.. {
                        if stop.load(SeqCst) {
                            break;
                        }
                        assert_ok(shared.set_precision([c"bf16", c"f32"][n % 2]));
                        // SAFETY: a live handle (destroyed after the passes).
                        assert_ok(unsafe { repconv_conv_set_threads(shared.0, [2, 0, 1][n % 3]) });
                        changes.fetch_add(1, SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                });
                let passes: Vec<_> = (0..3)
                    .map(|_| {
                        let (shared, x, want, changes) = (&shared, &x, &want, &changes);
                        s.spawn(move || {
                            let mut seen = [0usize; 2];
                            for k in 0..2000 {
                                if k >= 10 && changes.load(SeqCst) >= 8 {
                                    break;
                                }
                                let y = conv_forward(shared.0, x);
                                let Some(i) = want.iter().position(|w| *w == y) else {
                                    panic!("pass {k}: neither the f32 nor the bf16 output");
                                };
                                seen[i] += 1;
                            }
                            seen
                        })
                    })
                    .collect();
                let seen: Vec<_> = passes.into_iter().map(|p| p.join()).collect();
                stop.store(true, SeqCst);
                setter.join().unwrap();
                (seen.into_iter().map(|r| r.unwrap()).collect::<Vec<_>>(), changes.load(SeqCst))
            })
        });
    println!("passes [f32, bf16] per thread: {seen:?}; {changes} precision changes");
    assert!(changes >= 8, "only {changes} precision changes happened during the passes");
    // SAFETY: a live handle, destroyed once (the passes have returned).
    unsafe { repconv_conv_destroy(conv) };
}

/// A convolution handle shared by threads.
struct SharedConv(*mut Conv);

impl SharedConv {
    fn set_precision(&self, name: &CStr) -> c_int {
        // SAFETY: a live handle and a C string.
        unsafe { repconv_conv_set_precision(self.0, name.as_ptr()) }
    }
}

// SAFETY: forward passes, queries, set_threads and set_precision are
// documented as safe on one handle from many threads; it is destroyed only
// after every thread using it has returned.
unsafe impl Send for SharedConv {}
// SAFETY: as above.
unsafe impl Sync for SharedConv {}
