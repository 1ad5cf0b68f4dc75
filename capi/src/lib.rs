//! The C ABI of repconv: `librepconv_capi.so` / `librepconv_capi.a` and the header
//! `include/repconv.h`, which cbindgen generates from these sources and
//! `cbindgen.toml` (the header's opening comment, in `cbindgen.toml`, is the
//! API overview: handles, status codes, ownership, threads).
//!
//! Every `extern "C"` function runs its body through `status::guard`, which
//! catches panics and sets the thread-local last error; raw pointers become
//! references only in `ptr`, after NULL, alignment and size checks. As an
//! rlib, the crate lets Rust tests and benches call the C functions
//! directly.

// First, so that the header lists the status codes first.
mod status;

mod conv;
mod current;
mod net;
mod ptr;
mod threads;

use std::ffi::{CStr, c_char, c_int};

use repconv_rs::{Isa, IsaKind, Precision};

pub use conv::{
    Conv, ConvParams, REPCONV_ACTIVATION_NONE, REPCONV_ACTIVATION_RELU, repconv_conv_create,
    repconv_conv_destroy, repconv_conv_forward, repconv_conv_isa, repconv_conv_kernel_name,
    repconv_conv_output_shape, repconv_conv_params_init, repconv_conv_precision,
    repconv_conv_set_precision, repconv_conv_set_threads, repconv_conv_threads,
};
pub use net::{
    Net, REPCONV_FORM_FUSED, REPCONV_FORM_MIXED, REPCONV_FORM_MULTI_BRANCH, repconv_net_destroy,
    repconv_net_form, repconv_net_forward, repconv_net_in_channels, repconv_net_isa,
    repconv_net_load, repconv_net_load_bytes, repconv_net_num_classes, repconv_net_precision,
    repconv_net_reparameterize, repconv_net_set_precision, repconv_net_set_threads,
    repconv_net_threads, repconv_net_variant,
};
pub use status::{
    REPCONV_ERR_FORMAT, REPCONV_ERR_INVALID_ARGUMENT, REPCONV_ERR_IO, REPCONV_ERR_ISA,
    REPCONV_ERR_LENGTH, REPCONV_ERR_NULL, REPCONV_ERR_PANIC, REPCONV_ERR_PRECISION,
    REPCONV_ERR_SHAPE, REPCONV_ERR_THREADS, REPCONV_ERR_TOO_LARGE, REPCONV_OK,
};

/// The library's version, e.g. "0.1.0" (a static string).
#[unsafe(no_mangle)]
pub extern "C" fn repconv_version() -> *const c_char {
    const VERSION: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => panic!("the package version contains a NUL byte"),
        };
    VERSION.as_ptr()
}

/// The best instruction set this CPU supports, as named in kernel names:
/// "avx512", "avx2" or "portable" (a static string).
#[unsafe(no_mangle)]
pub extern "C" fn repconv_isa_best() -> *const c_char {
    isa_c_name(Isa::best()).as_ptr()
}

/// Sets `*name` to the ISA that handles created with a NULL `isa` use: the
/// environment variable REPCONV_ISA if set (read once per process), else
/// the best this CPU has. Fails with REPCONV_ERR_ISA if REPCONV_ISA names an
/// unknown or unsupported ISA (so would every create or load with a NULL
/// `isa`).
///
/// # Safety
/// `name` must be NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn repconv_isa_default(name: *mut *const c_char) -> c_int {
    status::guard("repconv_isa_default", || {
        let isa = Isa::from_env()?;
        // SAFETY: the caller guarantees `name` is NULL or writable.
        unsafe { ptr::write("name", name, isa_c_name(isa).as_ptr()) }
    })
}

/// The one-line reason of the last failed call on the calling thread, naming
/// the function and the problem (e.g. "repconv_conv_forward: output_len:
/// expected 100352 (output shape [1, 128, 28, 28]), got 5"), or "" if the
/// last call succeeded. Never NULL. The string belongs to the library and
/// stays valid until the calling thread's next repconv call; copy it to
/// keep it.
#[unsafe(no_mangle)]
pub extern "C" fn repconv_last_error() -> *const c_char {
    status::last_error()
}

/// The name of a status code, e.g. "REPCONV_ERR_SHAPE" for
/// REPCONV_ERR_SHAPE, or "unknown status" (a static string).
#[unsafe(no_mangle)]
pub extern "C" fn repconv_status_name(status: c_int) -> *const c_char {
    status::status_name(status).as_ptr()
}

/// The static C name of an ISA.
fn isa_c_name(isa: Isa) -> &'static CStr {
    match isa.kind() {
        IsaKind::Avx512 => c"avx512",
        IsaKind::Avx2 => c"avx2",
        IsaKind::Portable => c"portable",
    }
}

/// An optional ISA name: `None` (NULL) for the process default.
fn parse_isa(name: Option<&CStr>) -> status::Res<Option<Isa>> {
    let Some(name) = name else { return Ok(None) };
    let name = name.to_str().map_err(|_| {
        status::Failure::new(REPCONV_ERR_ISA, format!("unknown ISA {name:?} (not UTF-8)"))
    })?;
    Ok(Some(Isa::from_name(name)?))
}

/// The static C name of a precision: "f32" or "bf16".
fn precision_c_name(precision: Precision) -> &'static CStr {
    match precision {
        Precision::F32 => c"f32",
        Precision::Bf16 => c"bf16",
    }
}

/// A precision name, "f32" or "bf16" (exactly; anything else is
/// REPCONV_ERR_INVALID_ARGUMENT).
fn parse_precision(name: &CStr) -> status::Res<Precision> {
    [Precision::F32, Precision::Bf16].into_iter().find(|&p| precision_c_name(p) == name).ok_or_else(
        || {
            status::Failure::invalid(format!(
                "unknown precision {name:?}: expected \"f32\" or \"bf16\""
            ))
        },
    )
}

#[cfg(test)]
mod tests {
    /// C callers share handles between threads (forward passes and queries
    /// concurrently, as the header documents), so both must be Send + Sync.
    #[test]
    fn handles_are_send_and_sync() {
        fn shareable<T: Send + Sync>() {}
        shareable::<super::Conv>();
        shareable::<super::Net>();
    }
}
