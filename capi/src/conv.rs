//! `repconv_conv`: one convolution with packed weights, run on the caller's
//! buffers.

use std::ffi::{CString, c_char, c_int};
use std::sync::{Arc, Mutex, PoisonError};

use repconv_rs::tensor::checked_numel;
use repconv_rs::{Activation, Conv2d, Conv2dParams, TensorView, TensorViewMut};

use crate::current::Current;
use crate::status::{Failure, guard, shape_error};
use crate::threads::Threads;
use crate::{isa_c_name, parse_isa, parse_precision, precision_c_name, ptr};

/// No activation: `out = conv(x) + bias`.
pub const REPCONV_ACTIVATION_NONE: c_int = 0;
/// ReLU fused into the store: `out = max(conv(x) + bias, 0)`, NaN propagated
/// as in PyTorch.
pub const REPCONV_ACTIVATION_RELU: c_int = 1;

/// Geometry of a 2-D convolution over NCHW input with OIHW weights
/// (`[out_channels][in_channels / groups][kernel[0]][kernel[1]]`), as in
/// PyTorch. Every two-element field is `{h, w}`; padding is zeros, the same
/// on both sides. `repconv_conv_params_init` fills in the defaults (stride 1,
/// no padding, dilation 1, one group).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConvParams {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Stride along H and W.
    pub stride: [usize; 2],
    /// Zero padding along H and W.
    pub padding: [usize; 2],
    /// Dilation along H and W.
    pub dilation: [usize; 2],
    /// Channel groups (in_channels for a depthwise convolution); divides
    /// both channel counts.
    pub groups: usize,
}

impl From<ConvParams> for Conv2dParams {
    fn from(p: ConvParams) -> Conv2dParams {
        Conv2dParams::new(p.in_channels, p.out_channels, p.kernel)
            .with_stride(p.stride)
            .with_padding(p.padding)
            .with_dilation(p.dilation)
            .with_groups(p.groups)
    }
}

/// A convolution: geometry, packed weights, optional bias, fused activation,
/// the kernel chosen for its ISA and precision, and its threads. Opaque.
#[derive(Debug)]
pub struct Conv {
    /// Replaced as a whole by `repconv_conv_set_precision`; a forward pass
    /// keeps the one it started with.
    conv: Current<Conv2d>,
    /// Every kernel name `repconv_conv_kernel_name` has returned: each stays
    /// valid until the handle is destroyed, even after the precision (and so
    /// the kernel) changes. At most one per precision.
    kernel_names: Mutex<Vec<CString>>,
    threads: Threads,
}

impl Conv {
    /// The Rust convolution the handle runs now (`repconv_conv_set_precision`
    /// replaces it; this one stays as it is).
    pub fn conv2d(&self) -> Arc<Conv2d> {
        self.conv.get()
    }

    /// The handle's C string for a kernel name.
    fn kernel_name(&self, name: &str) -> *const c_char {
        let mut names = self.kernel_names.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(known) = names.iter().find(|n| n.to_bytes() == name.as_bytes()) {
            return known.as_ptr();
        }
        // A CString's bytes live on the heap: they stay where they are when
        // the Vec grows.
        let new = CString::new(name).unwrap_or_default();
        let ptr = new.as_ptr();
        names.push(new);
        ptr
    }
}

/// Fills `params` for a convolution of `in_channels` to `out_channels` with a
/// `kernel_h` x `kernel_w` kernel, stride 1, no padding, dilation 1 and one
/// group; change the fields afterwards as needed. Validation happens in
/// `repconv_conv_create`.
///
/// # Safety
/// `params` must be NULL or point to writable memory for one
/// `repconv_conv_params`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn repconv_conv_params_init(
    params: *mut ConvParams,
    in_channels: usize,
    out_channels: usize,
    kernel_h: usize,
    kernel_w: usize,
) -> c_int {
    guard("repconv_conv_params_init", || {
        let value = ConvParams {
            in_channels,
            out_channels,
            kernel: [kernel_h, kernel_w],
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
        };
        // SAFETY: the caller guarantees `params` is NULL or writable.
        unsafe { ptr::write("params", params, value) }
    })
}

