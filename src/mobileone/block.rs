//! The MobileOne block in its two forms: [`MobileOneBlock`] (train-time
//! branches evaluated in inference mode) and [`ReparamBlock`] (one fused
//! convolution), and [`Block`], either of them.

use crate::conv::{Activation, Conv2d, Conv2dParams};
use crate::error::{Error, Result};
use crate::tensor::{Tensor, TensorView, TensorViewMut};
use repconv_kernels::{Isa, Precision};

use super::batchnorm::BatchNorm2d;
use super::ops;
use super::reparam::{Accumulator, identity_kernel};
use super::rng::SplitMix64;
use super::se::SqueezeExcite;
use super::workspace::{Scratch, Workspace};

/// Geometry and branch structure of a MobileOne block. Padding is always
/// `kernel / 2`; the scale branch exists when `kernel > 1`, the skip branch
/// when `in_channels == out_channels` and `stride == 1` (as in timm).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Square kernel size (odd: 1 or 3 in MobileOne).
    pub kernel: usize,
    /// Stride (both axes).
    pub stride: usize,
    /// Channel groups: 1 (dense) or `in_channels` (depthwise); any divisor of
    /// both channel counts works.
    pub groups: usize,
    /// Number of `kxk` conv branches (`k`, at least 1).
    pub num_conv_branches: usize,
    /// Squeeze-excitation on the branch sum, before the ReLU.
    pub use_se: bool,
}

impl BlockConfig {
    /// A dense block with stride 1, one conv branch and no SE.
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize) -> Self {
        BlockConfig {
            in_channels,
            out_channels,
            kernel,
            stride: 1,
            groups: 1,
            num_conv_branches: 1,
            use_se: false,
        }
    }

    /// Sets the stride.
    pub fn with_stride(mut self, stride: usize) -> Self {
        self.stride = stride;
        self
    }

    /// Sets the groups (`in_channels` for depthwise).
    pub fn with_groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    /// Sets the number of `kxk` conv branches.
    pub fn with_branches(mut self, k: usize) -> Self {
        self.num_conv_branches = k;
        self
    }

    /// Enables or disables squeeze-excitation.
    pub fn with_se(mut self, use_se: bool) -> Self {
        self.use_se = use_se;
        self
    }

    /// Zero padding, `kernel / 2`.
    pub fn padding(&self) -> usize {
        self.kernel / 2
    }

    /// Whether the block has the 1x1 scale branch (`kernel > 1`).
    pub fn has_scale(&self) -> bool {
        self.kernel > 1
    }

    /// Whether the block has the BN skip branch (in == out, stride 1).
    pub fn has_identity(&self) -> bool {
        self.in_channels == self.out_channels && self.stride == 1
    }

    /// Number of BN branches summed: `k` + scale + skip.
    pub fn num_branches(&self) -> usize {
        self.num_conv_branches + usize::from(self.has_scale()) + usize::from(self.has_identity())
    }

    /// Geometry of the `kxk` branches and of the fused convolution.
    pub fn conv_params(&self) -> Conv2dParams {
        Conv2dParams::new(self.in_channels, self.out_channels, [self.kernel; 2])
            .with_stride([self.stride; 2])
            .with_padding([self.padding(); 2])
            .with_groups(self.groups)
    }

    /// Geometry of the 1x1 scale branch (same stride and groups, no padding).
    pub fn scale_params(&self) -> Conv2dParams {
        Conv2dParams::new(self.in_channels, self.out_channels, [1, 1])
            .with_stride([self.stride; 2])
            .with_groups(self.groups)
    }

    /// Checks the configuration: at least one conv branch, an odd kernel, and
    /// valid convolution geometry.
    pub fn validate(&self) -> Result<()> {
        if self.num_conv_branches == 0 {
            return Err(Error::invalid("num_conv_branches", "must be at least 1"));
        }
        if self.kernel.is_multiple_of(2) {
            return Err(Error::invalid(
                "kernel",
                format!("must be odd (padding kernel / 2 keeps the centre), got {}", self.kernel),
            ));
        }
        self.conv_params().validate()
    }

    /// Output shape for an input shape (checks the channel count).
    pub fn output_shape(&self, input: [usize; 4]) -> Result<[usize; 4]> {
        self.validate()?;
        self.conv_params().output_shape(input)
    }
}

