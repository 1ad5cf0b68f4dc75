//! The MobileOne network (S0..S4): stem, four stages of (depthwise 3x3 block,
//! pointwise 1x1 block) pairs, global average pool and a linear head, laid out
//! as timm's `byobnet.py` builds `mobileone_s0..s4`.

use std::fmt;
use std::str::FromStr;
use std::sync::TryLockError;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::tensor::{Tensor, TensorView, TensorViewMut};
use repconv_kernels::{Isa, Precision};

use super::block::{Block, BlockConfig, MobileOneBlock};
use super::ops;
use super::rng::SplitMix64;
use super::workspace::{Workspace, grow};

/// The five published MobileOne variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// S0: widths (0.75, 1, 1, 2), k = 4.
    S0,
    /// S1: widths (1.5, 1.5, 2, 2.5), k = 1.
    S1,
    /// S2: widths (1.5, 2, 2.5, 4), k = 1.
    S2,
    /// S3: widths (2, 2.5, 3, 4), k = 1.
    S3,
    /// S4: widths (3, 3.5, 3.5, 4), k = 1, SE on the last 5 pairs of stage 3
    /// and all of stage 4.
    S4,
}

impl Variant {
    /// All variants, S0 first.
    pub const ALL: [Variant; 5] = [Variant::S0, Variant::S1, Variant::S2, Variant::S3, Variant::S4];