/// Creates a convolution: validates `params`, copies the OIHW `weights`
/// (`weights_len` must be `out_channels * in_channels / groups * kernel[0] *
/// kernel[1]`) and the optional `bias` (NULL with `bias_len` 0, or
/// `out_channels` values), picks the kernel for the ISA and packs the
/// weights. `activation` is a `REPCONV_ACTIVATION_*` value. `isa` is NULL for
/// the process default (REPCONV_ISA if set, else the best this CPU has) or
/// one of "best", "avx512", "avx2", "portable". The buffers are not used
/// after the call returns.
///
/// On success `*out` is the new handle (free it with `repconv_conv_destroy`);
/// on failure `*out` is NULL.
///
/// # Safety
/// `params` must be NULL or point to a `repconv_conv_params`; `weights` to
/// `weights_len` floats; `bias`, unless NULL, to `bias_len` floats; `isa`
/// must be NULL or a NUL-terminated string; `out` must be NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn repconv_conv_create(
    params: *const ConvParams,
    weights: *const f32,
    weights_len: usize,
    bias: *const f32,
    bias_len: usize,
    activation: c_int,
    isa: *const c_char,
    out: *mut *mut Conv,
) -> c_int {
    guard("repconv_conv_create", || {
        // SAFETY: the caller guarantees `out` is NULL or writable.
        let out = unsafe { ptr::out_handle("out", out) }?;
        // SAFETY: the caller guarantees `params` is NULL or points to one.
        let params: Conv2dParams = (*unsafe { ptr::get("params", params) }?).into();
        ptr::check("weights", weights)?;
        let activation = match activation {
            REPCONV_ACTIVATION_NONE => Activation::None,
            REPCONV_ACTIVATION_RELU => Activation::Relu,
            other => {
                return Err(Failure::invalid(format!(
                    "activation: expected REPCONV_ACTIVATION_NONE (0) or \
                     REPCONV_ACTIVATION_RELU (1), got {other}"
                )));
            }
        };
        // SAFETY: the caller guarantees `isa` is NULL or NUL-terminated.
        let isa = parse_isa(unsafe { ptr::opt_c_str(isa) })?;
        params.validate()?;
        let expected = params.weight_len()?;
        if weights_len != expected {
            return Err(Failure::length(format!(
                "weights_len: expected {expected} (out_channels * in_channels / groups * \
                 kernel_h * kernel_w), got {weights_len}"
            )));
        }
        // SAFETY: the caller guarantees `weights` points to `weights_len` floats.
        let weights = unsafe { ptr::array("weights", weights, weights_len) }?;
        let bias = if bias.is_null() {
            if bias_len != 0 {
                return Err(Failure::length(format!(
                    "bias is NULL, so bias_len must be 0, got {bias_len}"
                )));
            }
            None
        } else {
            if bias_len != params.out_channels {
                return Err(Failure::length(format!(
                    "bias_len: expected {} (out_channels), got {bias_len}",
                    params.out_channels
                )));
            }
            // SAFETY: the caller guarantees a non-NULL `bias` points to
            // `bias_len` floats.
            Some(unsafe { ptr::array("bias", bias, bias_len) }?)
        };
        let conv = match isa {
            Some(isa) => Conv2d::new_on(params, weights, bias, activation, isa)?,
            None => Conv2d::new(params, weights, bias, activation)?,
        };
        *out = Box::into_raw(Box::new(Conv {
            conv: Current::new(conv),
            kernel_names: Mutex::new(Vec::new()),
            threads: Threads::default(),
        }));
        Ok(())
    })
}

/// Writes the output shape `{n, out_channels, oh, ow}` of the convolution
/// for an NCHW `input_shape` into `output_shape`, or fails with
/// REPCONV_ERR_SHAPE if the input does not fit (channels, zero dimension,
/// smaller than the dilated kernel).
///
/// # Safety
/// `conv` must be NULL or a live handle; `input_shape` NULL or 4 readable
/// `size_t`; `output_shape` NULL or 4 writable `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn repconv_conv_output_shape(
    conv: *const Conv,
    input_shape: *const usize,
    output_shape: *mut usize,
) -> c_int {
    guard("repconv_conv_output_shape", || {
        // SAFETY: the caller guarantees `conv` is NULL or a live handle.
        let h = unsafe { ptr::get("conv", conv) }?;
        // SAFETY: the caller guarantees `input_shape` is NULL or 4 size_t.
        let shape = unsafe { ptr::shape("input_shape", input_shape) }?;
        ptr::check("output_shape", output_shape)?;
        let out_shape = h.conv.get().output_shape(shape).map_err(shape_error)?;
        // SAFETY: the caller guarantees `output_shape` is NULL or 4 writable size_t.
        unsafe { ptr::array_mut("output_shape", output_shape, 4) }?.copy_from_slice(&out_shape);
        Ok(())
    })
}

