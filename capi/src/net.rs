//! `repconv_net`: a MobileOne network loaded from a timm checkpoint.

use std::ffi::{CStr, c_char, c_int};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use repconv_rs::mobileone::{MobileOne, MobileOneConfig, Variant, Workspace};
use repconv_rs::tensor::checked_numel;
use repconv_rs::weights::{self, Form, LoadOptions};
use repconv_rs::{Isa, TensorView, TensorViewMut};

use crate::current::Current;
use crate::status::{Failure, Res, guard, load_error, shape_error};
use crate::threads::Threads;
use crate::{isa_c_name, parse_isa, parse_precision, precision_c_name, ptr};

/// Every block in its train-time multi-branch form.
pub const REPCONV_FORM_MULTI_BRANCH: c_int = 0;
/// Every block reparameterized into one convolution (`reparam_conv`).
pub const REPCONV_FORM_FUSED: c_int = 1;
/// Some blocks of each form.
pub const REPCONV_FORM_MIXED: c_int = 2;

/// A MobileOne network (either form, either precision), a pool of
/// workspaces for its forward passes, and its threads. Opaque.
#[derive(Debug)]
pub struct Net {
    /// Replaced as a whole by `repconv_net_set_precision`; a forward pass
    /// keeps the one it started with.
    net: Current<MobileOne>,
    variant: &'static CStr,
    /// Workspaces not in use. A forward pass takes one (or makes one when
    /// all are in use) and puts it back, holding the lock only for that, so
    /// concurrent passes never wait for each other and, once as many have
    /// run at once as ever will, allocate nothing.
    workspaces: Mutex<Vec<Workspace>>,
    threads: Threads,
}

impl Net {
    fn new(net: MobileOne, threads: Threads) -> Net {
        let variant = match variant_of(net.config()) {
            Some(Variant::S0) => c"s0",
            Some(Variant::S1) => c"s1",
            Some(Variant::S2) => c"s2",
            Some(Variant::S3) => c"s3",
            Some(Variant::S4) => c"s4",
            None => c"custom",
        };
        Net { net: Current::new(net), variant, workspaces: Mutex::new(Vec::new()), threads }
    }

    /// The Rust network the handle runs now (`repconv_net_set_precision`
    /// replaces it; this one stays as it is).
    pub fn mobileone(&self) -> Arc<MobileOne> {
        self.net.get()
    }

    /// Runs `net` (the handle's, taken by the caller) with a workspace from
    /// the pool.
    fn forward(&self, net: &MobileOne, input: TensorView<'_>, logits: TensorViewMut<'_>) -> Res {
        // A poisoned lock only means a pass panicked while pushing or
        // popping; the Vec itself is intact.
        let taken = self.workspaces.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let mut ws = taken.unwrap_or_default();
        let result = self.threads.run(|| net.forward_into(input, logits, &mut ws));
        self.workspaces.lock().unwrap_or_else(PoisonError::into_inner).push(ws);
        result?.map_err(shape_error)
    }
}

/// The published variant whose architecture `config` has (the head and
/// branch count may differ).
fn variant_of(config: &MobileOneConfig) -> Option<Variant> {
    Variant::ALL.into_iter().find(|&v| {
        let c = MobileOneConfig::variant(v);
        c.width_multipliers == config.width_multipliers
            && c.depths == config.depths
            && c.se_blocks == config.se_blocks
    })
}

/// Loads a network from checkpoint bytes onto `isa`'s kernels (`None`: the
/// process default) and writes the new handle.
fn load_into(bytes: &[u8], isa: Option<Isa>, out: &mut *mut Net) -> Res {
    let options = LoadOptions::default().with_isa(isa);
    let net = weights::load_bytes(bytes, &options).map_err(load_error)?;
    *out = Box::into_raw(Box::new(Net::new(net, Threads::default())));
    Ok(())
}

/// A path from a C string: its bytes on Unix, UTF-8 elsewhere.
fn path_of(s: &CStr) -> Res<PathBuf> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        Ok(PathBuf::from(std::ffi::OsStr::from_bytes(s.to_bytes())))
    }
    #[cfg(not(unix))]
    {
        s.to_str()
            .map(PathBuf::from)
            .map_err(|e| Failure::invalid(format!("path is not valid UTF-8: {e}")))
    }
}