    /// Lower-case name, e.g. `"s0"`.
    pub fn name(self) -> &'static str {
        match self {
            Variant::S0 => "s0",
            Variant::S1 => "s1",
            Variant::S2 => "s2",
            Variant::S3 => "s3",
            Variant::S4 => "s4",
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Variant {
    type Err = Error;

    /// Parses `s0`..`s4` (any case, optional `mobileone_` prefix).
    fn from_str(s: &str) -> Result<Self> {
        let l = s.to_ascii_lowercase();
        let l = l.strip_prefix("mobileone_").unwrap_or(&l);
        Variant::ALL
            .into_iter()
            .find(|v| v.name() == l)
            .ok_or_else(|| Error::invalid("variant", format!("expected s0..s4, got {s:?}")))
    }
}

/// Base stage widths before the multipliers (timm `_mobileone_bcfg`).
const BASE_CHANNELS: [usize; 4] = [64, 128, 256, 512];

/// timm's `make_divisible(v, 8)`: nearest multiple of 8 (halves up), at least
/// 8, bumped by 8 if rounding lost more than 10%.
fn make_divisible(v: f64) -> usize {
    let r = (((v + 4.0) as usize) / 8 * 8).max(8);
    if (r as f64) < 0.9 * v { r + 8 } else { r }
}

/// Architecture of a MobileOne network (timm `mobileone_s*` configs).
#[derive(Clone, Debug, PartialEq)]
pub struct MobileOneConfig {
    /// Width multipliers of the four stages (of 64, 128, 256, 512 channels).
    pub width_multipliers: [f64; 4],
    /// Number of (depthwise, pointwise) block pairs per stage: (2, 8, 10, 1).
    pub depths: [usize; 4],
    /// `k`, the conv branches of every stage block (the stem has one, as in timm).
    pub num_conv_branches: usize,
    /// How many of each stage's last pairs use squeeze-excitation.
    pub se_blocks: [usize; 4],
    /// Input channels (3).
    pub in_channels: usize,
    /// Classes of the linear head (1000 for ImageNet).
    pub num_classes: usize,
}

impl MobileOneConfig {
    /// The published configuration of `variant` with 1000 classes.
    pub fn variant(variant: Variant) -> Self {
        let (w, k, se) = match variant {
            Variant::S0 => ([0.75, 1.0, 1.0, 2.0], 4, [0; 4]),
            Variant::S1 => ([1.5, 1.5, 2.0, 2.5], 1, [0; 4]),
            Variant::S2 => ([1.5, 2.0, 2.5, 4.0], 1, [0; 4]),
            Variant::S3 => ([2.0, 2.5, 3.0, 4.0], 1, [0; 4]),
            Variant::S4 => ([3.0, 3.5, 3.5, 4.0], 1, [0, 0, 5, 1]),
        };
        MobileOneConfig {
            width_multipliers: w,
            depths: [2, 8, 10, 1],
            num_conv_branches: k,
            se_blocks: se,
            in_channels: 3,
            num_classes: 1000,
        }
    }

    /// Sets the number of classes.
    pub fn with_num_classes(mut self, num_classes: usize) -> Self {
        self.num_classes = num_classes;
        self
    }

    /// Sets `k` for every stage block.
    pub fn with_branches(mut self, k: usize) -> Self {
        self.num_conv_branches = k;
        self
    }

    /// Stem output channels: `min(64, 64 * w0)` (48 for S0, 64 otherwise).
    pub fn stem_channels(&self) -> usize {
        make_divisible(64.0 * self.width_multipliers[0]).min(64)
    }

    /// Output channels of each stage.
    pub fn stage_channels(&self) -> [usize; 4] {
        std::array::from_fn(|s| make_divisible(BASE_CHANNELS[s] as f64 * self.width_multipliers[s]))
    }

    /// The stem's block configuration and every stage's, in timm order
    /// (`stages.{s}.{i}`: depthwise blocks at even `i`, pointwise at odd).
    pub fn block_configs(&self) -> Result<(BlockConfig, Vec<Vec<BlockConfig>>)> {
        if self.num_classes == 0 || self.in_channels == 0 {
            return Err(Error::invalid(
                "mobileone config",
                "num_classes and in_channels must be at least 1",
            ));
        }
        if let Some(w) =
            self.width_multipliers.iter().find(|w| !(w.is_finite() && **w > 0.0 && **w <= 1e4))
        {
            return Err(Error::invalid(
                "width_multipliers",
                format!("must be positive and finite, got {w}"),
            ));
        }
        if let Some(d) = self.depths.iter().find(|d| **d > 4096) {
            return Err(Error::invalid("depths", format!("at most 4096 pairs per stage, got {d}")));
        }
        let stem = BlockConfig::new(self.in_channels, self.stem_channels(), 3).with_stride(2);
        stem.validate()?;
        let mut prev = stem.out_channels;
        let mut stages = Vec::with_capacity(4);
        for (s, &out) in self.stage_channels().iter().enumerate() {
            let depth = self.depths[s];
            let mut blocks = Vec::with_capacity(2 * depth);
            for i in 0..depth {
                let se = i.saturating_add(self.se_blocks[s]) >= depth;
                let stride = if i == 0 { 2 } else { 1 };
                let k = self.num_conv_branches;
                let dw = BlockConfig::new(prev, prev, 3)
                    .with_groups(prev)
                    .with_stride(stride)
                    .with_branches(k)
                    .with_se(se);
                let pw = BlockConfig::new(prev, out, 1).with_branches(k).with_se(se);
                dw.validate()?;
                pw.validate()?;
                blocks.extend([dw, pw]);
                prev = out;
            }
            stages.push(blocks);
        }
        Ok((stem, stages))
    }

    /// Channels entering the head.
    pub fn num_features(&self) -> usize {
        let ch = self.stage_channels();
        (0..4).rev().find(|&s| self.depths[s] > 0).map_or(self.stem_channels(), |s| ch[s])
    }
}

/// A fully connected layer `y = W x + b`, `W` of `[out_features, in_features]`
/// (timm `head.fc`).
#[derive(Clone, Debug, PartialEq)]
pub struct Linear {
    in_features: usize,
    out_features: usize,
    weight: Vec<f32>,
    bias: Vec<f32>,
}

impl Linear {
    /// Builds the layer; `weight` is `out * in` long (row-major), `bias` `out`.
    pub fn new(
        in_features: usize,
        out_features: usize,
        weight: Vec<f32>,
        bias: Vec<f32>,
    ) -> Result<Self> {
        if in_features == 0 || out_features == 0 {
            return Err(Error::invalid("linear", "zero features"));
        }
        let len = in_features
            .checked_mul(out_features)
            .ok_or(Error::TooLarge { what: "linear weight" })?;
        if weight.len() != len {
            return Err(Error::LengthMismatch {
                what: "linear weight",
                expected: len,
                got: weight.len(),
            });
        }
        if bias.len() != out_features {
            return Err(Error::LengthMismatch {
                what: "linear bias",
                expected: out_features,
                got: bias.len(),
            });
        }
        Ok(Linear { in_features, out_features, weight, bias })
    }

    /// Seeded uniform weights in `±1/sqrt(in)` (PyTorch's default range).
    pub fn random(in_features: usize, out_features: usize, rng: &mut SplitMix64) -> Result<Self> {
        let bound = 1.0 / (in_features.max(1) as f32).sqrt();
        let len = in_features
            .checked_mul(out_features)
            .ok_or(Error::TooLarge { what: "linear weight" })?;
        let weight = rng.uniform_vec(len, -bound, bound);
        let bias = rng.uniform_vec(out_features, -bound, bound);
        Linear::new(in_features, out_features, weight, bias)
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.in_features
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// `weight`, `[out, in]` row-major.
    pub fn weight(&self) -> &[f32] {
        &self.weight
    }

    /// `bias`, `[out]`.
    pub fn bias(&self) -> &[f32] {
        &self.bias
    }

    /// `y = W x + b` for one sample, with the process default ISA
    /// ([`Isa::from_env`]).
    pub fn forward(&self, x: &[f32], y: &mut [f32]) -> Result<()> {
        self.forward_isa(Isa::from_env()?, x, y)
    }

    /// `y = W x + b` for one sample with `isa`'s dot product.
    pub fn forward_isa(&self, isa: Isa, x: &[f32], y: &mut [f32]) -> Result<()> {
        if x.len() != self.in_features {
            return Err(Error::LengthMismatch {
                what: "linear input",
                expected: self.in_features,
                got: x.len(),
            });
        }
        if y.len() != self.out_features {
            return Err(Error::LengthMismatch {
                what: "linear output",
                expected: self.out_features,
                got: y.len(),
            });
        }
        ops::matvec(isa, &self.weight, &self.bias, x, y);
        Ok(())
    }

    /// [`forward_isa`](Self::forward_isa) for every sample of a batch (`xs`
    /// and `ys` whole multiples of the feature counts, the same number of
    /// samples), reading the weights once for the batch; bitwise the same
    /// logits as one sample at a time. `tmp` is reused scratch.
    pub(crate) fn forward_batch_isa(
        &self,
        isa: Isa,
        xs: &[f32],
        ys: &mut [f32],
        tmp: &mut Vec<f32>,
    ) -> Result<()> {
        let n = xs.len() / self.in_features;
        if !xs.len().is_multiple_of(self.in_features) || ys.len() != n * self.out_features {
            return Err(Error::LengthMismatch {
                what: "linear batch output",
                expected: n * self.out_features,
                got: ys.len(),
            });
        }
        ops::matvec_batch(isa, &self.weight, &self.bias, xs, self.in_features, ys, tmp);
        Ok(())
    }
}

/// How [`MobileOne::forward_into`] runs a batch's images: the first
/// `by_images` whole per task on `threads` workers, the rest one at a time;
/// `act_len` floats per activation buffer.
#[derive(Clone, Copy)]
struct ImageSplit {
    by_images: usize,
    threads: usize,
    act_len: usize,
}

/// A MobileOne network in either form (or a mix, block by block).
///
/// ```
/// use repconv::mobileone::{MobileOne, MobileOneConfig, Variant, Workspace};
/// use repconv::Tensor;
///
/// let config = MobileOneConfig::variant(Variant::S0).with_num_classes(10);
/// let multi = MobileOne::random(config, 42)?;
/// let fused = multi.reparameterize()?;
/// let x = Tensor::full([1, 3, 32, 32], 0.5)?;
/// let mut ws = Workspace::new();
/// let mut logits = Tensor::zeros(fused.output_shape(x.shape())?)?;
/// fused.forward_into(x.view(), logits.view_mut(), &mut ws)?; // allocates the workspace
/// fused.forward_into(x.view(), logits.view_mut(), &mut ws)?; // allocates nothing
/// assert_eq!(logits.shape(), [1, 10, 1, 1]);
/// # Ok::<(), repconv::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct MobileOne {
    config: MobileOneConfig,
    stem: Block,
    stages: Vec<Vec<Block>>,
    head_fc: Linear,
    batch_split: BatchSplit,
}

/// How [`MobileOne::forward_into`] spreads a batch over the rayon pool's
/// threads. Every choice gives bitwise identical logits: each image's
/// arithmetic does not depend on which thread runs it or how a layer is split.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BatchSplit {
    /// Whole images per thread for the largest multiple of the thread count
    /// in the batch, the remaining images split inside each layer (so a batch
    /// of 1 is split inside layers, a batch of 8 on 2 threads by images).
    #[default]
    Auto,
    /// Whole images per thread (load-balanced by rayon), each image's layers
    /// serial on its worker: one parallel region per batch, no fork-join per
    /// layer, and each image's activations stay in its core's caches.
    Images,
    /// Every layer split across the threads, images one after another (the
    /// only choice that speeds up a single image).
    WithinImage,
}

impl MobileOne {
    /// A multi-branch network with seeded random weights and non-trivial BN
    /// statistics, calibrated block by block on a seeded random batch of two
    /// 64x64 images (see [`MobileOneBlock::random_calibrated`]) so that, like
    /// a trained network, its activations stay normalised and its logits
    /// depend on the input. The same seed gives the same network in a given
    /// build. The network runs on the process default ISA
    /// ([`Isa::from_env`]).
    pub fn random(config: MobileOneConfig, seed: u64) -> Result<Self> {
        MobileOne::random_on(config, seed, Isa::from_env()?)
    }