/// A bias-free convolution followed by [`BatchNorm2d`] (timm's `ConvNormAct`
/// without activation: `conv.weight`, `bn.*`).
#[derive(Clone, Debug)]
pub struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm2d,
}

impl ConvBn {
    /// Builds the branch from OIHW weights and its normalisation, whose
    /// channel count must be `params.out_channels`, on the process default
    /// ISA ([`Isa::from_env`]).
    pub fn new(params: Conv2dParams, weights: &[f32], bn: BatchNorm2d) -> Result<Self> {
        ConvBn::new_on(params, weights, bn, Isa::from_env()?)
    }

    /// Like [`new`](Self::new), on `isa`'s kernels (the process default is
    /// not consulted).
    pub fn new_on(
        params: Conv2dParams,
        weights: &[f32],
        bn: BatchNorm2d,
        isa: Isa,
    ) -> Result<Self> {
        let conv = Conv2d::new_on(params, weights, None, Activation::None, isa)?;
        if bn.channels() != params.out_channels {
            return Err(Error::LengthMismatch {
                what: "branch batchnorm channels",
                expected: params.out_channels,
                got: bn.channels(),
            });
        }
        Ok(ConvBn { conv, bn })
    }

    fn random(
        params: Conv2dParams,
        branches: usize,
        eps: f32,
        rng: &mut SplitMix64,
    ) -> Result<Self> {
        let fan_in = params.in_per_group() * params.kernel[0] * params.kernel[1];
        let bound = (6.0 / fan_in.max(1) as f32).sqrt();
        let weights = rng.uniform_vec(params.weight_len()?, -bound, bound);
        let bn = BatchNorm2d::random(params.out_channels, branches, eps, rng)?;
        ConvBn::new(params, &weights, bn)
    }

    /// The convolution (no bias, no activation).
    pub fn conv(&self) -> &Conv2d {
        &self.conv
    }

    /// The normalisation.
    pub fn bn(&self) -> &BatchNorm2d {
        &self.bn
    }

    /// The same branch on `isa`'s kernels.
    pub fn with_isa(self, isa: Isa) -> Result<Self> {
        Ok(ConvBn { conv: self.conv.with_isa(isa)?, ..self })
    }

    /// The same branch computed in `precision` ([`Conv2d::with_precision`]).
    pub fn with_precision(self, precision: Precision) -> Result<Self> {
        Ok(ConvBn { conv: self.conv.with_precision(precision)?, ..self })
    }
}

/// A MobileOne block in its train-time form, evaluated in inference mode:
/// `ReLU(SE(Σ bn_i(conv_i(x)) + bn_scale(conv_1x1(x)) + bn_skip(x)))`.
///
/// [`forward_into`](Self::forward_into) runs it the way an eager framework
/// runs the graph, with the obvious fusions and no needless copies: the first
/// branch's convolution writes straight into the output and is normalised in
/// place; every other branch's convolution writes into one reused buffer and
/// is normalised and added to the output in a single pass; the skip branch
/// normalises and adds the input directly; the ReLU rides on the last pass
/// (or on the SE scaling pass). So the block costs `k (+1)` convolutions and
/// `k (+1) (+1)` elementwise passes, against one convolution when fused.
#[derive(Clone, Debug)]
pub struct MobileOneBlock {
    config: BlockConfig,
    conv_kxk: Vec<ConvBn>,
    conv_scale: Option<ConvBn>,
    identity: Option<BatchNorm2d>,
    attn: Option<SqueezeExcite>,
}

