//! Status codes, the thread-local last error, and [`guard`], which every
//! fallible entry point runs its body in: it catches panics, records the
//! message and turns the outcome into a status code.

use std::any::Any;
use std::cell::RefCell;
use std::ffi::{c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};

use repconv_rs::Error;

/// Success.
pub const REPCONV_OK: c_int = 0;
/// A required pointer argument is NULL (the message names it).
pub const REPCONV_ERR_NULL: c_int = -1;
/// An argument is out of range: a convolution parameter (a zero size, groups
/// not dividing the channels), an unknown activation, a thread count above
/// 1024, a misaligned pointer, input and output buffers that overlap, a path
/// that is not valid UTF-8 (on non-Unix systems).
pub const REPCONV_ERR_INVALID_ARGUMENT: c_int = -2;
/// An input shape does not fit the convolution or network: a zero dimension,
/// the wrong number of channels, a plane smaller than the kernel.
pub const REPCONV_ERR_SHAPE: c_int = -3;
/// A buffer length does not match what the shape or the parameters imply.
pub const REPCONV_ERR_LENGTH: c_int = -4;
/// A size overflows, or exceeds the library's limit of 2^31 elements per
/// tensor.
pub const REPCONV_ERR_TOO_LARGE: c_int = -5;
/// The ISA name is unknown, or this CPU does not support that instruction
/// set (also returned when the environment variable REPCONV_ISA holds such a
/// name).
pub const REPCONV_ERR_ISA: c_int = -6;
/// A file could not be read.
pub const REPCONV_ERR_IO: c_int = -7;
/// The bytes are not a MobileOne checkpoint this library can load: not
/// safetensors, truncated, a missing, unexpected or misshapen tensor, an
/// unsupported dtype, unusable values (the message names the tensor).
pub const REPCONV_ERR_FORMAT: c_int = -8;
/// A thread pool could not be made: the operating system refused to create
/// its worker threads, or (for the default pool of handles left at 0
/// threads) RAYON_NUM_THREADS asks for more than 1024.
pub const REPCONV_ERR_THREADS: c_int = -9;
/// The library panicked: a bug in repconv (please report it with the
/// message). The panic was caught; the process and every handle remain
/// usable, but the contents of the call's output buffer are unspecified.
pub const REPCONV_ERR_PANIC: c_int = -10;
/// The precision cannot run on this handle: "bf16" needs the "avx512" ISA on
/// a CPU with AVX512_BF16 (or the environment variable REPCONV_BF16=emulated,
/// read once per process, for the bf16 kernels' slow software model).
pub const REPCONV_ERR_PRECISION: c_int = -11;

/// Why a call failed: its status code and a one-line message.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: c_int,
    pub(crate) message: String,
}

/// The result of an entry point's body.
pub(crate) type Res<T = ()> = Result<T, Failure>;

impl Failure {
    pub(crate) fn new(code: c_int, message: impl Into<String>) -> Failure {
        Failure { code, message: message.into() }
    }

    pub(crate) fn null(what: &str) -> Failure {
        Failure::new(REPCONV_ERR_NULL, format!("{what} is NULL"))
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Failure {
        Failure::new(REPCONV_ERR_INVALID_ARGUMENT, message)
    }

    pub(crate) fn length(message: impl Into<String>) -> Failure {
        Failure::new(REPCONV_ERR_LENGTH, message)
    }
}

/// The library's errors, by kind.
impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        let code = match &e {
            Error::ShapeMismatch { .. } => REPCONV_ERR_SHAPE,
            Error::LengthMismatch { .. } => REPCONV_ERR_LENGTH,
            Error::TooLarge { .. } => REPCONV_ERR_TOO_LARGE,
            Error::MissingTensor { .. }
            | Error::UnexpectedTensor { .. }
            | Error::TensorShape { .. }
            | Error::TensorDtype { .. }
            | Error::TensorValue { .. }
            | Error::TruncatedFile { .. }
            | Error::NotSafetensors { .. } => REPCONV_ERR_FORMAT,
            Error::Io { .. } => REPCONV_ERR_IO,
            Error::Isa(_) => REPCONV_ERR_ISA,
            Error::Precision { .. } => REPCONV_ERR_PRECISION,
            // InvalidParam, Unsupported, and variants added later.
            _ => REPCONV_ERR_INVALID_ARGUMENT,
        };
        Failure::new(code, e.to_string())
    }
}

impl From<repconv_rs::IsaError> for Failure {
    fn from(e: repconv_rs::IsaError) -> Failure {
        Failure::new(REPCONV_ERR_ISA, e.to_string())
    }
}

/// An error of a forward pass or shape query, where the only caller input
/// left to be invalid is the input shape: an invalid parameter there (a zero
/// dimension, a plane smaller than the kernel) is a shape error.
pub(crate) fn shape_error(e: Error) -> Failure {
    match e {
        Error::InvalidParam { .. } => Failure::new(REPCONV_ERR_SHAPE, e.to_string()),
        e => e.into(),
    }
}

/// An error of loading a checkpoint: anything but I/O and the ISA is about
/// the file's contents (including a variant that cannot be inferred, or
/// sizes too large to be a real network).
pub(crate) fn load_error(e: Error) -> Failure {
    match e {
        Error::Io { .. } | Error::Isa(_) => e.into(),
        e => Failure::new(REPCONV_ERR_FORMAT, e.to_string()),
    }
}