    /// Like [`random`](Self::random), on `isa`'s kernels, which also measure
    /// the calibration statistics (so the weights may differ from
    /// `random`'s in the last bits when `isa` is not the default); the
    /// process default is not consulted.
    pub fn random_on(config: MobileOneConfig, seed: u64, isa: Isa) -> Result<Self> {
        let (stem_cfg, stage_cfgs) = config.block_configs()?;
        let mut rng = SplitMix64::new(seed);
        let shape = [2, config.in_channels, 64, 64];
        let len = crate::tensor::checked_numel("calibration input", shape)?;
        let mut x = Tensor::from_vec(shape, rng.uniform_vec(len, -1.0, 1.0))?;
        let mut make = |c: BlockConfig, rng: &mut SplitMix64| -> Result<Block> {
            let b = MobileOneBlock::random_calibrated_on(c, &x, rng, isa)?;
            x = b.forward(&x)?;
            Ok(Block::MultiBranch(b))
        };
        let stem = make(stem_cfg, &mut rng)?;
        let stages = stage_cfgs
            .iter()
            .map(|s| s.iter().map(|&c| make(c, &mut rng)).collect())
            .collect::<Result<Vec<Vec<Block>>>>()?;
        let head_fc = Linear::random(config.num_features(), config.num_classes, &mut rng)?;
        MobileOne::from_parts(config, stem, stages, head_fc)
    }