/// Loads a MobileOne network from a safetensors file in timm's parameter
/// names, in either form (train-time multi-branch, or reparameterized; even
/// mixed block by block), with F32, F16 or BF16 tensors. The variant (S0..S4)
/// is inferred from the tensor shapes, the number of classes from the head.
/// `isa` is NULL for the process default or a name as in
/// `repconv_conv_create`.
///
/// On success `*out` is the new handle (free it with `repconv_net_destroy`);
/// on failure `*out` is NULL and the status is REPCONV_ERR_IO (unreadable,
/// not a regular file, or too large to hold in memory; a FIFO or a device
/// is refused without waiting on it or reading it) or REPCONV_ERR_FORMAT (not a checkpoint this library can load; the
/// message names the tensor).
///
/// # Safety
/// `path` must be NULL or a NUL-terminated string; `isa` NULL or
/// NUL-terminated; `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn repconv_net_load(
    path: *const c_char,
    isa: *const c_char,
    out: *mut *mut Net,
) -> c_int {
    guard("repconv_net_load", || {
        // SAFETY: the caller guarantees `out` is NULL or writable.
        let out = unsafe { ptr::out_handle("out", out) }?;
        // SAFETY: the caller guarantees `path` is NULL or NUL-terminated.
        let path = path_of(unsafe { ptr::c_str("path", path) }?)?;
        // SAFETY: the caller guarantees `isa` is NULL or NUL-terminated.
        let isa = parse_isa(unsafe { ptr::opt_c_str(isa) })?;
        // Only a regular file is read, opened without blocking (a FIFO or a
        // device is an error), into a buffer reserved fallibly.
        let bytes = weights::read_file(&path).map_err(Failure::from)?;
        load_into(&bytes, isa, out)
    })
}

/// Like `repconv_net_load`, from the `len` bytes of a safetensors file in
/// memory (not used after the call returns).
///
/// # Safety
/// `bytes` must be NULL or point to `len` readable bytes; `isa` NULL or
/// NUL-terminated; `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn repconv_net_load_bytes(
    bytes: *const u8,
    len: usize,
    isa: *const c_char,
    out: *mut *mut Net,
) -> c_int {
    guard("repconv_net_load_bytes", || {
        // SAFETY: the caller guarantees `out` is NULL or writable.
        let out = unsafe { ptr::out_handle("out", out) }?;
        // SAFETY: the caller guarantees `bytes` is NULL or `len` bytes.
        let bytes = unsafe { ptr::array("bytes", bytes, len) }?;
        // SAFETY: the caller guarantees `isa` is NULL or NUL-terminated.
        let isa = parse_isa(unsafe { ptr::opt_c_str(isa) })?;
        load_into(bytes, isa, out)
    })
}

/// Creates a new handle holding the reparameterized (fused) form of `net`:
/// every multi-branch block folded into one convolution with bias (an
/// already fused network is copied). The new handle has the same ISA and
/// precision and thread setting (its own pool); `net` is unchanged and both
/// must be destroyed. On failure `*out` is NULL.
///
/// # Safety
/// `net` must be NULL or a live handle; `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn repconv_net_reparameterize(net: *const Net, out: *mut *mut Net) -> c_int {
    guard("repconv_net_reparameterize", || {
        // SAFETY: the caller guarantees `out` is NULL or writable.
        let out = unsafe { ptr::out_handle("out", out) }?;
        // SAFETY: the caller guarantees `net` is NULL or a live handle.
        let h = unsafe { ptr::get("net", net) }?;
        // The precision is carried by the library's reparameterize.
        let fused = h.net.get().reparameterize()?;
        *out = Box::into_raw(Box::new(Net::new(fused, h.threads.duplicate()?)));
        Ok(())
    })
}