impl MobileOneBlock {
    /// Assembles a block from its branches, checking that they match `config`:
    /// `config.num_conv_branches` kxk branches with `config.conv_params()`, a
    /// scale branch exactly when `config.has_scale()` with
    /// `config.scale_params()`, a skip BN exactly when `config.has_identity()`,
    /// and SE exactly when `config.use_se`, all over `out_channels`.
    pub fn from_parts(
        config: BlockConfig,
        conv_kxk: Vec<ConvBn>,
        conv_scale: Option<ConvBn>,
        identity: Option<BatchNorm2d>,
        attn: Option<SqueezeExcite>,
    ) -> Result<Self> {
        config.validate()?;
        if conv_kxk.len() != config.num_conv_branches {
            return Err(Error::LengthMismatch {
                what: "conv_kxk branches",
                expected: config.num_conv_branches,
                got: conv_kxk.len(),
            });
        }
        if conv_kxk.iter().any(|b| *b.conv.params() != config.conv_params()) {
            return Err(Error::invalid("conv_kxk", "a branch's geometry differs from the block's"));
        }
        match (&conv_scale, config.has_scale()) {
            (Some(s), true) if *s.conv.params() == config.scale_params() => {}
            (None, false) => {}
            _ => {
                return Err(Error::invalid(
                    "conv_scale",
                    "present exactly when kernel > 1, as a 1x1 conv with the block's stride and groups",
                ));
            }
        }
        match (&identity, config.has_identity()) {
            (Some(bn), true) if bn.channels() == config.out_channels => {}
            (None, false) => {}
            _ => {
                return Err(Error::invalid(
                    "identity",
                    "present exactly when in == out channels and stride == 1, over out_channels",
                ));
            }
        }
        match (&attn, config.use_se) {
            (Some(se), true) if se.channels() == config.out_channels => {}
            (None, false) => {}
            _ => {
                return Err(Error::invalid(
                    "attn",
                    "present exactly when use_se, over out_channels",
                ));
            }
        }
        Ok(MobileOneBlock { config, conv_kxk, conv_scale, identity, attn })
    }

    /// Seeded random weights (He-uniform) and non-trivial BN statistics (see
    /// [`BatchNorm2d::random`]), BN eps 1e-5.
    pub fn random(config: BlockConfig, rng: &mut SplitMix64) -> Result<Self> {
        MobileOneBlock::random_with_eps(config, 1e-5, rng)
    }

    /// Like [`random`](Self::random) with an explicit BN eps.
    pub fn random_with_eps(config: BlockConfig, eps: f32, rng: &mut SplitMix64) -> Result<Self> {
        config.validate()?;
        let nb = config.num_branches();
        let conv_kxk = (0..config.num_conv_branches)
            .map(|_| ConvBn::random(config.conv_params(), nb, eps, rng))
            .collect::<Result<Vec<_>>>()?;
        let conv_scale = if config.has_scale() {
            Some(ConvBn::random(config.scale_params(), nb, eps, rng)?)
        } else {
            None
        };
        let identity = if config.has_identity() {
            Some(BatchNorm2d::random(config.out_channels, nb, eps, rng)?)
        } else {
            None
        };
        let attn =
            config.use_se.then(|| SqueezeExcite::random(config.out_channels, rng)).transpose()?;
        MobileOneBlock::from_parts(config, conv_kxk, conv_scale, identity, attn)
    }

    /// Seeded random weights whose BN statistics are calibrated on `x`, the
    /// way a trained network's running statistics track its activations:
    /// each conv branch's output channels get a random gain (log-uniform in
    /// `[0.1, 3)`, so running variances span about 0.01..10), and each BN's
    /// running mean and variance are the measured per-channel statistics of
    /// its input on `x`, perturbed (see [`BatchNorm2d::calibrated`]). Every
    /// branch is then roughly normalised, so deep stacks of such blocks keep
    /// their signal. BN eps is 1e-5. The block runs on the process default
    /// ISA ([`Isa::from_env`]).
    pub fn random_calibrated(
        config: BlockConfig,
        x: &Tensor,
        rng: &mut SplitMix64,
    ) -> Result<Self> {
        MobileOneBlock::random_calibrated_on(config, x, rng, Isa::from_env()?)
    }