/// Runs the convolution on the caller's buffers, without copies: reads the
/// contiguous NCHW `input` of `shape` (`{n, c, h, w}`, `n*c*h*w` floats) and
/// writes the whole NCHW output (see `repconv_conv_output_shape`) into
/// `output`, whose length `output_len` must be exactly the output's element
/// count. The two buffers must not overlap. Allocates nothing once the
/// threads involved have run a layer at least this large.
///
/// Thread safety: any number of threads may run forward passes on one
/// handle at the same time. Results are bitwise identical for any thread
/// count (for one ISA).
///
/// # Safety
/// `conv` must be NULL or a live handle; `shape` NULL or 4 readable
/// `size_t`; `input` NULL or `n*c*h*w` readable floats; `output` NULL or
/// `output_len` writable floats that nothing else accesses during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn repconv_conv_forward(
    conv: *const Conv,
    input: *const f32,
    shape: *const usize,
    output: *mut f32,
    output_len: usize,
) -> c_int {
    guard("repconv_conv_forward", || {
        // SAFETY: the caller guarantees `conv` is NULL or a live handle.
        let h = unsafe { ptr::get("conv", conv) }?;
        ptr::check("input", input)?;
        ptr::check("output", output)?;
        // SAFETY: the caller guarantees `shape` is NULL or 4 size_t.
        let shape = unsafe { ptr::shape("shape", shape) }?;
        let input_len = checked_numel("input", shape).map_err(shape_error)?;
        // This pass's convolution, whatever `repconv_conv_set_precision` does
        // meanwhile.
        let conv = h.conv.get();
        let out_shape = conv.output_shape(shape).map_err(shape_error)?;
        let expected = checked_numel("output", out_shape)?;
        if output_len != expected {
            return Err(Failure::length(format!(
                "output_len: expected {expected} (output shape {out_shape:?}), got {output_len}"
            )));
        }
        ptr::check_disjoint(("input", input, input_len), ("output", output, output_len))?;
        // SAFETY: the caller guarantees `input` holds n*c*h*w floats.
        let input = unsafe { ptr::array("input", input, input_len) }?;
        // SAFETY: the caller guarantees `output` holds `output_len` writable
        // floats; they do not overlap `input` (checked above).
        let output = unsafe { ptr::array_mut("output", output, output_len) }?;
        let (input, output) =
            (TensorView::new(shape, input)?, TensorViewMut::new(out_shape, output)?);
        h.threads.run(|| conv.forward_into(input, output))?.map_err(shape_error)
    })
}

/// Sets `*name` to the kernel the convolution runs, e.g.
/// "conv1x1_8x48__avx512", or "conv1x1_bf16_8x48__avx512bf16" in bf16 (a
/// string owned by the handle, valid until it is destroyed).
///
/// # Safety
/// `conv` must be NULL or a live handle; `name` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn repconv_conv_kernel_name(
    conv: *const Conv,
    name: *mut *const c_char,
) -> c_int {
    guard("repconv_conv_kernel_name", || {
        // SAFETY: the caller guarantees `conv` is NULL or a live handle.
        let h = unsafe { ptr::get("conv", conv) }?;
        let kernel = h.kernel_name(h.conv.get().kernel_name());
        // SAFETY: the caller guarantees `name` is NULL or writable.
        unsafe { ptr::write("name", name, kernel) }
    })
}

/// Sets `*name` to the ISA the convolution's kernels use: "avx512", "avx2"
/// or "portable" (a static string).
///
/// # Safety
/// `conv` must be NULL or a live handle; `name` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn repconv_conv_isa(conv: *const Conv, name: *mut *const c_char) -> c_int {
    guard("repconv_conv_isa", || {
        // SAFETY: the caller guarantees `conv` is NULL or a live handle.
        let h = unsafe { ptr::get("conv", conv) }?;
        // SAFETY: the caller guarantees `name` is NULL or writable.
        unsafe { ptr::write("name", name, isa_c_name(h.conv.get().isa()).as_ptr()) }
    })
}