/// Runs the network on a batch: reads the contiguous NCHW `input` of
/// `shape` (`{n, c, h, w}`, `n*c*h*w` floats, c the network's input
/// channels) and writes `n * num_classes` logits
/// (row-major `[n][num_classes]`) into `logits`, whose length `logits_len`
/// must be exactly that. The buffers must not overlap.
///
/// Thread safety: any number of threads may run forward passes on one
/// handle at the same time. Activations live in a workspace the handle
/// keeps (one per concurrent pass, held in a Mutex-protected pool only
/// while taken or returned), so passes never wait for each other and, after
/// the first pass at a given input shape, allocate nothing. Results are
/// bitwise identical for any thread count (for one ISA).
///
/// # Safety
/// `net` must be NULL or a live handle; `shape` NULL or 4 readable
/// `size_t`; `input` NULL or `n*c*h*w` readable floats; `logits` NULL or
/// `logits_len` writable floats that nothing else accesses during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn repconv_net_forward(
    net: *const Net,
    input: *const f32,
    shape: *const usize,
    logits: *mut f32,
    logits_len: usize,
) -> c_int {
    guard("repconv_net_forward", || {
        // SAFETY: the caller guarantees `net` is NULL or a live handle.
        let h = unsafe { ptr::get("net", net) }?;
        ptr::check("input", input)?;
        ptr::check("logits", logits)?;
        // SAFETY: the caller guarantees `shape` is NULL or 4 size_t.
        let shape = unsafe { ptr::shape("shape", shape) }?;
        let input_len = checked_numel("input", shape).map_err(shape_error)?;
        // This pass's network, whatever `repconv_net_set_precision` does
        // meanwhile.
        let net = h.net.get();
        let out_shape = net.output_shape(shape).map_err(shape_error)?;
        let expected = checked_numel("logits", out_shape)?;
        if logits_len != expected {
            return Err(Failure::length(format!(
                "logits_len: expected {expected} (n = {} x {} classes), got {logits_len}",
                out_shape[0], out_shape[1]
            )));
        }
        ptr::check_disjoint(("input", input, input_len), ("logits", logits, logits_len))?;
        // SAFETY: the caller guarantees `input` holds n*c*h*w floats.
        let input = unsafe { ptr::array("input", input, input_len) }?;
        // SAFETY: the caller guarantees `logits` holds `logits_len` writable
        // floats; they do not overlap `input` (checked above).
        let logits = unsafe { ptr::array_mut("logits", logits, logits_len) }?;
        h.forward(&net, TensorView::new(shape, input)?, TensorViewMut::new(out_shape, logits)?)
    })
}

/// Sets `*name` to the network's variant: "s0" .. "s4" (a static string).
///
/// # Safety
/// `net` must be NULL or a live handle; `name` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn repconv_net_variant(net: *const Net, name: *mut *const c_char) -> c_int {
    guard("repconv_net_variant", || {
        // SAFETY: the caller guarantees `net` is NULL or a live handle.
        let h = unsafe { ptr::get("net", net) }?;
        // SAFETY: the caller guarantees `name` is NULL or writable.
        unsafe { ptr::write("name", name, h.variant.as_ptr()) }
    })
}

/// Sets `*num_classes` to the number of classes of the network's head (the
/// logits per image).
///
/// # Safety
/// `net` must be NULL or a live handle; `num_classes` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn repconv_net_num_classes(
    net: *const Net,
    num_classes: *mut usize,
) -> c_int {
    guard("repconv_net_num_classes", || {
        // SAFETY: the caller guarantees `net` is NULL or a live handle.
        let h = unsafe { ptr::get("net", net) }?;
        // SAFETY: the caller guarantees `num_classes` is NULL or writable.
        unsafe { ptr::write("num_classes", num_classes, h.net.get().config().num_classes) }
    })
}

/// Sets `*in_channels` to the input channels the network expects (3 for
/// images).
///
/// # Safety
/// `net` must be NULL or a live handle; `in_channels` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn repconv_net_in_channels(
    net: *const Net,
    in_channels: *mut usize,
) -> c_int {
    guard("repconv_net_in_channels", || {
        // SAFETY: the caller guarantees `net` is NULL or a live handle.
        let h = unsafe { ptr::get("net", net) }?;
        // SAFETY: the caller guarantees `in_channels` is NULL or writable.
        unsafe { ptr::write("in_channels", in_channels, h.net.get().config().in_channels) }
    })
}

/// Sets `*form` to the network's form: REPCONV_FORM_MULTI_BRANCH,
/// REPCONV_FORM_FUSED or REPCONV_FORM_MIXED.
///
/// # Safety
/// `net` must be NULL or a live handle; `form` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn repconv_net_form(net: *const Net, form: *mut c_int) -> c_int {
    guard("repconv_net_form", || {
        // SAFETY: the caller guarantees `net` is NULL or a live handle.
        let h = unsafe { ptr::get("net", net) }?;
        let value = match weights::form(&h.net.get()) {
            Form::MultiBranch => REPCONV_FORM_MULTI_BRANCH,
            Form::Fused => REPCONV_FORM_FUSED,
            Form::Mixed => REPCONV_FORM_MIXED,
        };
        // SAFETY: the caller guarantees `form` is NULL or writable.
        unsafe { ptr::write("form", form, value) }
    })
}

/// Sets `*name` to the ISA the network's kernels use: "avx512", "avx2" or
/// "portable" (a static string).
///
/// # Safety
/// `net` must be NULL or a live handle; `name` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn repconv_net_isa(net: *const Net, name: *mut *const c_char) -> c_int {
    guard("repconv_net_isa", || {
        // SAFETY: the caller guarantees `net` is NULL or a live handle.
        let h = unsafe { ptr::get("net", net) }?;
        // SAFETY: the caller guarantees `name` is NULL or writable.
        unsafe { ptr::write("name", name, isa_c_name(h.net.get().isa()).as_ptr()) }
    })
}