    /// Assembles a network from its blocks (in either form), checking each
    /// block's configuration (geometry, SE; `k` may differ) and the head
    /// against `config`.
    pub fn from_parts(
        config: MobileOneConfig,
        stem: Block,
        stages: Vec<Vec<Block>>,
        head_fc: Linear,
    ) -> Result<Self> {
        let (stem_cfg, stage_cfgs) = config.block_configs()?;
        let same = |want: &BlockConfig, got: &BlockConfig| {
            BlockConfig { num_conv_branches: got.num_conv_branches, ..*want } == *got
        };
        if !same(&stem_cfg, stem.config()) {
            return Err(Error::invalid(
                "stem",
                format!("expected {stem_cfg:?}, got {:?}", stem.config()),
            ));
        }
        if stages.len() != stage_cfgs.len() {
            return Err(Error::LengthMismatch {
                what: "stages",
                expected: stage_cfgs.len(),
                got: stages.len(),
            });
        }
        for (s, (blocks, cfgs)) in stages.iter().zip(&stage_cfgs).enumerate() {
            if blocks.len() != cfgs.len() {
                return Err(Error::LengthMismatch {
                    what: "stage blocks",
                    expected: cfgs.len(),
                    got: blocks.len(),
                });
            }
            for (i, (b, c)) in blocks.iter().zip(cfgs).enumerate() {
                if !same(c, b.config()) {
                    return Err(Error::invalid(
                        "stage block",
                        format!("stages.{s}.{i}: expected {c:?}, got {:?}", b.config()),
                    ));
                }
            }
        }
        if head_fc.in_features() != config.num_features()
            || head_fc.out_features() != config.num_classes
        {
            return Err(Error::ShapeMismatch {
                what: "head.fc",
                expected: vec![config.num_classes, config.num_features()],
                got: vec![head_fc.out_features(), head_fc.in_features()],
            });
        }
        Ok(MobileOne { config, stem, stages, head_fc, batch_split: BatchSplit::Auto })
    }