/// Sets the precision of the convolution's forward passes: "f32" (the
/// default) or "bf16", in which a geometry the library has a bf16 kernel
/// for (the 1x1 convolutions) rounds its weights (once, here) and its inputs
/// to bfloat16 for the products and keeps sums, bias, activation and outputs
/// in f32; other geometries keep their f32 kernel (`repconv_conv_kernel_name`
/// says which kernel runs). "bf16" needs the "avx512" ISA on a CPU with
/// AVX512_BF16, else it fails with REPCONV_ERR_PRECISION and the reason;
/// with the environment variable REPCONV_BF16=emulated (read once per
/// process) the bf16 kernels' software model runs instead, on any CPU and
/// ISA (slow: for tests). A NULL `name` is REPCONV_ERR_NULL, any other name
/// REPCONV_ERR_INVALID_ARGUMENT. Changing the precision re-packs the
/// weights into a new copy of the convolution (setting the current one does
/// nothing). In either precision, results are bitwise identical for any
/// thread count (for one ISA).
///
/// May be called while other threads run forward passes, queries or
/// `repconv_conv_set_threads` on the handle: a pass already running
/// finishes in the precision it started with; passes that start afterwards
/// use the new one. On failure the precision is unchanged.
///
/// # Safety
/// `conv` must be NULL or a live handle; `name` NULL or a NUL-terminated
/// string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn repconv_conv_set_precision(conv: *mut Conv, name: *const c_char) -> c_int {
    guard("repconv_conv_set_precision", || {
        // SAFETY: the caller guarantees `conv` is NULL or a live handle; the
        // convolution is swapped behind a lock, so a shared reference
        // suffices.
        let h = unsafe { ptr::get("conv", conv.cast_const()) }?;
        // SAFETY: the caller guarantees `name` is NULL or NUL-terminated.
        let precision = parse_precision(unsafe { ptr::c_str("name", name) }?)?;
        let now = h.conv.get();
        if now.precision() != precision {
            h.conv.replace(Conv2d::clone(&now).with_precision(precision)?);
        }
        Ok(())
    })
}

/// Sets `*name` to the convolution's precision: "f32" or "bf16" (a static
/// string).
///
/// # Safety
/// `conv` must be NULL or a live handle; `name` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn repconv_conv_precision(
    conv: *const Conv,
    name: *mut *const c_char,
) -> c_int {
    guard("repconv_conv_precision", || {
        // SAFETY: the caller guarantees `conv` is NULL or a live handle.
        let h = unsafe { ptr::get("conv", conv) }?;
        let precision = precision_c_name(h.conv.get().precision());
        // SAFETY: the caller guarantees `name` is NULL or writable.
        unsafe { ptr::write("name", name, precision.as_ptr()) }
    })
}

/// Sets the worker threads of the handle's forward passes: 0 (the default)
/// runs them on the library's default pool, shared by every handle left at
/// 0 and made on first use: RAYON_NUM_THREADS threads if that variable is a
/// positive integer (above 1024, every forward pass and thread query on the
/// default pool fails with REPCONV_ERR_THREADS), else one per CPU, at most
/// 1024. `n` from 1 to 1024 gives the handle a private pool of `n` threads
/// (replacing any previous one). Either way the caller waits while the pool
/// works. Results do not depend on the setting.
///
/// May be called while other threads run forward passes or queries on the
/// handle: a pass already running finishes on the pool it started on (a
/// replaced private pool's threads are joined when the last such pass
/// returns); passes that start afterwards use the new setting. On failure
/// the setting is unchanged.
///
/// # Safety
/// `conv` must be NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn repconv_conv_set_threads(conv: *mut Conv, threads: usize) -> c_int {
    guard("repconv_conv_set_threads", || {
        // SAFETY: the caller guarantees `conv` is NULL or a live handle; the
        // setting is behind a lock, so a shared reference suffices.
        unsafe { ptr::get("conv", conv.cast_const()) }?.threads.set(threads)
    })
}

/// Sets `*threads` to the number of threads the handle's forward passes run
/// on: its private pool's size, or (set to 0) the default pool's (making
/// it, if no call has yet; REPCONV_ERR_THREADS if it cannot be made, see
/// `repconv_conv_set_threads`).
///
/// # Safety
/// `conv` must be NULL or a live handle; `threads` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn repconv_conv_threads(conv: *const Conv, threads: *mut usize) -> c_int {
    guard("repconv_conv_threads", || {
        // SAFETY: the caller guarantees `conv` is NULL or a live handle.
        let h = unsafe { ptr::get("conv", conv) }?;
        let count = h.threads.count()?;
        // SAFETY: the caller guarantees `threads` is NULL or writable.
        unsafe { ptr::write("threads", threads, count) }
    })
}

/// Frees the convolution (and its private thread pool, if any). NULL is a
/// no-op.
///
/// # Safety
/// `conv` must be NULL or a handle from `repconv_conv_create` that has not
/// been destroyed, on which no other call is running or will be made.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn repconv_conv_destroy(conv: *mut Conv) {
    if conv.is_null() {
        return;
    }
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: non-null; the caller guarantees it came from
        // `repconv_conv_create` (Box::into_raw), is destroyed only once and
        // is not used afterwards.
        drop(unsafe { Box::from_raw(conv) });
    }));
    if let Err(payload) = dropped {
        crate::status::drop_payload(payload);
    }
}
