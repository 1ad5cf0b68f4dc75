//! The C API called from Rust through the rlib: every error path returns its
//! documented status and a last-error message naming the problem; forward
//! passes equal the Rust API bit for bit (same ISA, any thread count);
//! thread settings, ISA selection, precision settings, queries,
//! concurrency. This process runs without REPCONV_BF16, so bf16 runs only on
//! a CPU with AVX512_BF16; `env.rs` runs it with REPCONV_BF16=emulated.

#[path = "../../tests/common/isas.rs"]
mod isas;
#[path = "../../tests/common/watchdog.rs"]
#[allow(dead_code)]
mod watchdog;

use std::ffi::{CStr, CString, c_char, c_int};
use std::ptr::{null, null_mut};

use repconv_capi::*;
use repconv_rs::mobileone::{MobileOne, SplitMix64, Workspace};
use repconv_rs::weights::{self, LoadOptions};
use repconv_rs::{Activation, Conv2d, Conv2dParams, Error, Isa, IsaKind, Precision, Tensor};

/// Every ISA this CPU has, reported for the per-ISA loop `suite` (printed,
/// and checked against REPCONV_REQUIRE_ISA).
fn available_isas(suite: &str) -> Vec<Isa> {
    let all: Vec<Isa> = Isa::available().collect();
    isas::report(suite, &all.iter().map(|i| i.name()).collect::<Vec<_>>());
    all
}