    /// Like [`random_calibrated`](Self::random_calibrated), on `isa`'s
    /// kernels, which also measure the calibration statistics (the process
    /// default is not consulted).
    pub fn random_calibrated_on(
        config: BlockConfig,
        x: &Tensor,
        rng: &mut SplitMix64,
        isa: Isa,
    ) -> Result<Self> {
        config.validate()?;
        let nb = config.num_branches();
        let branch = |params: Conv2dParams, rng: &mut SplitMix64| -> Result<ConvBn> {
            let per_out = params.weight_len()? / params.out_channels;
            let bound = (6.0 / per_out.max(1) as f32).sqrt();
            let mut weights = rng.uniform_vec(params.weight_len()?, -bound, bound);
            let mut gains = Vec::with_capacity(params.out_channels);
            for row in weights.chunks_exact_mut(per_out.max(1)) {
                let gain = rng.log_uniform(0.1, 3.0) as f32;
                row.iter_mut().for_each(|w| *w *= gain);
                gains.push(gain);
            }
            let conv = Conv2d::new_on(params, &weights, None, Activation::None, isa)?;
            let y = conv.forward(x)?;
            Ok(ConvBn { conv, bn: BatchNorm2d::calibrated(y.view(), &gains, nb, rng)? })
        };
        let conv_kxk = (0..config.num_conv_branches)
            .map(|_| branch(config.conv_params(), rng))
            .collect::<Result<Vec<_>>>()?;
        let conv_scale =
            if config.has_scale() { Some(branch(config.scale_params(), rng)?) } else { None };
        let identity = if config.has_identity() {
            Some(BatchNorm2d::calibrated(x.view(), &vec![1.0; config.out_channels], nb, rng)?)
        } else {
            None
        };
        let attn =
            config.use_se.then(|| SqueezeExcite::random(config.out_channels, rng)).transpose()?;
        MobileOneBlock::from_parts(config, conv_kxk, conv_scale, identity, attn)
    }

    /// The configuration.
    pub fn config(&self) -> &BlockConfig {
        &self.config
    }

    /// The `kxk` branches (timm `conv_kxk.{b}`).
    pub fn conv_kxk(&self) -> &[ConvBn] {
        &self.conv_kxk
    }

    /// The 1x1 scale branch (timm `conv_scale`).
    pub fn conv_scale(&self) -> Option<&ConvBn> {
        self.conv_scale.as_ref()
    }

    /// The BN skip branch (timm `identity`).
    pub fn identity(&self) -> Option<&BatchNorm2d> {
        self.identity.as_ref()
    }

    /// Squeeze-excitation (timm `attn`).
    pub fn attn(&self) -> Option<&SqueezeExcite> {
        self.attn.as_ref()
    }

    /// Output shape for an input shape.
    pub fn output_shape(&self, input: [usize; 4]) -> Result<[usize; 4]> {
        self.config.output_shape(input)
    }

    /// FLOPs of the branch convolutions (and SE) for an input shape, without
    /// the elementwise passes.
    pub fn flops(&self, input: [usize; 4]) -> Result<u64> {
        let mut f = self.config.conv_params().flops(input)? * self.config.num_conv_branches as u64;
        if self.config.has_scale() {
            f += self.config.scale_params().flops(input)?;
        }
        if let Some(se) = &self.attn {
            let [n, _, h, w] = self.output_shape(input)?;
            f += se.flops(n, h * w);
        }
        Ok(f)
    }

    /// Runs the block into a new tensor.
    pub fn forward(&self, input: &Tensor) -> Result<Tensor> {
        let mut out = Tensor::zeros(self.output_shape(input.shape())?)?;
        self.forward_into(input.view(), out.view_mut(), &mut Workspace::new())?;
        Ok(out)
    }

    /// Runs the block from `input` into `output` (shape
    /// [`output_shape`](Self::output_shape)), using `ws` for the branch buffer.
    pub fn forward_into(
        &self,
        input: TensorView<'_>,
        output: TensorViewMut<'_>,
        ws: &mut Workspace,
    ) -> Result<()> {
        check_output(self.output_shape(input.shape())?, &output)?;
        self.run(input, output, &mut ws.scratch)
    }