    /// The configuration.
    pub fn config(&self) -> &MobileOneConfig {
        &self.config
    }

    /// The stem block (timm `stem`).
    pub fn stem(&self) -> &Block {
        &self.stem
    }

    /// The stages (timm `stages.{s}.{i}`).
    pub fn stages(&self) -> &[Vec<Block>] {
        &self.stages
    }

    /// The classifier (timm `head.fc`).
    pub fn head_fc(&self) -> &Linear {
        &self.head_fc
    }

    /// The instruction set the network's kernels run with.
    pub fn isa(&self) -> Isa {
        self.stem.isa()
    }

    /// The same network on `isa`'s kernels (every convolution re-planned and
    /// re-packed; see [`crate::Conv2d::with_isa`]).
    pub fn with_isa(self, isa: Isa) -> Result<MobileOne> {
        let stem = self.stem.with_isa(isa)?;
        let stages = self
            .stages
            .into_iter()
            .map(|s| s.into_iter().map(|b| b.with_isa(isa)).collect())
            .collect::<Result<Vec<Vec<Block>>>>()?;
        Ok(MobileOne { stem, stages, ..self })
    }

    /// The precision the network was asked to compute in
    /// ([`MobileOne::with_precision`]).
    pub fn precision(&self) -> Precision {
        self.stem.precision()
    }

    /// The same network computed in `precision`: with `Precision::Bf16`,
    /// every convolution that has a bf16 kernel (the 1x1 layers: about 90%
    /// of the FLOPs) rounds its weights and inputs to bfloat16 and sums in
    /// f32; the stem, the depthwise layers, squeeze-excitation, pooling and
    /// the classifier stay f32, and the logits are f32. Carried through
    /// [`MobileOne::reparameterize`]. `Bf16` needs the `avx512` ISA on a CPU
    /// with AVX512_BF16, else [`crate::Error::Precision`].
    pub fn with_precision(self, precision: Precision) -> Result<MobileOne> {
        let stem = self.stem.with_precision(precision)?;
        let stages = self
            .stages
            .into_iter()
            .map(|s| s.into_iter().map(|b| b.with_precision(precision)).collect())
            .collect::<Result<Vec<Vec<Block>>>>()?;
        Ok(MobileOne { stem, stages, ..self })
    }