fn fixture(name: &str) -> String {
    format!("{}/../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn values(seed: u64, len: usize) -> Vec<f32> {
    SplitMix64::new(seed).uniform_vec(len, -1.0, 1.0)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// A static C string from the library.
fn c_string(p: *const c_char) -> String {
    assert!(!p.is_null());
    // SAFETY: the library's strings are NUL-terminated and live at least
    // until the thread's next call; this copies it at once.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

fn last_error() -> String {
    c_string(repconv_last_error())
}

/// Asserts a failed call's status and that its message names `needle`.
#[track_caller]
fn assert_fails(status: c_int, want: c_int, needle: &str) {
    let msg = last_error();
    assert_eq!(
        c_string(repconv_status_name(status)),
        c_string(repconv_status_name(want)),
        "message: {msg}"
    );
    assert!(msg.contains(needle), "{msg:?} does not mention {needle:?}");
}

#[track_caller]
fn assert_ok(status: c_int) {
    assert_eq!(status, REPCONV_OK, "{}", last_error());
    assert_eq!(last_error(), "", "a success clears the last error");
}

fn c_params(p: &Conv2dParams) -> ConvParams {
    ConvParams {
        in_channels: p.in_channels,
        out_channels: p.out_channels,
        kernel: p.kernel,
        stride: p.stride,
        padding: p.padding,
        dilation: p.dilation,
        groups: p.groups,
    }
}

/// A convolution handle, destroyed on drop.
struct CConv(*mut Conv);

impl CConv {
    fn create(
        params: &Conv2dParams,
        w: &[f32],
        bias: Option<&[f32]>,
        activation: c_int,
        isa: Option<&str>,
    ) -> Result<CConv, c_int> {
        let isa = isa.map(|s| CString::new(s).unwrap());
        let mut out = null_mut();
        // SAFETY: every pointer comes from a live Rust value with the length
        // passed beside it; `out` is a local.
        let status = unsafe {
            repconv_conv_create(
                &c_params(params),
                w.as_ptr(),
                w.len(),
                bias.map_or(null(), <[f32]>::as_ptr),
                bias.map_or(0, <[f32]>::len),
                activation,
                isa.as_ref().map_or(null(), |s| s.as_ptr()),
                &mut out,
            )
        };
        if status == REPCONV_OK {
            assert!(!out.is_null());
            Ok(CConv(out))
        } else {
            assert!(out.is_null(), "a failed create leaves *out NULL");
            Err(status)
        }
    }

    fn forward(&self, input: &[f32], shape: [usize; 4], output: &mut [f32]) -> c_int {
        // SAFETY: a live handle; slices with their own lengths; `shape` has
        // 4 elements. The function checks the lengths against the shape.
        unsafe {
            repconv_conv_forward(
                self.0,
                input.as_ptr(),
                shape.as_ptr(),
                output.as_mut_ptr(),
                output.len(),
            )
        }
    }

    fn set_threads(&self, n: usize) -> c_int {
        // SAFETY: a live handle (the setting may change under running passes).
        unsafe { repconv_conv_set_threads(self.0, n) }
    }

    fn threads(&self) -> usize {
        let mut n = 0;
        // SAFETY: a live handle and a local.
        assert_ok(unsafe { repconv_conv_threads(self.0, &mut n) });
        n
    }

    fn set_precision(&self, name: &CStr) -> c_int {
        // SAFETY: a live handle and a C string.
        unsafe { repconv_conv_set_precision(self.0, name.as_ptr()) }
    }

    fn string(&self, f: unsafe extern "C" fn(*const Conv, *mut *const c_char) -> c_int) -> String {
        let mut name = null();
        // SAFETY: a live handle and a local; `f` is one of the string queries.
        assert_ok(unsafe { f(self.0, &mut name) });
        c_string(name)
    }
}

impl Drop for CConv {
    fn drop(&mut self) {
        // SAFETY: created by repconv_conv_create, destroyed once.
        unsafe { repconv_conv_destroy(self.0) }
    }
}

// SAFETY: the handle is documented as usable from any thread (forward,
// queries and set_threads concurrently; destroy needs ownership here).
unsafe impl Send for CConv {}
// SAFETY: as above.
unsafe impl Sync for CConv {}

/// A network handle, destroyed on drop.
struct CNet(*mut Net);

impl CNet {
    fn load(path: &str, isa: Option<&str>) -> Result<CNet, c_int> {
        let path = CString::new(path).unwrap();
        let isa = isa.map(|s| CString::new(s).unwrap());
        let mut out = null_mut();
        // SAFETY: NUL-terminated strings and a local.
        let status = unsafe {
            repconv_net_load(path.as_ptr(), isa.as_ref().map_or(null(), |s| s.as_ptr()), &mut out)
        };
        CNet::wrap(status, out)
    }

    fn load_bytes(bytes: &[u8]) -> Result<CNet, c_int> {
        let mut out = null_mut();
        // SAFETY: a slice with its length, and a local.
        let status =
            unsafe { repconv_net_load_bytes(bytes.as_ptr(), bytes.len(), null(), &mut out) };
        CNet::wrap(status, out)
    }

    fn wrap(status: c_int, out: *mut Net) -> Result<CNet, c_int> {
        if status == REPCONV_OK {
            assert!(!out.is_null());
            Ok(CNet(out))
        } else {
            assert!(out.is_null(), "a failed load leaves *out NULL");
            Err(status)
        }
    }

    fn reparameterize(&self) -> CNet {
        let mut out = null_mut();
        // SAFETY: a live handle and a local.
        let status = unsafe { repconv_net_reparameterize(self.0, &mut out) };
        CNet::wrap(status, out).unwrap()
    }

    fn forward(&self, input: &[f32], shape: [usize; 4], logits: &mut [f32]) -> c_int {
        // SAFETY: a live handle; slices with their own lengths; `shape` has
        // 4 elements.
        unsafe {
            repconv_net_forward(
                self.0,
                input.as_ptr(),
                shape.as_ptr(),
                logits.as_mut_ptr(),
                logits.len(),
            )
        }
    }

    fn set_threads(&self, n: usize) -> c_int {
        // SAFETY: a live handle (the setting may change under running passes).
        unsafe { repconv_net_set_threads(self.0, n) }
    }

    fn set_precision(&self, name: &CStr) -> c_int {
        // SAFETY: a live handle and a C string.
        unsafe { repconv_net_set_precision(self.0, name.as_ptr()) }
    }

    fn usize(&self, f: unsafe extern "C" fn(*const Net, *mut usize) -> c_int) -> usize {
        let mut n = usize::MAX;
        // SAFETY: a live handle and a local; `f` is one of the size queries.
        assert_ok(unsafe { f(self.0, &mut n) });
        n
    }

    fn string(&self, f: unsafe extern "C" fn(*const Net, *mut *const c_char) -> c_int) -> String {
        let mut name = null();
        // SAFETY: a live handle and a local; `f` is one of the string queries.
        assert_ok(unsafe { f(self.0, &mut name) });
        c_string(name)
    }

    fn form(&self) -> c_int {
        let mut form = -1;
        // SAFETY: a live handle and a local.
        assert_ok(unsafe { repconv_net_form(self.0, &mut form) });
        form
    }
}

impl Drop for CNet {
    fn drop(&mut self) {
        // SAFETY: created by a repconv_net constructor, destroyed once.
        unsafe { repconv_net_destroy(self.0) }
    }
}

// SAFETY: forward, queries and set_threads are documented as thread-safe on
// one handle; destroy needs ownership here.
unsafe impl Send for CNet {}
// SAFETY: as above.
unsafe impl Sync for CNet {}

/// Geometries covering every kernel family and the general path.
fn layers() -> Vec<(Conv2dParams, [usize; 4])> {
    vec![
        (Conv2dParams::new(128, 128, [1, 1]), [1, 128, 28, 28]),
        (Conv2dParams::new(16, 32, [3, 3]).with_padding([1, 1]), [2, 16, 23, 29]),
        (Conv2dParams::new(3, 24, [3, 3]).with_padding([1, 1]).with_stride([2, 2]), [1, 3, 33, 31]),
        (
            Conv2dParams::new(64, 64, [3, 3])
                .with_padding([1, 1])
                .with_stride([2, 2])
                .with_groups(64),
            [2, 64, 15, 17],
        ),
        (
            Conv2dParams::new(12, 24, [5, 5])
                .with_padding([2, 2])
                .with_dilation([2, 1])
                .with_groups(4),
            [1, 12, 20, 20],
        ),
    ]
}

fn rust_forward(conv: &Conv2d, x: &Tensor, threads: usize) -> Vec<f32> {
    let mut y = Tensor::zeros(conv.output_shape(x.shape()).unwrap()).unwrap();
    let mut run = || conv.forward_into(x.view(), y.view_mut()).unwrap();
    if threads == 0 {
        run();
    } else {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(run);
    }
    y.as_slice().to_vec()
}

#[test]
fn version_and_isa() {
    assert_eq!(c_string(repconv_version()), env!("CARGO_PKG_VERSION"));
    assert_eq!(c_string(repconv_isa_best()), Isa::best().name());
    let mut name = null();
    // SAFETY: a local.
    assert_ok(unsafe { repconv_isa_default(&mut name) });
    assert_eq!(c_string(name), Isa::from_env().unwrap().name());
    assert_eq!(c_string(repconv_status_name(REPCONV_ERR_FORMAT)), "REPCONV_ERR_FORMAT");
    // Appended after the existing codes: their numbers are the ABI.
    assert_eq!((REPCONV_ERR_PANIC, REPCONV_ERR_PRECISION), (-10, -11));
    assert_eq!(c_string(repconv_status_name(REPCONV_ERR_PRECISION)), "REPCONV_ERR_PRECISION");
    assert_eq!(c_string(repconv_status_name(12345)), "unknown status");
}

#[test]
fn conv_forward_equals_the_rust_api_bit_for_bit() {
    for (i, (params, shape)) in layers().into_iter().enumerate() {
        let w = values(10 * i as u64, params.weight_len().unwrap());
        let b = values(10 * i as u64 + 1, params.out_channels);
        let x = Tensor::from_vec(shape, values(10 * i as u64 + 2, shape.iter().product())).unwrap();
        for (bias, act, activation) in [
            (Some(&b[..]), REPCONV_ACTIVATION_RELU, Activation::Relu),
            (None, REPCONV_ACTIVATION_NONE, Activation::None),
        ] {
            let rust = Conv2d::new(params, &w, bias, activation).unwrap();
            let want = bits(&rust_forward(&rust, &x, 0));
            let c = CConv::create(&params, &w, bias, act, None).unwrap();
            assert_eq!(c.string(repconv_conv_kernel_name), rust.kernel_name());
            assert_eq!(c.string(repconv_conv_isa), rust.isa().name());
            let mut out_shape = [0usize; 4];
            // SAFETY: a live handle, a 4-element shape and a 4-element output.
            assert_ok(unsafe {
                repconv_conv_output_shape(c.0, shape.as_ptr(), out_shape.as_mut_ptr())
            });
            assert_eq!(out_shape, rust.output_shape(shape).unwrap());
            for threads in [0, 1, 2, 3] {
                assert_ok(c.set_threads(threads));
                let mut y = vec![f32::NAN; want.len()];
                assert_ok(c.forward(x.as_slice(), shape, &mut y));
                assert_eq!(bits(&y), want, "{} with {threads} threads", rust.kernel_name());
                // The same thread count on the Rust side, too.
                assert_eq!(bits(&rust_forward(&rust, &x, threads)), want);
            }
        }
    }
}

#[test]
fn conv_on_every_available_isa() {
    let (params, shape) = layers().swap_remove(1);
    let w = values(1, params.weight_len().unwrap());
    let x = Tensor::from_vec(shape, values(2, shape.iter().product())).unwrap();
    for isa in available_isas("capi::conv_on_every_available_isa").into_iter().chain([Isa::best()])
    {
        let rust = Conv2d::new(params, &w, None, Activation::Relu).unwrap().with_isa(isa).unwrap();
        let c =
            CConv::create(&params, &w, None, REPCONV_ACTIVATION_RELU, Some(isa.name())).unwrap();
        assert_eq!(c.string(repconv_conv_isa), isa.name());
        assert_eq!(c.string(repconv_conv_kernel_name), rust.kernel_name());
        let mut y = vec![0.0; rust.output_shape(shape).unwrap().iter().product()];
        assert_ok(c.forward(x.as_slice(), shape, &mut y));
        assert_eq!(bits(&y), bits(&rust_forward(&rust, &x, 0)), "{isa}");
    }
    let best = CConv::create(&params, &w, None, REPCONV_ACTIVATION_RELU, Some("best")).unwrap();
    assert_eq!(best.string(repconv_conv_isa), Isa::best().name());
    assert_fails(
        CConv::create(&params, &w, None, REPCONV_ACTIVATION_RELU, Some("avx1024")).err().unwrap(),
        REPCONV_ERR_ISA,
        "avx1024",
    );
    if !Isa::available().any(|i| i.name() == "avx512") {
        let status = CConv::create(&params, &w, None, 1, Some("avx512")).err().unwrap();
        assert_fails(status, REPCONV_ERR_ISA, "avx512");
    }
}

/// The documented size of the default pool: RAYON_NUM_THREADS when it is a
/// positive integer (this suite does not run with one above 1024), else one
/// thread per CPU up to 1024.
fn default_pool_size() -> usize {
    match std::env::var("RAYON_NUM_THREADS").ok().and_then(|v| v.trim().parse().ok()) {
        Some(n) if n > 0 => n,
        _ => std::thread::available_parallelism().map_or(1, |n| n.get()).min(1024),
    }
}

#[test]
fn thread_settings() {
    let (params, shape) = layers().swap_remove(0);
    let w = values(3, params.weight_len().unwrap());
    let x = values(4, shape.iter().product());
    let c = CConv::create(&params, &w, None, REPCONV_ACTIVATION_NONE, None).unwrap();
    assert_eq!(c.threads(), default_pool_size());
    let mut want = vec![0.0; x.len()];
    assert_ok(c.forward(&x, shape, &mut want));
    for n in [1, 2, 5, 64, 0] {
        assert_ok(c.set_threads(n));
        let expected = if n == 0 { default_pool_size() } else { n };
        assert_eq!(c.threads(), expected);
        let mut y = vec![0.0; x.len()];
        assert_ok(c.forward(&x, shape, &mut y));
        assert_eq!(bits(&y), bits(&want), "{n} threads");
    }
    assert_ok(c.set_threads(3));
    assert_fails(c.set_threads(1025), REPCONV_ERR_INVALID_ARGUMENT, "1024");
    assert_eq!(c.threads(), 3, "a failed set keeps the setting");
}

/// Forward passes from several threads on one handle while another thread
/// keeps changing its thread count (private pools of 1 to 3 threads and the
/// default pool): every result bitwise the one-thread result, no hang, no
/// crash. `forward(i)` runs input `i` on the handle; `set(n)` sets its
/// threads.
fn forwards_survive_set_threads<H: Send + Sync + 'static>(
    handle: H,
    inputs: usize,
    forward: fn(&H, usize) -> Vec<u32>,
    set: fn(&H, usize) -> c_int,
) {
    assert_ok(set(&handle, 1));
    let want: Vec<Vec<u32>> = (0..inputs).map(|i| forward(&handle, i)).collect();
    let changes = watchdog::within(120, "forward passes while set_threads runs", move || {
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let setter = s.spawn(|| {
                let mut changes = 0usize;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    assert_ok(set(&handle, [2, 0, 3, 1][changes % 4]));
                    changes += 1;
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                changes
            });
            let passes: Vec<_> = (0..3)
                .map(|t| {
                    let (handle, want) = (&handle, &want);
                    s.spawn(move || {
                        for k in 0..12 {
                            let i = (t + k) % inputs;
                            assert_eq!(forward(handle, i), want[i], "input {i}, pass {k}");
                        }
                    })
                })
                .collect();
            let joined: Vec<_> = passes.into_iter().map(|p| p.join()).collect();
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            let changes = setter.join().unwrap();
            for j in joined {
                j.unwrap();
            }
            changes
        })
    });
    assert!(changes >= 4, "only {changes} thread-count changes happened during the passes");
}