    pub(crate) fn run(
        &self,
        x: TensorView<'_>,
        mut y: TensorViewMut<'_>,
        scratch: &mut Scratch,
    ) -> Result<()> {
        let shape = y.shape();
        let hw = shape[2] * shape[3];
        let se = self.attn.is_some();
        let total = self.config.num_branches();
        let mut done = 0;
        // Branch 0: convolution straight into the output, BN in place.
        let first = &self.conv_kxk[0];
        first.conv.forward_into(x, y.reborrow())?;
        done += 1;
        let relu_now = done == total && !se;
        ops::affine_inplace(y.as_mut_slice(), hw, first.bn.scale(), first.bn.shift(), relu_now);
        // The other conv branches: convolution into the reused buffer, then one
        // fused BN + add pass into the output.
        let len = y.as_slice().len();
        for branch in self.conv_kxk[1..].iter().chain(&self.conv_scale) {
            let tmp = scratch.tmp.get(len)?;
            branch.conv.forward_into(x, TensorViewMut::new(shape, &mut *tmp)?)?;
            done += 1;
            let relu_now = done == total && !se;
            ops::affine_accumulate(
                y.as_mut_slice(),
                tmp,
                hw,
                branch.bn.scale(),
                branch.bn.shift(),
                relu_now,
            );
        }
        // The skip branch reads the input directly (same shape: stride 1, in == out).
        if let Some(bn) = &self.identity {
            ops::affine_accumulate(y.as_mut_slice(), x.as_slice(), hw, bn.scale(), bn.shift(), !se);
        }
        if let Some(attn) = &self.attn {
            attn.apply(self.isa(), y.as_mut_slice(), shape, scratch, true);
        }
        Ok(())
    }

    /// The instruction set the block's kernels run with.
    pub fn isa(&self) -> Isa {
        self.conv_kxk[0].conv.isa()
    }

    /// The same block on `isa`'s kernels.
    pub fn with_isa(self, isa: Isa) -> Result<Self> {
        let conv_kxk =
            self.conv_kxk.into_iter().map(|b| b.with_isa(isa)).collect::<Result<Vec<_>>>()?;
        let conv_scale = self.conv_scale.map(|b| b.with_isa(isa)).transpose()?;
        Ok(MobileOneBlock { conv_kxk, conv_scale, ..self })
    }

    /// The precision asked for ([`MobileOneBlock::with_precision`]).
    pub fn precision(&self) -> Precision {
        self.conv_kxk[0].conv.precision()
    }

    /// The same block with every convolution computed in `precision` where
    /// a kernel of that precision exists for it ([`Conv2d::with_precision`]).
    pub fn with_precision(self, precision: Precision) -> Result<Self> {
        let p = precision;
        let conv_kxk =
            self.conv_kxk.into_iter().map(|b| b.with_precision(p)).collect::<Result<Vec<_>>>()?;
        let conv_scale = self.conv_scale.map(|b| b.with_precision(p)).transpose()?;
        Ok(MobileOneBlock { conv_kxk, conv_scale, ..self })
    }

    /// Folds every branch into one convolution with bias: each BN into its
    /// convolution, the 1x1 scale kernel zero-padded to kxk, the skip BN as a
    /// kxk identity kernel, all summed (in `f64`). The result has the same
    /// stride, padding, groups and ISA, ReLU fused into the convolution (or,
    /// with SE, the convolution without activation, then SE, then ReLU).
    pub fn reparameterize(&self) -> Result<ReparamBlock> {
        let c = &self.config;
        let k = [c.kernel; 2];
        let mut acc = Accumulator::new(c.out_channels, c.in_channels / c.groups, k);
        for b in &self.conv_kxk {
            acc.add(b.conv.weights(), k, &b.bn);
        }
        if let Some(b) = &self.conv_scale {
            acc.add(b.conv.weights(), [1, 1], &b.bn);
        }
        if let Some(bn) = &self.identity {
            acc.add(&identity_kernel(c.out_channels, c.groups, [1, 1])?, [1, 1], bn);
        }
        let (weights, bias) = acc.finish();
        ReparamBlock::new_on(*c, &weights, &bias, self.attn.clone(), self.isa())?
            .with_precision(self.precision())
    }
}

fn check_output(expected: [usize; 4], output: &TensorViewMut<'_>) -> Result<()> {
    if output.shape() != expected {
        return Err(Error::ShapeMismatch {
            what: "output view",
            expected: expected.to_vec(),
            got: output.shape().to_vec(),
        });
    }
    Ok(())
}