    /// The same network with `split` as its batch schedule.
    pub fn with_batch_split(self, split: BatchSplit) -> MobileOne {
        MobileOne { batch_split: split, ..self }
    }

    /// How [`forward_into`](Self::forward_into) spreads a batch over threads.
    pub fn batch_split(&self) -> BatchSplit {
        self.batch_split
    }

    /// Every block with its timm module name: `stem`, then `stages.{s}.{i}`.
    pub fn blocks(&self) -> Vec<(String, &Block)> {
        let mut v = vec![("stem".to_string(), &self.stem)];
        for (s, blocks) in self.stages.iter().enumerate() {
            v.extend(blocks.iter().enumerate().map(|(i, b)| (format!("stages.{s}.{i}"), b)));
        }
        v
    }

    fn iter_blocks(&self) -> impl Iterator<Item = &Block> {
        std::iter::once(&self.stem).chain(self.stages.iter().flatten())
    }

    /// Whether every block is in its fused form.
    pub fn is_reparameterized(&self) -> bool {
        self.iter_blocks().all(Block::is_reparameterized)
    }

    /// The fused network: every block reparameterized, the head shared.
    pub fn reparameterize(&self) -> Result<MobileOne> {
        let stem = self.stem.reparameterize()?;
        let stages = self
            .stages
            .iter()
            .map(|s| s.iter().map(Block::reparameterize).collect())
            .collect::<Result<Vec<Vec<Block>>>>()?;
        Ok(MobileOne {
            config: self.config.clone(),
            stem,
            stages,
            head_fc: self.head_fc.clone(),
            batch_split: self.batch_split,
        })
    }

    /// Logits shape `[n, num_classes, 1, 1]` for an input shape (checks it).
    pub fn output_shape(&self, input: [usize; 4]) -> Result<[usize; 4]> {
        let mut shape = input;
        for b in self.iter_blocks() {
            shape = b.output_shape(shape)?;
        }
        Ok([input[0], self.config.num_classes, 1, 1])
    }

    /// FLOPs (2 per multiply-add) of one forward pass in the network's current
    /// form: every convolution, SE and the head, not the elementwise passes.
    pub fn flops(&self, input: [usize; 4]) -> Result<u64> {
        let mut shape = input;
        let mut total = 0u64;
        for b in self.iter_blocks() {
            total += b.flops(shape)?;
            shape = b.output_shape(shape)?;
        }
        Ok(total + 2 * (input[0] * self.head_fc.in_features() * self.head_fc.out_features()) as u64)
    }

    /// The final feature map `[n, C, h, w]` (after the last block, before the
    /// pool and head), as timm's `forward_features`. Allocates per block; use
    /// [`forward_into`](Self::forward_into) for the steady-state path.
    pub fn forward_features(&self, input: &Tensor) -> Result<Tensor> {
        let mut x = self.stem.forward(input)?;
        for b in self.stages.iter().flatten() {
            x = b.forward(&x)?;
        }
        Ok(x)
    }

    /// Runs the network into a new logits tensor `[n, num_classes, 1, 1]`.
    pub fn forward(&self, input: &Tensor) -> Result<Tensor> {
        let mut logits = Tensor::zeros(self.output_shape(input.shape())?)?;
        self.forward_into(input.view(), logits.view_mut(), &mut Workspace::new())?;
        Ok(logits)
    }