#[test]
fn conv_set_threads_while_other_threads_forward() {
    let (params, shape) = layers().swap_remove(1);
    let w = values(15, params.weight_len().unwrap());
    let c = CConv::create(&params, &w, None, REPCONV_ACTIVATION_RELU, None).unwrap();
    let inputs: Vec<Vec<f32>> = (0..4).map(|i| values(150 + i, shape.iter().product())).collect();
    let handle = (c, inputs, shape);
    forwards_survive_set_threads(
        handle,
        4,
        |(c, inputs, shape), i| {
            let mut y = vec![f32::NAN; 2 * 32 * 23 * 29];
            assert_ok(c.forward(&inputs[i], *shape, &mut y));
            bits(&y)
        },
        |(c, _, _), n| c.set_threads(n),
    );
}

#[test]
fn net_set_threads_while_other_threads_forward() {
    let c = CNet::load(&fixture("s0.fused.safetensors"), None).unwrap();
    let inputs: Vec<Vec<f32>> = (0..3).map(|i| values(170 + i, 2 * 3 * 32 * 32)).collect();
    forwards_survive_set_threads(
        (c, inputs),
        3,
        |(c, inputs), i| {
            let mut y = vec![f32::NAN; 20];
            assert_ok(c.forward(&inputs[i], [2, 3, 32, 32], &mut y));
            bits(&y)
        },
        |(c, _), n| c.set_threads(n),
    );
}