/// A reparameterized MobileOne block: `ReLU(SE(conv(x) + b))`, one
/// convolution (timm `reparam_conv`) with the bias and, without SE, the ReLU
/// fused into its epilogue.
#[derive(Clone, Debug)]
pub struct ReparamBlock {
    config: BlockConfig,
    reparam_conv: Conv2d,
    attn: Option<SqueezeExcite>,
}

impl ReparamBlock {
    /// Builds the fused block from OIHW weights (`config.conv_params()`) and a
    /// bias of `out_channels`, plus SE exactly when `config.use_se`, on the
    /// process default ISA ([`Isa::from_env`]).
    pub fn new(
        config: BlockConfig,
        weights: &[f32],
        bias: &[f32],
        attn: Option<SqueezeExcite>,
    ) -> Result<Self> {
        ReparamBlock::new_on(config, weights, bias, attn, Isa::from_env()?)
    }

    /// Like [`new`](Self::new), on `isa`'s kernels (the process default is
    /// not consulted).
    pub fn new_on(
        config: BlockConfig,
        weights: &[f32],
        bias: &[f32],
        attn: Option<SqueezeExcite>,
        isa: Isa,
    ) -> Result<Self> {
        config.validate()?;
        match (&attn, config.use_se) {
            (Some(se), true) if se.channels() == config.out_channels => {}
            (None, false) => {}
            _ => {
                return Err(Error::invalid(
                    "attn",
                    "present exactly when use_se, over out_channels",
                ));
            }
        }
        let act = if attn.is_some() { Activation::None } else { Activation::Relu };
        let reparam_conv = Conv2d::new_on(config.conv_params(), weights, Some(bias), act, isa)?;
        Ok(ReparamBlock { config, reparam_conv, attn })
    }

    /// The configuration (of the block it came from).
    pub fn config(&self) -> &BlockConfig {
        &self.config
    }

    /// The fused convolution (timm `reparam_conv`).
    pub fn reparam_conv(&self) -> &Conv2d {
        &self.reparam_conv
    }

    /// Squeeze-excitation (timm `attn`).
    pub fn attn(&self) -> Option<&SqueezeExcite> {
        self.attn.as_ref()
    }

    /// Output shape for an input shape.
    pub fn output_shape(&self, input: [usize; 4]) -> Result<[usize; 4]> {
        self.config.output_shape(input)
    }

    /// FLOPs of the fused convolution (and SE) for an input shape.
    pub fn flops(&self, input: [usize; 4]) -> Result<u64> {
        let mut f = self.config.conv_params().flops(input)?;
        if let Some(se) = &self.attn {
            let [n, _, h, w] = self.output_shape(input)?;
            f += se.flops(n, h * w);
        }
        Ok(f)
    }

    /// Runs the block into a new tensor.
    pub fn forward(&self, input: &Tensor) -> Result<Tensor> {
        let mut out = Tensor::zeros(self.output_shape(input.shape())?)?;
        self.forward_into(input.view(), out.view_mut(), &mut Workspace::new())?;
        Ok(out)
    }

    /// Runs the block from `input` into `output` (shape
    /// [`output_shape`](Self::output_shape)); `ws` is used only by SE.
    pub fn forward_into(
        &self,
        input: TensorView<'_>,
        output: TensorViewMut<'_>,
        ws: &mut Workspace,
    ) -> Result<()> {
        check_output(self.output_shape(input.shape())?, &output)?;
        self.run(input, output, &mut ws.scratch)
    }

    pub(crate) fn run(
        &self,
        x: TensorView<'_>,
        mut y: TensorViewMut<'_>,
        scratch: &mut Scratch,
    ) -> Result<()> {
        self.reparam_conv.forward_into(x, y.reborrow())?;
        if let Some(attn) = &self.attn {
            let shape = y.shape();
            attn.apply(self.isa(), y.as_mut_slice(), shape, scratch, true);
        }
        Ok(())
    }

    /// The instruction set the block's kernels run with.
    pub fn isa(&self) -> Isa {
        self.reparam_conv.isa()
    }

    /// The same block on `isa`'s kernels.
    pub fn with_isa(self, isa: Isa) -> Result<Self> {
        Ok(ReparamBlock { reparam_conv: self.reparam_conv.with_isa(isa)?, ..self })
    }