thread_local! {
    /// The last failed call's message on this thread, NUL-terminated, or
    /// empty after a success.
    static LAST_ERROR: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn set_last_error(function: &str, message: &str) {
    // `try_with`/`try_borrow_mut`: never panic, even during thread teardown.
    let _ = LAST_ERROR.try_with(|buf| {
        if let Ok(mut buf) = buf.try_borrow_mut() {
            buf.clear();
            buf.extend(function.bytes().chain(*b": ").chain(message.bytes()).filter(|&b| b != 0));
            buf.push(0);
        }
    });
}

fn clear_last_error() {
    let _ = LAST_ERROR.try_with(|buf| {
        if let Ok(mut buf) = buf.try_borrow_mut()
            && !buf.is_empty()
        {
            buf.clear();
        }
    });
}

/// The calling thread's last error message (see `repconv_last_error`).
pub(crate) fn last_error() -> *const c_char {
    LAST_ERROR
        .try_with(|buf| match buf.try_borrow() {
            Ok(buf) if !buf.is_empty() => buf.as_ptr().cast(),
            _ => c"".as_ptr(),
        })
        .unwrap_or(c"".as_ptr())
}

/// Drops a panic payload without letting a panic in its destructor escape.
pub(crate) fn drop_payload(payload: Box<dyn Any + Send>) {
    if let Err(inner) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        // A payload whose destructor panicked: leaking it is the only option
        // that neither unwinds nor aborts.
        std::mem::forget(inner);
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string())
}

/// Runs an entry point's body: catches any panic (so none crosses the FFI
/// boundary), records the failure's message in the thread-local last error
/// (prefixed with `function`) or clears it on success, and returns the status.
///
/// `AssertUnwindSafe`: after a panic the caller only gets a status; the
/// handles a body touches stay consistent (forward passes borrow them
/// immutably, and a network's workspace in use is dropped, not returned to
/// its pool).
pub(crate) fn guard(function: &str, body: impl FnOnce() -> Res) -> c_int {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => {
            clear_last_error();
            REPCONV_OK
        }
        Ok(Err(failure)) => {
            set_last_error(function, &failure.message);
            failure.code
        }
        Err(payload) => {
            let message = format!(
                "internal panic (a bug in repconv, please report it): {}",
                panic_message(&*payload)
            );
            drop_payload(payload);
            set_last_error(function, &message);
            REPCONV_ERR_PANIC
        }
    }
}

/// The name of a status code, e.g. `REPCONV_ERR_SHAPE`.
pub(crate) fn status_name(status: c_int) -> &'static std::ffi::CStr {
    match status {
        REPCONV_OK => c"REPCONV_OK",
        REPCONV_ERR_NULL => c"REPCONV_ERR_NULL",
        REPCONV_ERR_INVALID_ARGUMENT => c"REPCONV_ERR_INVALID_ARGUMENT",
        REPCONV_ERR_SHAPE => c"REPCONV_ERR_SHAPE",
        REPCONV_ERR_LENGTH => c"REPCONV_ERR_LENGTH",
        REPCONV_ERR_TOO_LARGE => c"REPCONV_ERR_TOO_LARGE",
        REPCONV_ERR_ISA => c"REPCONV_ERR_ISA",
        REPCONV_ERR_IO => c"REPCONV_ERR_IO",
        REPCONV_ERR_FORMAT => c"REPCONV_ERR_FORMAT",
        REPCONV_ERR_THREADS => c"REPCONV_ERR_THREADS",
        REPCONV_ERR_PANIC => c"REPCONV_ERR_PANIC",
        REPCONV_ERR_PRECISION => c"REPCONV_ERR_PRECISION",
        _ => c"unknown status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> String {
        LAST_ERROR.with(|b| {
            let b = b.borrow();
            String::from_utf8_lossy(b.strip_suffix(&[0]).unwrap_or(&b)).into_owned()
        })
    }

    #[test]
    fn a_panic_becomes_a_status_and_a_message() {
        let status = guard("repconv_test", || panic!("boom {}", 42));
        assert_eq!(status, REPCONV_ERR_PANIC);
        let msg = message();
        assert!(msg.starts_with("repconv_test: internal panic"), "{msg}");
        assert!(msg.ends_with("boom 42"), "{msg}");
        assert_eq!(guard("repconv_test", || Ok(())), REPCONV_OK);
        assert_eq!(message(), "");
        let status = guard("repconv_test", || std::panic::panic_any(7u8));
        assert_eq!(status, REPCONV_ERR_PANIC);
        assert!(message().ends_with("(no message)"));
    }

    #[test]
    fn nul_bytes_are_dropped_from_messages() {
        let status = guard("f", || Err(Failure::invalid("a\0b")));
        assert_eq!(status, REPCONV_ERR_INVALID_ARGUMENT);
        assert_eq!(message(), "f: ab");
    }

    #[test]
    fn every_code_has_a_distinct_name() {
        let codes = [
            REPCONV_OK,
            REPCONV_ERR_NULL,
            REPCONV_ERR_INVALID_ARGUMENT,
            REPCONV_ERR_SHAPE,
            REPCONV_ERR_LENGTH,
            REPCONV_ERR_TOO_LARGE,
            REPCONV_ERR_ISA,
            REPCONV_ERR_IO,
            REPCONV_ERR_FORMAT,
            REPCONV_ERR_THREADS,
            REPCONV_ERR_PANIC,
            REPCONV_ERR_PRECISION,
        ];
        let names: std::collections::HashSet<_> = codes.iter().map(|&c| status_name(c)).collect();
        assert_eq!(names.len(), codes.len());
        assert!(!names.contains(c"unknown status"));
    }
}
