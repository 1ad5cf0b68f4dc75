//! Convolution: validated geometry ([`Conv2dParams`]), a plan that picks the
//! kernel ([`plan::Plan`]), packed weights, and rayon execution ([`Conv2d`]).
//!
//! # Memory
//! Every geometry [`Conv2d::new`] accepts runs, in scratch memory that does
//! not grow with the layer on the 1x1 and general paths: the general path
//! works in bands of output positions whose im2col matrix holds at most
//! [`Conv2d::with_scratch_limit`] bytes (8 MiB by default) per thread, and
//! reductions too long for that (or for the GEMM) run a direct loop over the
//! in-bounds kernel taps with no scratch. The direct 3x3 and depthwise 3x3
//! kernels copy one image's input (respectively one plane) into a padded
//! layout, so their scratch is proportional to the input. Per-thread buffers
//! are kept between calls up to 16 MiB each and given back above that.

mod depthwise;
mod direct3x3;
mod exec;
mod frame;
mod gemm;
mod general;
pub mod params;
pub mod plan;
mod pointwise;

pub use params::Conv2dParams;
pub use plan::{Family, KernelChoice, Plan};

use crate::error::{Error, Result};
use crate::tensor::{Tensor, TensorView, TensorViewMut};
use repconv_kernels::{Isa, Precision};

/// The activation fused into the convolution's store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Activation {
    /// None: `out = conv(x) + bias`.
    #[default]
    None,
    /// ReLU: `out = max(conv(x) + bias, 0)`, with NaN propagated as in PyTorch.
    Relu,
}

/// Whether a convolution may split its work across rayon threads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Parallelism {
    /// Run on the calling thread only.
    Serial,
    /// Split into independent output tiles on the current rayon pool (the
    /// global one, or the pool of an enclosing `ThreadPool::install`). Layers
    /// too small to pay for the hand-off run serially. Results are bitwise
    /// identical to `Serial`.
    #[default]
    Rayon,
}

/// A convolution ready to run: geometry, prepacked weights, optional bias and
/// fused activation. Build once with [`Conv2d::new`], then run many times
/// through `&self`; it is `Send + Sync`, so one instance can serve many threads.
#[derive(Clone, Debug)]
pub struct Conv2d {
    params: Conv2dParams,
    activation: Activation,
    parallelism: Parallelism,
    parallel_min_flops: u64,
    /// Largest im2col band of the general path, in floats.
    scratch_limit: usize,
    plan: Plan,
    weights: Vec<f32>,
    bias: Option<Vec<f32>>,
    packed: Vec<f32>,
    /// The precision asked for ([`Conv2d::with_precision`]); the plan's
    /// kernel computes in it where one exists for the geometry.
    precision: Precision,
    /// Packed weights of a bf16 kernel (empty for f32 kernels).
    packed_bf16: Vec<u32>,
    /// Where the direct tap loop must give NaN for skipped padding taps.
    nonfinite_taps: general::NonFiniteTaps,
}

impl Conv2d {
    /// Validates `params`, checks `weights` (OIHW, `params.weight_len()` long)
    /// and `bias` (`out_channels` long), picks the kernel and packs the weights.
    ///
    /// The kernels are those of the process's default instruction set,
    /// [`Isa::from_env`]: `REPCONV_ISA` if set, else the best this CPU has.
    /// An unknown or unsupported `REPCONV_ISA` is an [`Error::Isa`];
    /// [`Conv2d::new_on`] takes the ISA instead, and never reads it.
    pub fn new(
        params: Conv2dParams,
        weights: &[f32],
        bias: Option<&[f32]>,
        activation: Activation,
    ) -> Result<Conv2d> {
        Conv2d::with_choice(params, weights, bias, activation, KernelChoice::Auto)
    }