#[test]
fn one_conv_handle_shared_by_threads() {
    let (params, shape) = layers().swap_remove(1);
    let w = values(5, params.weight_len().unwrap());
    let c = CConv::create(&params, &w, None, REPCONV_ACTIVATION_RELU, None).unwrap();
    assert_ok(c.set_threads(2));
    let inputs: Vec<Vec<f32>> = (0..6).map(|i| values(50 + i, shape.iter().product())).collect();
    let out_len = 2 * 32 * 23 * 29;
    let serial: Vec<Vec<f32>> = inputs
        .iter()
        .map(|x| {
            let mut y = vec![0.0; out_len];
            assert_ok(c.forward(x, shape, &mut y));
            y
        })
        .collect();
    let c = &c;
    std::thread::scope(|s| {
        for (x, want) in inputs.iter().zip(&serial) {
            s.spawn(move || {
                for _ in 0..3 {
                    let mut y = vec![0.0; out_len];
                    assert_ok(c.forward(x, shape, &mut y));
                    assert_eq!(bits(&y), bits(want));
                }
            });
        }
    });
}

#[test]
fn conv_error_paths() {
    let params = Conv2dParams::new(8, 16, [3, 3]).with_padding([1, 1]);
    let cp = c_params(&params);
    let w = values(6, params.weight_len().unwrap());
    let b = values(7, 16);
    let mut out = null_mut();
    let create = |p: *const ConvParams, w: *const f32, wl, b: *const f32, bl, act, out| {
        // SAFETY: every non-NULL pointer is a live value of the length beside it.
        unsafe { repconv_conv_create(p, w, wl, b, bl, act, null(), out) }
    };
    let (wp, wl, bp) = (w.as_ptr(), w.len(), b.as_ptr());
    assert_fails(create(null(), wp, wl, bp, 16, 1, &mut out), REPCONV_ERR_NULL, "params");
    assert_fails(create(&cp, null(), wl, bp, 16, 1, &mut out), REPCONV_ERR_NULL, "weights");
    assert_fails(create(&cp, wp, wl, bp, 16, 1, null_mut()), REPCONV_ERR_NULL, "out");
    assert_fails(create(&cp, wp, wl - 1, bp, 16, 1, &mut out), REPCONV_ERR_LENGTH, "weights_len");
    assert_fails(create(&cp, wp, wl, bp, 15, 1, &mut out), REPCONV_ERR_LENGTH, "bias_len");
    assert_fails(create(&cp, wp, wl, null(), 16, 1, &mut out), REPCONV_ERR_LENGTH, "bias is NULL");
    assert_fails(
        create(&cp, wp, wl, bp, 16, 2, &mut out),
        REPCONV_ERR_INVALID_ARGUMENT,
        "activation",
    );
    assert_fails(
        create(&cp, wp, wl, bp, 16, -1, &mut out),
        REPCONV_ERR_INVALID_ARGUMENT,
        "activation",
    );
    let misaligned = wp.cast::<u8>().wrapping_add(2).cast::<f32>();
    assert_fails(
        create(&cp, misaligned, wl, bp, 16, 1, &mut out),
        REPCONV_ERR_INVALID_ARGUMENT,
        "aligned",
    );
    for (field, p) in [
        ("groups", ConvParams { groups: 3, ..cp }),
        ("groups", ConvParams { groups: 0, ..cp }),
        ("stride", ConvParams { stride: [1, 0], ..cp }),
        ("dilation", ConvParams { dilation: [0, 1], ..cp }),
        ("kernel", ConvParams { kernel: [0, 3], ..cp }),
        ("in_channels", ConvParams { in_channels: 0, ..cp }),
    ] {
        assert_fails(create(&p, wp, wl, bp, 16, 1, &mut out), REPCONV_ERR_INVALID_ARGUMENT, field);
    }
    let huge = ConvParams { out_channels: usize::MAX / 2, ..cp };
    assert_fails(create(&huge, wp, wl, bp, 16, 1, &mut out), REPCONV_ERR_TOO_LARGE, "weights");
    // A weight count within usize but over the library's limit, with a
    // matching weights_len: rejected before any allocation or read.
    let big = ConvParams { in_channels: 1 << 16, out_channels: 1 << 16, ..cp };
    assert_fails(
        create(&big, wp, (1 << 32) * 9, null(), 0, 1, &mut out),
        REPCONV_ERR_TOO_LARGE,
        "weights",
    );
    assert!(out.is_null());

    let mut pi = ConvParams::default();
    // SAFETY: a local.
    assert_ok(unsafe { repconv_conv_params_init(&mut pi, 8, 16, 3, 3) });
    assert_eq!(pi, ConvParams { padding: [0, 0], ..cp });
    // SAFETY: NULL is allowed (and reported).
    assert_fails(
        unsafe { repconv_conv_params_init(null_mut(), 1, 1, 1, 1) },
        REPCONV_ERR_NULL,
        "params",
    );

    let c = CConv::create(&params, &w, Some(&b), REPCONV_ACTIVATION_RELU, None).unwrap();
    let shape = [2, 8, 5, 7];
    let x = values(8, 2 * 8 * 5 * 7);
    let mut y = vec![0.0; 2 * 16 * 5 * 7];
    let forward = |h: *const Conv, x: *const f32, s: *const usize, y: *mut f32, yl| {
        // SAFETY: every non-NULL pointer is a live value of the size the
        // shape and length imply (or the call fails before reading it).
        unsafe { repconv_conv_forward(h, x, s, y, yl) }
    };
    let (xp, sp, yp, yl) = (x.as_ptr(), shape.as_ptr(), y.as_mut_ptr(), y.len());
    assert_ok(forward(c.0, xp, sp, yp, yl));
    assert_fails(forward(null(), xp, sp, yp, yl), REPCONV_ERR_NULL, "conv");
    assert_fails(forward(c.0, null(), sp, yp, yl), REPCONV_ERR_NULL, "input");
    assert_fails(forward(c.0, xp, null(), yp, yl), REPCONV_ERR_NULL, "shape");
    assert_fails(forward(c.0, xp, sp, null_mut(), yl), REPCONV_ERR_NULL, "output");
    assert_fails(forward(c.0, xp, sp, yp, yl - 1), REPCONV_ERR_LENGTH, "output_len");
    assert_fails(forward(c.0, xp, sp, yp, 0), REPCONV_ERR_LENGTH, "output_len");
    for (bad, needle) in
        [([2, 9, 5, 7], "channels"), ([0, 8, 5, 7], "zero"), ([2, 8, 5, 0], "zero")]
    {
        assert_fails(forward(c.0, xp, bad.as_ptr(), yp, yl), REPCONV_ERR_SHAPE, needle);
    }
    let huge = [usize::MAX, 8, 5, 7];
    assert_fails(forward(c.0, xp, huge.as_ptr(), yp, yl), REPCONV_ERR_TOO_LARGE, "input");
    let big = [1 << 20, 8, 1 << 10, 1 << 10];
    assert_fails(forward(c.0, xp, big.as_ptr(), yp, yl), REPCONV_ERR_TOO_LARGE, "input");
    // Overlap: output is the input buffer, or half of it.
    let mut both = values(9, 2 * 16 * 5 * 7 + 2 * 8 * 5 * 7);
    let bp = both.as_mut_ptr();
    assert_fails(forward(c.0, bp, sp, bp, yl), REPCONV_ERR_INVALID_ARGUMENT, "overlap");
    assert_fails(
        forward(c.0, bp, sp, bp.wrapping_add(100), yl),
        REPCONV_ERR_INVALID_ARGUMENT,
        "overlap",
    );
    // Adjacent, not overlapping.
    assert_ok(forward(c.0, bp, sp, bp.wrapping_add(2 * 8 * 5 * 7), yl));
    let odd = yp.cast::<u8>().wrapping_add(1).cast::<f32>();
    assert_fails(forward(c.0, xp, sp, odd, yl - 1), REPCONV_ERR_INVALID_ARGUMENT, "aligned");

    // A plane smaller than the unpadded kernel.
    let unpadded = Conv2dParams::new(8, 16, [3, 3]);
    let c2 = CConv::create(&unpadded, &w, None, REPCONV_ACTIVATION_NONE, None).unwrap();
    let tiny = [1, 8, 2, 9];
    assert_fails(forward(c2.0, xp, tiny.as_ptr(), yp, 16 * 7), REPCONV_ERR_SHAPE, "kernel");

    let mut s = [0usize; 4];
    // SAFETY: NULL handles and outputs are allowed (and reported).
    unsafe {
        assert_fails(
            repconv_conv_output_shape(null(), sp, s.as_mut_ptr()),
            REPCONV_ERR_NULL,
            "conv",
        );
        assert_fails(
            repconv_conv_output_shape(c.0, null(), s.as_mut_ptr()),
            REPCONV_ERR_NULL,
            "input_shape",
        );
        assert_fails(
            repconv_conv_output_shape(c.0, sp, null_mut()),
            REPCONV_ERR_NULL,
            "output_shape",
        );
        assert_fails(repconv_conv_kernel_name(null(), &mut null()), REPCONV_ERR_NULL, "conv");
        assert_fails(repconv_conv_kernel_name(c.0, null_mut()), REPCONV_ERR_NULL, "name");
        assert_fails(repconv_conv_isa(c.0, null_mut()), REPCONV_ERR_NULL, "name");
        assert_fails(repconv_conv_threads(c.0, null_mut()), REPCONV_ERR_NULL, "threads");
        assert_fails(repconv_conv_set_threads(null_mut(), 1), REPCONV_ERR_NULL, "conv");
        assert_fails(repconv_isa_default(null_mut()), REPCONV_ERR_NULL, "name");
        repconv_conv_destroy(null_mut());
    }
    // The output shape is written only on success.
    assert_eq!(s, [0; 4]);
}

