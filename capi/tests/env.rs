//! The C API under environment variables that the library reads once per
//! process (REPCONV_ISA) or when it makes its default thread pool
//! (RAYON_NUM_THREADS): each case runs one `#[ignore]`d test of this binary
//! again in a child process with the variable set, under a time limit.

#[path = "../../tests/common/watchdog.rs"]
#[allow(dead_code)]
mod watchdog;

use std::ffi::{CStr, c_char, c_int};
use std::ptr::{null, null_mut};

use repconv_capi::*;
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