    /// Runs the network from `input` into `logits` (shape
    /// [`output_shape`](Self::output_shape)). Activations ping-pong between the
    /// two buffers of `ws`, sized once for the largest activation; after the
    /// first call at a given input shape nothing is allocated. A batch is
    /// spread over the current rayon pool as [`batch_split`](Self::batch_split)
    /// says; the logits are bitwise the same for every split and thread count.
    pub fn forward_into(
        &self,
        input: TensorView<'_>,
        mut logits: TensorViewMut<'_>,
        ws: &mut Workspace,
    ) -> Result<()> {
        let expected = self.output_shape(input.shape())?;
        if logits.shape() != expected {
            return Err(Error::ShapeMismatch {
                what: "logits view",
                expected: expected.to_vec(),
                got: logits.shape().to_vec(),
            });
        }
        let [n, c, h, w] = input.shape();
        let threads = if crate::parallel::may_fork() { rayon::current_num_threads() } else { 1 };
        let by_images = match self.batch_split {
            _ if threads < 2 || n < 2 => 0,
            BatchSplit::Auto => n - n % threads,
            BatchSplit::Images => n,
            BatchSplit::WithinImage => 0,
        };
        let image = c * h * w;
        if n == 0 || image == 0 {
            return Ok(()); // an empty batch: no logits to compute
        }
        // Each image's pooled features go to `feats` (image i at i * f); the
        // head then runs once over the whole batch, so its weights (4-5 MB,
        // which do not stay in cache between images) are read once per batch.
        let f = self.head_fc.in_features();
        let act_len = self.activation_len([1, c, h, w])?;
        let mut feats = std::mem::take(&mut ws.feats);
        let split = ImageSplit { by_images, threads, act_len };
        let result = self.batch_features(input, grow(&mut feats, n * f), split, ws);
        let result = result.and_then(|()| {
            let y = logits.as_mut_slice();
            self.head_fc.forward_batch_isa(self.isa(), &feats[..n * f], y, &mut ws.head_tmp)
        });
        ws.feats = feats;
        result
    }

    /// The pooled features of every image of a checked `input` into `feats`
    /// (`f` floats per image): the first `by_images` images whole per task
    /// (each on one worker with its own workspace), the rest one at a time
    /// with each layer split across the threads.
    fn batch_features(
        &self,
        input: TensorView<'_>,
        feats: &mut [f32],
        split: ImageSplit,
        ws: &mut Workspace,
    ) -> Result<()> {
        let ImageSplit { by_images, threads, act_len } = split;
        let [n, c, h, w] = input.shape();
        let (image, f) = (c * h * w, feats.len() / n.max(1));
        let x = input.as_slice();
        let (x_img, x_rest) = x.split_at(by_images * image);
        let (f_img, f_rest) = feats.split_at_mut(by_images * f);
        if by_images > 0 && ws.per_thread.len() < threads {
            ws.per_thread.resize_with(threads, Default::default);
        }
        let per_thread = &ws.per_thread;
        // One task per image; a task runs on one worker from start to end
        // (its layers do not fork), with that worker's workspace. Should the
        // workspace be in use all the same (a task that forked after all,
        // letting this worker steal another image while it waited), the task
        // gets a fresh one instead of waiting for a lock its own thread
        // holds, as `crate::scratch` does for per-thread buffers.
        x_img.par_chunks(image).zip(f_img.par_chunks_mut(f)).try_for_each(|(xi, fi)| {
            let slot = rayon::current_thread_index().unwrap_or(0) % per_thread.len();
            let mut run = |wsi: &mut Workspace| {
                crate::parallel::serial_scope(|| {
                    self.image_features(TensorView::new([1, c, h, w], xi)?, fi, act_len, wsi)
                })
            };
            match per_thread[slot].try_lock() {
                Ok(mut wsi) => run(&mut wsi),
                // A task that panicked with it: the buffers are still usable.
                Err(TryLockError::Poisoned(e)) => run(&mut e.into_inner()),
                Err(TryLockError::WouldBlock) => run(&mut Workspace::new()),
            }
        })?;
        // The rest one image at a time, each layer split across the threads.
        // Whole images, not whole layers over the batch: one image's
        // activations stay in the caches (numbers in docs/experiments.md).
        for (xi, fi) in x_rest.chunks_exact(image).zip(f_rest.chunks_exact_mut(f)) {
            self.image_features(TensorView::new([1, c, h, w], xi)?, fi, act_len, ws)?;
        }
        Ok(())
    }