#[test]
fn last_error_is_per_thread_and_cleared_by_success() {
    // SAFETY: NULL is allowed (and reported).
    let status = unsafe { repconv_conv_set_threads(null_mut(), 1) };
    assert_fails(status, REPCONV_ERR_NULL, "repconv_conv_set_threads: conv is NULL");
    std::thread::spawn(|| assert_eq!(last_error(), "")).join().unwrap();
    assert!(last_error().contains("conv is NULL"), "still set on this thread");
    let mut name = null();
    // SAFETY: a local.
    assert_ok(unsafe { repconv_isa_default(&mut name) });
}

fn rust_net(path: &str) -> MobileOne {
    weights::load(path, &LoadOptions::default()).unwrap()
}

fn rust_logits(net: &MobileOne, x: &Tensor, threads: usize) -> Vec<f32> {
    let mut y = Tensor::zeros(net.output_shape(x.shape()).unwrap()).unwrap();
    let mut run = || net.forward_into(x.view(), y.view_mut(), &mut Workspace::new()).unwrap();
    if threads == 0 {
        run();
    } else {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(run);
    }
    y.as_slice().to_vec()
}

fn fixture_input() -> Tensor {
    let io = weights::read_tensors(&std::fs::read(fixture("s0.io.safetensors")).unwrap()).unwrap();
    io.iter().find(|t| t.name == "input").unwrap().to_nchw().unwrap()
}