    /// The precision asked for ([`ReparamBlock::with_precision`]).
    pub fn precision(&self) -> Precision {
        self.reparam_conv.precision()
    }

    /// The same block computed in `precision` ([`Conv2d::with_precision`]).
    pub fn with_precision(self, precision: Precision) -> Result<Self> {
        let reparam_conv = self.reparam_conv.with_precision(precision)?;
        Ok(ReparamBlock { reparam_conv, ..self })
    }
}

/// A MobileOne block in either form.
// A network holds a few dozen blocks; boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Block {
    /// Train-time branches.
    MultiBranch(MobileOneBlock),
    /// One fused convolution.
    Reparam(ReparamBlock),
}

impl Block {
    /// The configuration.
    pub fn config(&self) -> &BlockConfig {
        match self {
            Block::MultiBranch(b) => b.config(),
            Block::Reparam(b) => b.config(),
        }
    }

    /// Whether this is the fused form.
    pub fn is_reparameterized(&self) -> bool {
        matches!(self, Block::Reparam(_))
    }

    /// Output shape for an input shape.
    pub fn output_shape(&self, input: [usize; 4]) -> Result<[usize; 4]> {
        self.config().output_shape(input)
    }

    /// FLOPs of the block's convolutions (and SE) in its current form.
    pub fn flops(&self, input: [usize; 4]) -> Result<u64> {
        match self {
            Block::MultiBranch(b) => b.flops(input),
            Block::Reparam(b) => b.flops(input),
        }
    }

    /// The instruction set the block's kernels run with.
    pub fn isa(&self) -> Isa {
        match self {
            Block::MultiBranch(b) => b.isa(),
            Block::Reparam(b) => b.isa(),
        }
    }

    /// The same block on `isa`'s kernels.
    pub fn with_isa(self, isa: Isa) -> Result<Block> {
        Ok(match self {
            Block::MultiBranch(b) => Block::MultiBranch(b.with_isa(isa)?),
            Block::Reparam(b) => Block::Reparam(b.with_isa(isa)?),
        })
    }

    /// The precision asked for ([`Block::with_precision`]).
    pub fn precision(&self) -> Precision {
        match self {
            Block::MultiBranch(b) => b.precision(),
            Block::Reparam(b) => b.precision(),
        }
    }

    /// The same block computed in `precision` ([`Conv2d::with_precision`]).
    pub fn with_precision(self, precision: Precision) -> Result<Block> {
        Ok(match self {
            Block::MultiBranch(b) => Block::MultiBranch(b.with_precision(precision)?),
            Block::Reparam(b) => Block::Reparam(b.with_precision(precision)?),
        })
    }

    /// The fused form (a clone when already fused).
    pub fn reparameterize(&self) -> Result<Block> {
        Ok(match self {
            Block::MultiBranch(b) => Block::Reparam(b.reparameterize()?),
            Block::Reparam(b) => Block::Reparam(b.clone()),
        })
    }

    /// Runs the block into a new tensor.
    pub fn forward(&self, input: &Tensor) -> Result<Tensor> {
        match self {
            Block::MultiBranch(b) => b.forward(input),
            Block::Reparam(b) => b.forward(input),
        }
    }

    /// Runs the block from `input` into `output`.
    pub fn forward_into(
        &self,
        input: TensorView<'_>,
        output: TensorViewMut<'_>,
        ws: &mut Workspace,
    ) -> Result<()> {
        match self {
            Block::MultiBranch(b) => b.forward_into(input, output, ws),
            Block::Reparam(b) => b.forward_into(input, output, ws),
        }
    }

    /// Prefetches the fused block's packed weights into L2 (nothing for the
    /// multi-branch form, whose weights are many and read branch by branch).
    pub(crate) fn prefetch_weights(&self) {
        if let Block::Reparam(b) = self {
            b.reparam_conv.prefetch_weights();
        }
    }

    pub(crate) fn run(
        &self,
        x: TensorView<'_>,
        y: TensorViewMut<'_>,
        scratch: &mut Scratch,
    ) -> Result<()> {
        match self {
            Block::MultiBranch(b) => b.run(x, y, scratch),
            Block::Reparam(b) => b.run(x, y, scratch),
        }
    }
}