    /// Like [`Conv2d::new`], on `isa`'s kernels: the process default
    /// (`REPCONV_ISA`) is not consulted, so an unknown name there does not
    /// make this fail.
    pub fn new_on(
        params: Conv2dParams,
        weights: &[f32],
        bias: Option<&[f32]>,
        activation: Activation,
        isa: Isa,
    ) -> Result<Conv2d> {
        Conv2d::with_choice_on(params, weights, bias, activation, KernelChoice::Auto, isa)
    }

    /// Like [`Conv2d::new`], with an explicit kernel choice (e.g. the general
    /// path as a baseline), on the process default ISA.
    pub fn with_choice(
        params: Conv2dParams,
        weights: &[f32],
        bias: Option<&[f32]>,
        activation: Activation,
        choice: KernelChoice,
    ) -> Result<Conv2d> {
        Conv2d::with_choice_on(params, weights, bias, activation, choice, Isa::from_env()?)
    }

    /// Like [`Conv2d::with_choice`], on `isa`'s kernels (the process default
    /// is not consulted; see [`Conv2d::new_on`]).
    pub fn with_choice_on(
        params: Conv2dParams,
        weights: &[f32],
        bias: Option<&[f32]>,
        activation: Activation,
        choice: KernelChoice,
        isa: Isa,
    ) -> Result<Conv2d> {
        let plan = Plan::new(&params, choice, isa)?;
        let expected = params.weight_len()?;
        if weights.len() != expected {
            return Err(Error::LengthMismatch { what: "weights", expected, got: weights.len() });
        }
        if let Some(b) = bias
            && b.len() != params.out_channels
        {
            return Err(Error::LengthMismatch {
                what: "bias",
                expected: params.out_channels,
                got: b.len(),
            });
        }
        let exec::Packed { f32: packed, bf16: packed_bf16 } =
            exec::pack(&params, &plan, weights, bias)?;
        Ok(Conv2d {
            params,
            activation,
            parallelism: Parallelism::Rayon,
            parallel_min_flops: frame::PAR_MIN_FLOPS,
            scratch_limit: general::DEFAULT_SCRATCH_LIMIT_BYTES / size_of::<f32>(),
            plan,
            weights: weights.to_vec(),
            bias: bias.map(<[f32]>::to_vec),
            packed,
            precision: Precision::F32,
            packed_bf16,
            nonfinite_taps: general::NonFiniteTaps::of_weights(&params, weights),
        })
    }

    /// The same convolution on `isa`'s kernels (re-planned and re-packed: the
    /// register tiles, and so the packed layout, differ between ISAs). Get an
    /// `isa` from [`Isa::available`], [`Isa::from_name`] or [`Isa::best`].
    pub fn with_isa(self, isa: Isa) -> Result<Conv2d> {
        if isa == self.plan.isa() {
            return Ok(self);
        }
        let precision = self.precision;
        self.replanned(isa, precision)
    }

    /// The same convolution computed in `precision`. `Precision::Bf16` rounds
    /// the weights (once, here) and the inputs to bfloat16 for the products
    /// and keeps sums, bias, activation and outputs in f32; it runs on the 1x1
    /// layers, where a bf16 kernel exists (`kernel_name` says which kernel
    /// runs), and needs the `avx512` ISA on a CPU with AVX512_BF16, else
    /// [`Error::Precision`]. `Precision::F32` is the default.
    pub fn with_precision(self, precision: Precision) -> Result<Conv2d> {
        if precision == self.precision {
            return Ok(self);
        }
        let isa = self.plan.isa();
        self.replanned(isa, precision)
    }