#[test]
fn net_forward_equals_the_rust_api_bit_for_bit() {
    let x = fixture_input();
    let shape = x.shape();
    for (file, form) in [
        ("s0.train.safetensors", REPCONV_FORM_MULTI_BRANCH),
        ("s0.fused.safetensors", REPCONV_FORM_FUSED),
    ] {
        let path = fixture(file);
        let rust = rust_net(&path);
        let fused = rust.reparameterize().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        for c in [CNet::load(&path, None).unwrap(), CNet::load_bytes(&bytes).unwrap()] {
            assert_eq!(c.string(repconv_net_variant), "s0");
            assert_eq!(c.string(repconv_net_isa), rust.isa().name());
            assert_eq!(c.usize(repconv_net_num_classes), 10);
            assert_eq!(c.usize(repconv_net_in_channels), 3);
            assert_eq!(c.form(), form);
            let r = c.reparameterize();
            assert_eq!(r.form(), REPCONV_FORM_FUSED);
            for threads in [0, 1, 2] {
                assert_ok(c.set_threads(threads));
                assert_ok(r.set_threads(threads));
                let want = bits(&rust_logits(&rust, &x, threads));
                let mut logits = vec![f32::NAN; 20];
                assert_ok(c.forward(x.as_slice(), shape, &mut logits));
                assert_eq!(bits(&logits), want, "{file}, {threads} threads");
                // Twice: the second pass reuses the handle's workspace.
                assert_ok(c.forward(x.as_slice(), shape, &mut logits));
                assert_eq!(bits(&logits), want, "{file}, {threads} threads, again");
                assert_ok(r.forward(x.as_slice(), shape, &mut logits));
                assert_eq!(bits(&logits), bits(&rust_logits(&fused, &x, threads)), "{file} fused");
            }
            assert_ok(c.set_threads(2));
            assert_eq!(c.reparameterize().usize(repconv_net_threads), 2, "thread setting copied");
        }
    }
}

#[test]
fn net_isa_and_batch_shapes() {
    let path = fixture("s0.fused.safetensors");
    let rust = rust_net(&path);
    let x = Tensor::from_vec([3, 3, 40, 24], values(11, 3 * 3 * 40 * 24)).unwrap();
    for isa in available_isas("capi::net_isa_and_batch_shapes") {
        let c = CNet::load(&path, Some(isa.name())).unwrap();
        assert_eq!(c.string(repconv_net_isa), isa.name());
        let mut logits = vec![0.0; 30];
        assert_ok(c.forward(x.as_slice(), x.shape(), &mut logits));
        let want = rust_logits(&rust.clone().with_isa(isa).unwrap(), &x, 0);
        assert_eq!(bits(&logits), bits(&want), "{isa}");
    }
    assert_fails(CNet::load(&path, Some("fast")).err().unwrap(), REPCONV_ERR_ISA, "fast");
}

#[test]
fn one_net_handle_shared_by_threads() {
    let c = CNet::load(&fixture("s0.fused.safetensors"), None).unwrap();
    assert_ok(c.set_threads(2));
    let shape = [1, 3, 32, 32];
    let inputs: Vec<Vec<f32>> = (0..4).map(|i| values(70 + i, 3 * 32 * 32)).collect();
    let want: Vec<Vec<u32>> = inputs
        .iter()
        .map(|x| {
            let mut y = vec![0.0; 10];
            assert_ok(c.forward(x, shape, &mut y));
            bits(&y)
        })
        .collect();
    let c = &c;
    std::thread::scope(|s| {
        for (x, want) in inputs.iter().zip(&want) {
            s.spawn(move || {
                for _ in 0..3 {
                    let mut y = vec![0.0; 10];
                    assert_ok(c.forward(x, shape, &mut y));
                    assert_eq!(&bits(&y), want);
                }
            });
        }
    });
}