    /// Floats of the largest activation of one image of `shape` (already
    /// validated by [`output_shape`](Self::output_shape)).
    fn activation_len(&self, mut shape: [usize; 4]) -> Result<usize> {
        let mut max_len = 0;
        for b in self.iter_blocks() {
            shape = b.output_shape(shape)?;
            max_len = max_len.max(crate::tensor::checked_numel("activation", shape)?);
        }
        Ok(max_len)
    }

    /// The globally average-pooled features of one checked image (`[1, c, h,
    /// w]`) into `feats` (the head's `in_features` long), each layer split
    /// across the threads when [`crate::parallel::may_fork`]. Activations
    /// ping-pong between the two buffers of `ws`, `act_len` floats each
    /// ([`activation_len`](Self::activation_len)).
    fn image_features(
        &self,
        input: TensorView<'_>,
        feats: &mut [f32],
        act_len: usize,
        ws: &mut Workspace,
    ) -> Result<()> {
        let Workspace { act: [a, b], scratch, .. } = ws;
        let (mut src, mut dst) = (a.get(act_len)?, b.get(act_len)?);

        // The next block's weights are prefetched only while this thread runs
        // every layer (one thread, or a batch's image): a pass's ~8 MB of
        // weights leave the caches, and with layers split across threads the
        // other thread's half would land in this core's L2 (docs/experiments.md).
        let prefetch = !crate::parallel::may_fork();
        if prefetch && let Some(first) = self.stages.iter().flatten().next() {
            first.prefetch_weights();
        }

        // Stem: from the caller's input into the first buffer.
        let mut shape = self.stem.output_shape(input.shape())?;
        let len = shape.iter().product();
        self.stem.run(input, TensorViewMut::new(shape, &mut src[..len])?, scratch)?;
        let mut blocks = self.stages.iter().flatten().peekable();
        while let Some(block) = blocks.next() {
            if prefetch && let Some(next) = blocks.peek() {
                next.prefetch_weights();
            }
            let out_shape = block.output_shape(shape)?;
            let (in_len, out_len) = (shape.iter().product(), out_shape.iter().product());
            block.run(
                TensorView::new(shape, &src[..in_len])?,
                TensorViewMut::new(out_shape, &mut dst[..out_len])?,
                scratch,
            )?;
            std::mem::swap(&mut src, &mut dst);
            shape = out_shape;
        }

        // Global average pool.
        let [_, c, h, w] = shape;
        if feats.len() != c {
            return Err(Error::LengthMismatch {
                what: "pooled features",
                expected: c,
                got: feats.len(),
            });
        }
        ops::plane_means(&src[..c * h * w], h * w, feats);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker's workspace that is already locked (as when an image's task
    /// forks and its worker steals another image meanwhile) does not stop
    /// the batch: that image gets a workspace of its own, with the same
    /// logits bit for bit.
    #[test]
    fn a_busy_per_thread_workspace_does_not_block_the_batch() {
        let config = MobileOneConfig::variant(Variant::S0).with_num_classes(4);
        let net = MobileOne::random(config, 3).unwrap().with_batch_split(BatchSplit::Images);
        let x = Tensor::from_vec(
            [4, 3, 32, 32],
            SplitMix64::new(4).uniform_vec(4 * 3 * 32 * 32, -1.0, 1.0),
        )
        .unwrap();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let want = pool.install(|| net.forward(&x)).unwrap();
        let mut ws = Workspace::new();
        ws.per_thread.resize_with(2, Default::default);
        for slot in &ws.per_thread {
            // Locked for good: every image finds its worker's slot taken.
            std::mem::forget(slot.lock().unwrap());
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut y = Tensor::zeros(want.shape()).unwrap();
            let r = pool.install(|| net.forward_into(x.view(), y.view_mut(), &mut ws));
            let _ = tx.send(r.map(|()| (y, want)));
        });
        let (got, want) = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the batch waited for a workspace its worker's own task held")
            .unwrap();
        let bits = |t: &Tensor| t.as_slice().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want));
    }
}