    /// The precision asked for with [`Conv2d::with_precision`].
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Re-plans and re-packs for `isa` and `precision` (the register tiles,
    /// and so the packed layouts, differ between them).
    fn replanned(self, isa: Isa, precision: Precision) -> Result<Conv2d> {
        let choice = match self.plan.family() {
            Family::General => KernelChoice::General,
            _ => KernelChoice::Auto,
        };
        let plan = Plan::with_precision(&self.params, choice, isa, precision)?;
        let bias = self.bias.as_deref();
        let exec::Packed { f32: packed, bf16: packed_bf16 } =
            exec::pack(&self.params, &plan, &self.weights, bias)?;
        Ok(Conv2d { plan, packed, packed_bf16, precision, ..self })
    }

    /// The instruction set the kernels run with.
    pub fn isa(&self) -> Isa {
        self.plan.isa()
    }

    /// Asks for the packed weights to be brought into the L2 cache, so that
    /// a call that follows soon finds them there (a hint; see
    /// [`repconv_kernels::prefetch::prefetch_l2`]).
    pub(crate) fn prefetch_weights(&self) {
        repconv_kernels::prefetch::prefetch_l2(&self.packed);
        repconv_kernels::prefetch::prefetch_l2(bytemuck::cast_slice(&self.packed_bf16));
    }

    /// Sets whether this convolution may use rayon threads.
    pub fn with_parallelism(mut self, parallelism: Parallelism) -> Self {
        self.parallelism = parallelism;
        self
    }

    /// Sets the work (in FLOPs per forward pass) below which `Parallelism::Rayon`
    /// still runs on the calling thread; default 2 MFLOP. 0 always splits
    /// (useful to test that any split gives bitwise identical results).
    pub fn with_parallel_threshold(mut self, min_flops: u64) -> Self {
        self.parallel_min_flops = min_flops;
        self
    }

    /// Sets the most memory, in bytes, that the general path's im2col matrix
    /// may take per thread (default 8 MiB); it then works in bands of output
    /// positions that fit. When one output position's receptive field
    /// (`in_channels / groups * kernel_h * kernel_w` floats) alone is larger,
    /// the general path runs a direct loop over the kernel taps instead, which
    /// needs no scratch but is much slower. Other kernels are unaffected.
    /// Results depend on the limit (bands change how the GEMM tiles the
    /// columns) but, for a given limit, not on the number of threads.
    pub fn with_scratch_limit(mut self, bytes: usize) -> Self {
        self.scratch_limit = (bytes / size_of::<f32>()).max(1);
        self
    }

    /// The geometry.
    pub fn params(&self) -> &Conv2dParams {
        &self.params
    }

    /// The fused activation.
    pub fn activation(&self) -> Activation {
        self.activation
    }

    /// The weights as given (OIHW).
    pub fn weights(&self) -> &[f32] {
        &self.weights
    }

    /// The bias as given, if any.
    pub fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref()
    }

    /// The plan (kernel family and name).
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The name of the kernel that runs, e.g. `conv1x1_8x48__avx512` or
    /// `general_im2col+conv1x1_6x16__avx2`, or `general_taps` when the general
    /// path's direct tap loop runs (see [`Conv2d::with_scratch_limit`]).
    pub fn kernel_name(&self) -> &'static str {
        if general::uses_taps(self) { general::TAPS_NAME } else { self.plan.kernel_name() }
    }

    /// Output shape for an input shape.
    pub fn output_shape(&self, input: [usize; 4]) -> Result<[usize; 4]> {
        self.params.output_shape(input)
    }

    /// Runs the convolution into a new tensor.
    pub fn forward(&self, input: &Tensor) -> Result<Tensor> {
        let mut out = Tensor::zeros(self.output_shape(input.shape())?)?;
        self.forward_into(input.view(), out.view_mut())?;
        Ok(out)
    }

    /// Runs the convolution from `input` into `output`, whose shape must be
    /// exactly [`Conv2d::output_shape`] of the input. Allocates nothing once
    /// the threads involved have run a layer at least this large, unless a
    /// per-thread buffer would exceed 16 MiB (see the module docs).
    pub fn forward_into(&self, input: TensorView<'_>, output: TensorViewMut<'_>) -> Result<()> {
        let expected = self.output_shape(input.shape())?;
        if output.shape() != expected {
            return Err(Error::ShapeMismatch {
                what: "output view",
                expected: expected.to_vec(),
                got: output.shape().to_vec(),
            });
        }
        exec::run(self, input, output);
        Ok(())
    }
}