/// A FIFO with no writer is refused at once as not a regular file (opening
/// it for reading the ordinary way would wait for a writer forever).
#[cfg(unix)]
#[test]
fn net_load_refuses_a_fifo_without_blocking() {
    let dir = std::env::temp_dir().join(format!("repconv-capi-fifo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("model.safetensors");
    watchdog::mkfifo(&fifo);
    let path = fifo.to_str().unwrap().to_string();
    let (status, message) = watchdog::within(60, "repconv_net_load on a FIFO", move || {
        let status = CNet::load(&path, None).err().unwrap();
        (status, last_error())
    });
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(status, REPCONV_ERR_IO, "{message}");
    assert!(message.contains("not a regular file"), "{message}");
    assert!(message.contains("model.safetensors"), "{message}");
}

#[test]
fn net_error_paths() {
    let path = fixture("s0.fused.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    assert_fails(
        CNet::load("/nonexistent/x.safetensors", None).err().unwrap(),
        REPCONV_ERR_IO,
        "/nonexistent/x.safetensors",
    );
    assert_fails(CNet::load(&fixture(""), None).err().unwrap(), REPCONV_ERR_IO, "fixtures");
    for (what, corrupt, needle) in [
        ("truncated", bytes[..bytes.len() / 2].to_vec(), "truncated"),
        ("empty", Vec::new(), "safetensors"),
        ("garbage", vec![0xAB; 4096], "safetensors"),
        ("a block, not a network", std::fs::read(fixture("stem.fused.safetensors")).unwrap(), ""),
    ] {
        let status = CNet::load_bytes(&corrupt).err().unwrap_or_else(|| panic!("{what} loaded"));
        assert_fails(status, REPCONV_ERR_FORMAT, needle);
        let tmp =
            std::env::temp_dir().join(format!("repconv-capi-test-{}-{what}", std::process::id()));
        std::fs::write(&tmp, &corrupt).unwrap();
        assert_fails(
            CNet::load(tmp.to_str().unwrap(), None).err().unwrap(),
            REPCONV_ERR_FORMAT,
            needle,
        );
        std::fs::remove_file(tmp).unwrap();
    }
    // Not a regular file: never read (reading /dev/zero would not end).
    #[cfg(unix)]
    assert_fails(
        CNet::load("/dev/zero", None).err().unwrap(),
        REPCONV_ERR_IO,
        "not a regular file",
    );
    let mut out = null_mut();
    // SAFETY: NULL pointers are allowed (and reported).
    unsafe {
        assert_fails(repconv_net_load(null(), null(), &mut out), REPCONV_ERR_NULL, "path");
        assert_fails(repconv_net_load(c"x".as_ptr(), null(), null_mut()), REPCONV_ERR_NULL, "out");
        assert_fails(
            repconv_net_load_bytes(null(), 10, null(), &mut out),
            REPCONV_ERR_NULL,
            "bytes",
        );
        assert_fails(repconv_net_reparameterize(null(), &mut out), REPCONV_ERR_NULL, "net");
    }
    assert!(out.is_null());

    let c = CNet::load_bytes(&bytes).unwrap();
    let x = values(12, 2 * 3 * 32 * 32);
    let shape = [2, 3, 32, 32];
    let mut y = vec![0.0; 20];
    let (xp, sp, yp) = (x.as_ptr(), shape.as_ptr(), y.as_mut_ptr());
    let forward = |h: *const Net, x: *const f32, s: *const usize, y: *mut f32, yl| {
        // SAFETY: every non-NULL pointer is a live value of the size the
        // shape and length imply (or the call fails before reading it).
        unsafe { repconv_net_forward(h, x, s, y, yl) }
    };
    assert_ok(forward(c.0, xp, sp, yp, 20));
    assert_fails(forward(null(), xp, sp, yp, 20), REPCONV_ERR_NULL, "net");
    assert_fails(forward(c.0, null(), sp, yp, 20), REPCONV_ERR_NULL, "input");
    assert_fails(forward(c.0, xp, null(), yp, 20), REPCONV_ERR_NULL, "shape");
    assert_fails(forward(c.0, xp, sp, null_mut(), 20), REPCONV_ERR_NULL, "logits");
    assert_fails(forward(c.0, xp, sp, yp, 10), REPCONV_ERR_LENGTH, "logits_len");
    for (bad, needle) in
        [([2, 4, 32, 32], "channels"), ([2, 3, 0, 32], "zero"), ([0, 3, 32, 32], "zero")]
    {
        assert_fails(forward(c.0, xp, bad.as_ptr(), yp, 20), REPCONV_ERR_SHAPE, needle);
    }
    let huge = [usize::MAX / 4, 3, 32, 32];
    assert_fails(forward(c.0, xp, huge.as_ptr(), yp, 20), REPCONV_ERR_TOO_LARGE, "input");
    let mut buf = values(13, 2 * 3 * 32 * 32);
    let bp = buf.as_mut_ptr();
    assert_fails(
        forward(c.0, bp, sp, bp.wrapping_add(6000), 20),
        REPCONV_ERR_INVALID_ARGUMENT,
        "overlap",
    );

    // SAFETY: NULL handles and outputs are allowed (and reported).
    unsafe {
        assert_fails(repconv_net_variant(c.0, null_mut()), REPCONV_ERR_NULL, "name");
        assert_fails(repconv_net_num_classes(null(), &mut 0), REPCONV_ERR_NULL, "net");
        assert_fails(repconv_net_in_channels(c.0, null_mut()), REPCONV_ERR_NULL, "in_channels");
        assert_fails(repconv_net_form(c.0, null_mut()), REPCONV_ERR_NULL, "form");
        assert_fails(repconv_net_isa(null(), &mut null()), REPCONV_ERR_NULL, "net");
        assert_fails(repconv_net_threads(c.0, null_mut()), REPCONV_ERR_NULL, "threads");
        assert_fails(repconv_net_set_threads(null_mut(), 1), REPCONV_ERR_NULL, "net");
        assert_fails(repconv_net_set_threads(c.0, 4096), REPCONV_ERR_INVALID_ARGUMENT, "threads");
        repconv_net_destroy(null_mut());
    }
}

/// Names that are not precisions (matched exactly, like ISA names).
const BAD_PRECISIONS: [&CStr; 5] = [c"fp16", c"F32", c"bf16 ", c"", c"\xff"];

/// The precision setting of a convolution: "f32" by default; unknown names,
/// NULL handles and pointers are errors that keep the setting; where the
/// Rust API refuses bf16 (always on the portable ISA, since this process
/// runs without REPCONV_BF16=emulated) the C API returns
/// REPCONV_ERR_PRECISION with the library's message and the handle keeps
/// computing in f32, and where it accepts it (the avx512 ISA on a CPU with
/// AVX512_BF16) the handle runs the same kernel bit for bit.
#[test]
fn conv_precision_settings_and_errors() {
    assert!(std::env::var(repconv_rs::BF16_ENV).is_err(), "run without {}", repconv_rs::BF16_ENV);
    let (params, shape) = layers().swap_remove(0);
    let w = values(31, params.weight_len().unwrap());
    let b = values(32, params.out_channels);
    let x = Tensor::from_vec(shape, values(33, shape.iter().product())).unwrap();
    let mut checked_refusal = false;
    for isa in available_isas("capi::conv_precision_settings_and_errors") {
        let f32_conv =
            Conv2d::new(params, &w, Some(&b), Activation::Relu).unwrap().with_isa(isa).unwrap();
        let f32_out = bits(&rust_forward(&f32_conv, &x, 0));
        let c = CConv::create(&params, &w, Some(&b), REPCONV_ACTIVATION_RELU, Some(isa.name()))
            .unwrap();
        assert_eq!(c.string(repconv_conv_precision), "f32", "the default");
        assert_ok(c.set_precision(c"f32"));
        assert_eq!(c.string(repconv_conv_precision), "f32");
        for bad in BAD_PRECISIONS {
            assert_fails(c.set_precision(bad), REPCONV_ERR_INVALID_ARGUMENT, "\"f32\" or \"bf16\"");
            assert!(last_error().contains(&format!("{bad:?}")), "{}", last_error());
        }
        let mut y = vec![f32::NAN; f32_out.len()];
        match f32_conv.clone().with_precision(Precision::Bf16) {
            Err(e) => {
                assert!(matches!(e, Error::Precision { .. }), "{e:?}");
                assert_fails(c.set_precision(c"bf16"), REPCONV_ERR_PRECISION, &e.to_string());
                assert!(
                    last_error().starts_with("repconv_conv_set_precision: "),
                    "{}",
                    last_error()
                );
                checked_refusal |= isa.kind() == IsaKind::Portable;
                println!("{isa}: bf16 refused: {e}");
            }
            Ok(bf16) => {
                assert_ne!(isa.kind(), IsaKind::Portable, "bf16 on the portable ISA");
                assert_ok(c.set_precision(c"bf16"));
                assert_eq!(c.string(repconv_conv_precision), "bf16");
                assert_eq!(c.string(repconv_conv_kernel_name), bf16.kernel_name());
                assert_ok(c.forward(x.as_slice(), shape, &mut y));
                assert_eq!(bits(&y), bits(&rust_forward(&bf16, &x, 0)), "{isa} bf16");
                assert_ok(c.set_precision(c"f32"));
                println!("{isa}: bf16 runs {}", bf16.kernel_name());
            }
        }
        // Failures kept the setting, and f32 is back after a bf16 run.
        assert_eq!(c.string(repconv_conv_precision), "f32");
        assert_eq!(c.string(repconv_conv_kernel_name), f32_conv.kernel_name());
        assert_ok(c.forward(x.as_slice(), shape, &mut y));
        assert_eq!(bits(&y), f32_out, "{isa} f32");
    }
    assert!(checked_refusal, "the portable ISA must refuse bf16 without REPCONV_BF16=emulated");

    let c = CConv::create(&params, &w, None, REPCONV_ACTIVATION_NONE, None).unwrap();
    // SAFETY: NULL handles and pointers are allowed (and reported).
    unsafe {
        let mut name = null();
        assert_fails(
            repconv_conv_set_precision(null_mut(), c"f32".as_ptr()),
            REPCONV_ERR_NULL,
            "conv",
        );
        assert_fails(repconv_conv_set_precision(c.0, null()), REPCONV_ERR_NULL, "name");
        assert_fails(repconv_conv_precision(null(), &mut name), REPCONV_ERR_NULL, "conv");
        assert_fails(repconv_conv_precision(c.0, null_mut()), REPCONV_ERR_NULL, "name");
        assert!(name.is_null(), "written only on success");
    }
    assert_eq!(c.string(repconv_conv_precision), "f32");
}

/// The same for a network: the default, errors that keep the setting, the
/// library's refusal as REPCONV_ERR_PRECISION (or, where bf16 runs, the Rust
/// API's bf16 logits bit for bit), and a reparameterized copy in the same
/// precision.
#[test]
fn net_precision_settings_and_errors() {
    assert!(std::env::var(repconv_rs::BF16_ENV).is_err(), "run without {}", repconv_rs::BF16_ENV);
    let path = fixture("s0.train.safetensors");
    let x = fixture_input();
    let mut checked_refusal = false;
    for isa in available_isas("capi::net_precision_settings_and_errors") {
        let f32_net = rust_net(&path).with_isa(isa).unwrap();
        let f32_logits = bits(&rust_logits(&f32_net, &x, 0));
        let c = CNet::load(&path, Some(isa.name())).unwrap();
        assert_eq!(c.string(repconv_net_precision), "f32", "the default");
        assert_ok(c.set_precision(c"f32"));
        for bad in BAD_PRECISIONS {
            assert_fails(c.set_precision(bad), REPCONV_ERR_INVALID_ARGUMENT, "\"f32\" or \"bf16\"");
        }
        let mut logits = vec![f32::NAN; 20];
        let want_fused = match f32_net.clone().with_precision(Precision::Bf16) {
            Err(e) => {
                assert!(matches!(e, Error::Precision { .. }), "{e:?}");
                assert_fails(c.set_precision(c"bf16"), REPCONV_ERR_PRECISION, &e.to_string());
                assert!(last_error().starts_with("repconv_net_set_precision: "));
                checked_refusal |= isa.kind() == IsaKind::Portable;
                assert_eq!(c.string(repconv_net_precision), "f32");
                f32_net.reparameterize().unwrap()
            }
            Ok(bf16) => {
                assert_ok(c.set_precision(c"bf16"));
                assert_eq!(c.string(repconv_net_precision), "bf16");
                assert_ok(c.forward(x.as_slice(), x.shape(), &mut logits));
                assert_eq!(bits(&logits), bits(&rust_logits(&bf16, &x, 0)), "{isa} bf16");
                bf16.reparameterize().unwrap()
            }
        };
        let r = c.reparameterize();
        assert_eq!(r.string(repconv_net_precision), c.string(repconv_net_precision));
        assert_ok(r.forward(x.as_slice(), x.shape(), &mut logits));
        assert_eq!(bits(&logits), bits(&rust_logits(&want_fused, &x, 0)), "{isa} fused");
        assert_ok(c.set_precision(c"f32"));
        assert_ok(c.forward(x.as_slice(), x.shape(), &mut logits));
        assert_eq!(bits(&logits), f32_logits, "{isa} f32");
    }
    assert!(checked_refusal, "the portable ISA must refuse bf16 without REPCONV_BF16=emulated");

    let c = CNet::load(&fixture("s0.fused.safetensors"), None).unwrap();
    // SAFETY: NULL handles and pointers are allowed (and reported).
    unsafe {
        let mut name = null();
        assert_fails(
            repconv_net_set_precision(null_mut(), c"bf16".as_ptr()),
            REPCONV_ERR_NULL,
            "net",
        );
        assert_fails(repconv_net_set_precision(c.0, null()), REPCONV_ERR_NULL, "name");
        assert_fails(repconv_net_precision(null(), &mut name), REPCONV_ERR_NULL, "net");
        assert_fails(repconv_net_precision(c.0, null_mut()), REPCONV_ERR_NULL, "name");
        assert!(name.is_null(), "written only on success");
    }
    assert_eq!(c.string(repconv_net_precision), "f32");
}