/// Sets the precision of the network's forward passes, as
/// `repconv_conv_set_precision`: "f32" (the default) or "bf16", in which
/// every convolution the library has a bf16 kernel for (the 1x1 layers; the stem stays f32;
/// about 90% of the FLOPs) rounds its weights and inputs to bfloat16 and
/// sums in f32, while the other layers, squeeze-excitation, pooling and the
/// classifier stay f32; the logits are f32 either way. "bf16" needs the
/// "avx512" ISA on a CPU with AVX512_BF16 (or REPCONV_BF16=emulated), else
/// it fails with REPCONV_ERR_PRECISION and the reason; a NULL `name` is
/// REPCONV_ERR_NULL, any other name REPCONV_ERR_INVALID_ARGUMENT. Changing
/// the precision re-packs the weights into a new copy of the network;
/// `repconv_net_reparameterize` keeps it.
///
/// May be called while other threads run forward passes, queries or
/// `repconv_net_set_threads` on the handle: a pass already running finishes
/// in the precision it started with; passes that start afterwards use the
/// new one. On failure the precision is unchanged.
///
/// # Safety
/// `net` must be NULL or a live handle; `name` NULL or a NUL-terminated
/// string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn repconv_net_set_precision(net: *mut Net, name: *const c_char) -> c_int {
    guard("repconv_net_set_precision", || {
        // SAFETY: the caller guarantees `net` is NULL or a live handle; the
        // network is swapped behind a lock, so a shared reference suffices.
        let h = unsafe { ptr::get("net", net.cast_const()) }?;
        // SAFETY: the caller guarantees `name` is NULL or NUL-terminated.
        let precision = parse_precision(unsafe { ptr::c_str("name", name) }?)?;
        let now = h.net.get();
        if now.precision() != precision {
            h.net.replace(MobileOne::clone(&now).with_precision(precision)?);
        }
        Ok(())
    })
}

/// Sets `*name` to the network's precision: "f32" or "bf16" (a static
/// string).
///
/// # Safety
/// `net` must be NULL or a live handle; `name` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn repconv_net_precision(net: *const Net, name: *mut *const c_char) -> c_int {
    guard("repconv_net_precision", || {
        // SAFETY: the caller guarantees `net` is NULL or a live handle.
        let h = unsafe { ptr::get("net", net) }?;
        let precision = precision_c_name(h.net.get().precision());
        // SAFETY: the caller guarantees `name` is NULL or writable.
        unsafe { ptr::write("name", name, precision.as_ptr()) }
    })
}

/// Sets the worker threads of the network's forward passes, as
/// `repconv_conv_set_threads`: 0 for the library's default pool, 1 to 1024
/// for a private pool of that many threads. May be called while other
/// threads run forward passes or queries on the handle (passes already
/// running finish on the pool they started on).
///
/// # Safety
/// `net` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn repconv_net_set_threads(net: *mut Net, threads: usize) -> c_int {
    guard("repconv_net_set_threads", || {
        // SAFETY: the caller guarantees `net` is NULL or a live handle; the
        // setting is behind a lock, so a shared reference suffices.
        unsafe { ptr::get("net", net.cast_const()) }?.threads.set(threads)
    })
}

/// Sets `*threads` to the number of threads the network's forward passes
/// run on: its private pool's size, or (set to 0) the default pool's (as
/// `repconv_conv_threads`).
///
/// # Safety
/// `net` must be NULL or a live handle; `threads` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn repconv_net_threads(net: *const Net, threads: *mut usize) -> c_int {
    guard("repconv_net_threads", || {
        // SAFETY: the caller guarantees `net` is NULL or a live handle.
        let h = unsafe { ptr::get("net", net) }?;
        let count = h.threads.count()?;
        // SAFETY: the caller guarantees `threads` is NULL or writable.
        unsafe { ptr::write("threads", threads, count) }
    })
}

/// Frees the network, its workspaces and its private thread pool, if any.
/// NULL is a no-op.
///
/// # Safety
/// `net` must be NULL or a handle from `repconv_net_load`,
/// `repconv_net_load_bytes` or `repconv_net_reparameterize` that has not
/// been destroyed, on which no other call is running or will be made.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn repconv_net_destroy(net: *mut Net) {
    if net.is_null() {
        return;
    }
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: non-null; the caller guarantees it came from one of the
        // constructors (Box::into_raw), is destroyed only once and is not
        // used afterwards.
        drop(unsafe { Box::from_raw(net) });
    }));
    if let Err(payload) = dropped {
        crate::status::drop_payload(payload);
    }
}
