//! MobileOne checkpoints in safetensors, with timm's parameter names
//! (`timm/models/byobnet.py`, `MobileOneBlock` inside `ByobNet`).
//!
//! Names, per block prefix `stem` or `stages.{s}.{i}`:
//!
//! | form | tensors |
//! |---|---|
//! | train-time | `conv_kxk.{b}.conv.weight`, `conv_kxk.{b}.bn.{weight,bias,running_mean,running_var}`, `conv_scale.conv.weight` + `conv_scale.bn.*` (kernel > 1), `identity.{weight,bias,running_mean,running_var}` (in == out, stride 1) |
//! | fused | `reparam_conv.{weight,bias}` |
//! | both (S4's SE) | `attn.fc1.{weight,bias}`, `attn.fc2.{weight,bias}` |
//!
//! and the head `head.fc.{weight,bias}`. BatchNorm `…num_batches_tracked`
//! counters are skipped on load and written (as 0) on save, so a saved
//! train-form file has exactly the keys of timm's `state_dict()`.
//!
//! Loading ([`load_bytes`], [`load`]) accepts F32, F16 and BF16 tensors
//! (converted to f32), infers the variant from the tensor shapes unless
//! [`LoadOptions::variant`] is set, takes `num_classes` from `head.fc.weight`,
//! the number of conv branches of each block from its `conv_kxk.{b}` tensors,
//! and each block's form from whether it has `reparam_conv.weight` (so a
//! network may mix forms). Padding is always `kernel / 2`, whatever produced
//! the file. Every mismatch is an [`Error`] naming the tensor: missing
//! ([`Error::MissingTensor`]), extra ([`Error::UnexpectedTensor`]), wrong shape
//! ([`Error::TensorShape`]), wrong dtype ([`Error::TensorDtype`]), unusable
//! values ([`Error::TensorValue`]), truncated file ([`Error::TruncatedFile`]),
//! or not safetensors at all ([`Error::NotSafetensors`]). No input bytes make
//! the loader panic.
//!
//! Saving ([`to_bytes`], [`save`]) writes f32 tensors in the same names, in
//! the network's current form, so timm loads a fused file into
//! `reparameterize_model(timm.create_model(...))` and a train-form file into
//! `timm.create_model(...)` with `load_state_dict(strict=True)`.
//!
//! ```
//! use repconv::mobileone::{MobileOne, MobileOneConfig, Variant};
//! use repconv::weights::{self, Form, LoadOptions};
//!
//! let net = MobileOne::random(MobileOneConfig::variant(Variant::S0).with_num_classes(10), 1)?;
//! let bytes = weights::to_bytes(&net.reparameterize()?)?;
//! let loaded = weights::load_bytes(&bytes, &LoadOptions::default())?;
//! assert_eq!(weights::form(&loaded), Form::Fused);
//! assert_eq!(loaded.config().num_classes, 10);
//! # Ok::<(), repconv::Error>(())
//! ```

mod file;

use std::path::Path;

use crate::error::{Error, Result};
use crate::mobileone::{
    BatchNorm2d, Block, BlockConfig, ConvBn, Linear, MobileOne, MobileOneBlock, MobileOneConfig,
    ReparamBlock, SqueezeExcite, Variant, se_channels,
};
use crate::tensor::Tensor;
use repconv_kernels::Isa;

use file::{OutTensor, TensorFile};
pub use file::{read_file, write_file_atomic};

/// BatchNorm epsilon of timm's MobileOne (PyTorch's default), which
/// checkpoints do not store.
pub const TIMM_BN_EPS: f32 = 1e-5;

/// How to interpret a checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadOptions {
    /// The variant; `None` infers it from the stem and stage widths.
    pub variant: Option<Variant>,
    /// BatchNorm epsilon (not stored in checkpoints); timm uses 1e-5.
    pub bn_eps: f32,
    /// The instruction set the network's kernels use; `None` for the
    /// process default ([`Isa::from_env`], whose error the load then
    /// returns). A given ISA never consults `REPCONV_ISA`.
    pub isa: Option<Isa>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { variant: None, bn_eps: TIMM_BN_EPS, isa: None }
    }
}

impl LoadOptions {
    /// Options with a fixed variant.
    pub fn with_variant(mut self, variant: Option<Variant>) -> Self {
        self.variant = variant;
        self
    }

    /// Options with a fixed instruction set (`None`: the process default).
    pub fn with_isa(mut self, isa: Option<Isa>) -> Self {
        self.isa = isa;
        self
    }
}

/// Which form a network (or file) is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// Every block in its train-time multi-branch form.
    MultiBranch,
    /// Every block reparameterized (`reparam_conv`).
    Fused,
    /// Some blocks of each.
    Mixed,
}

impl Form {
    /// `"multi-branch"`, `"fused"` or `"mixed"`.
    pub fn name(self) -> &'static str {
        match self {
            Form::MultiBranch => "multi-branch",
            Form::Fused => "fused",
            Form::Mixed => "mixed",
        }
    }
}

/// The form of a network's blocks.
pub fn form(net: &MobileOne) -> Form {
    let blocks = net.blocks();
    let fused = blocks.iter().filter(|(_, b)| b.is_reparameterized()).count();
    if fused == blocks.len() {
        Form::Fused
    } else if fused == 0 {
        Form::MultiBranch
    } else {
        Form::Mixed
    }
}

/// `prefix.name`, or `name` when `prefix` is empty.
fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() { name.to_string() } else { format!("{prefix}.{name}") }
}

// ---------------------------------------------------------------------------
// Loading.

/// Loads a MobileOne network from the bytes of a safetensors file in timm's
/// names (see the [module docs](self)).
pub fn load_bytes(bytes: &[u8], options: &LoadOptions) -> Result<MobileOne> {
    let mut file = TensorFile::parse(bytes)?;
    let config = network_config(&file, options)?;
    let isa = match options.isa {
        Some(isa) => isa,
        None => Isa::from_env()?,
    };
    let (stem_cfg, stage_cfgs) = config.block_configs()?;
    let eps = options.bn_eps;
    let stem = load_block(&mut file, "stem", stem_cfg, eps, isa)?;
    let mut stages = Vec::with_capacity(stage_cfgs.len());
    for (s, cfgs) in stage_cfgs.iter().enumerate() {
        let mut blocks = Vec::with_capacity(cfgs.len());
        for (i, &cfg) in cfgs.iter().enumerate() {
            blocks.push(load_block(&mut file, &format!("stages.{s}.{i}"), cfg, eps, isa)?);
        }
        stages.push(blocks);
    }
    let (classes, features) = (config.num_classes, config.num_features());
    let weight = file.take("head.fc.weight", &[classes, features])?;
    let bias = file.take("head.fc.bias", &[classes])?;
    let head = Linear::new(features, classes, weight, bias)?;
    file.check_all_taken()?;
    MobileOne::from_parts(config, stem, stages, head)
}

/// Loads a MobileOne network from a safetensors file (see [`load_bytes`]).
pub fn load(path: impl AsRef<Path>, options: &LoadOptions) -> Result<MobileOne> {
    load_bytes(&read_file(path)?, options)
}

/// Loads one block from a safetensors file holding only that block's tensors
/// under block-relative names (`conv_kxk.0.conv.weight`, …,
/// `reparam_conv.weight`, `attn.fc1.weight`). `config` gives the geometry and
/// SE; the form and the number of conv branches come from the file.
pub fn load_block_bytes(bytes: &[u8], config: BlockConfig, bn_eps: f32) -> Result<Block> {
    let mut file = TensorFile::parse(bytes)?;
    let block = load_block(&mut file, "", config, bn_eps, Isa::from_env()?)?;
    file.check_all_taken()?;
    Ok(block)
}

/// Output channels of a block in the file (either form), if present.
fn block_out_channels(file: &TensorFile<'_>, prefix: &str) -> Option<(usize, Vec<usize>)> {
    ["reparam_conv.weight", "conv_kxk.0.conv.weight"].iter().find_map(|n| {
        let shape = file.shape(&join(prefix, n))?;
        Some((*shape.first()?, shape))
    })
}

/// The network configuration: the variant (given or inferred from widths),
/// `in_channels` from the stem, `num_classes` from the head, `k` from
/// `stages.0.0`.
fn network_config(file: &TensorFile<'_>, options: &LoadOptions) -> Result<MobileOneConfig> {
    let stem = block_out_channels(file, "stem");
    let in_channels = match &stem {
        Some((_, shape)) if shape.len() == 4 => shape[1],
        _ => 3,
    };
    let stage_widths: Vec<Option<usize>> = (0..4)
        .map(|s| block_out_channels(file, &format!("stages.{s}.1")).map(|(c, _)| c))
        .collect();
    let variant = match options.variant {
        Some(v) => v,
        None => {
            let matches = |v: &Variant| {
                let c = MobileOneConfig::variant(*v);
                stem.as_ref().is_none_or(|(ch, _)| *ch == c.stem_channels())
                    && stage_widths
                        .iter()
                        .zip(c.stage_channels())
                        .all(|(got, want)| got.is_none_or(|g| g == want))
            };
            let found: Vec<Variant> = Variant::ALL.into_iter().filter(matches).collect();
            match found[..] {
                [v] => v,
                _ => {
                    let widths: Vec<String> = stage_widths
                        .iter()
                        .map(|w| w.map_or("?".to_string(), |w| w.to_string()))
                        .collect();
                    return Err(Error::invalid(
                        "variant",
                        format!(
                            "cannot infer it from the tensor shapes (stem {} channels, stages [{}]): \
                             matches {}; name it explicitly",
                            stem.as_ref().map_or("?".to_string(), |(c, _)| c.to_string()),
                            widths.join(", "),
                            if found.is_empty() {
                                "none of s0..s4".to_string()
                            } else {
                                found.iter().map(|v| v.name()).collect::<Vec<_>>().join(", ")
                            }
                        ),
                    ));
                }
            }
        }
    };
    let mut config = MobileOneConfig::variant(variant);
    config.in_channels = in_channels;
    if let Some(shape) = file.shape("head.fc.weight")
        && let [classes, _] = shape[..]
    {
        config.num_classes = classes;
    }
    let k = count_branches(file, "stages.0.0");
    if k > 0 {
        config.num_conv_branches = k;
    }
    Ok(config)
}

/// Number of consecutive `conv_kxk.{b}.conv.weight` tensors of a block.
fn count_branches(file: &TensorFile<'_>, prefix: &str) -> usize {
    (0..1024).take_while(|b| file.has(&join(prefix, &format!("conv_kxk.{b}.conv.weight")))).count()
}

fn load_bn(
    file: &mut TensorFile<'_>,
    prefix: &str,
    channels: usize,
    eps: f32,
) -> Result<BatchNorm2d> {
    let shape = [channels];
    let gamma = file.take(&join(prefix, "weight"), &shape)?;
    let beta = file.take(&join(prefix, "bias"), &shape)?;
    let mean = file.take(&join(prefix, "running_mean"), &shape)?;
    let var_name = join(prefix, "running_var");
    let var = file.take(&var_name, &shape)?;
    if let Some(i) = var.iter().position(|v| f64::from(*v) + f64::from(eps) <= 0.0) {
        return Err(Error::TensorValue {
            name: var_name,
            reason: format!("element {i} is {}, and variance + eps must be positive", var[i]),
        });
    }
    BatchNorm2d::new(gamma, beta, mean, var, eps)
}

fn load_conv_bn(
    file: &mut TensorFile<'_>,
    prefix: &str,
    params: crate::Conv2dParams,
    eps: f32,
    isa: Isa,
) -> Result<ConvBn> {
    let shape = [params.out_channels, params.in_per_group(), params.kernel[0], params.kernel[1]];
    let weights = file.take(&join(prefix, "conv.weight"), &shape)?;
    let bn = load_bn(file, &join(prefix, "bn"), params.out_channels, eps)?;
    ConvBn::new_on(params, &weights, bn, isa)
}

fn load_se(file: &mut TensorFile<'_>, prefix: &str, channels: usize) -> Result<SqueezeExcite> {
    let rd = se_channels(channels);
    let fc1_weight = file.take(&join(prefix, "fc1.weight"), &[rd, channels, 1, 1])?;
    let fc1_bias = file.take(&join(prefix, "fc1.bias"), &[rd])?;
    let fc2_weight = file.take(&join(prefix, "fc2.weight"), &[channels, rd, 1, 1])?;
    let fc2_bias = file.take(&join(prefix, "fc2.bias"), &[channels])?;
    SqueezeExcite::new(channels, fc1_weight, fc1_bias, fc2_weight, fc2_bias)
}

/// Loads the block under `prefix` with `config`'s geometry and SE onto
/// `isa`'s kernels; its form and branch count come from the file.
fn load_block(
    file: &mut TensorFile<'_>,
    prefix: &str,
    mut config: BlockConfig,
    eps: f32,
    isa: Isa,
) -> Result<Block> {
    let attn = if config.use_se {
        Some(load_se(file, &join(prefix, "attn"), config.out_channels)?)
    } else {
        None
    };
    let params = config.conv_params();
    let weight_shape = [config.out_channels, params.in_per_group(), config.kernel, config.kernel];
    if file.has(&join(prefix, "reparam_conv.weight")) {
        let weights = file.take(&join(prefix, "reparam_conv.weight"), &weight_shape)?;
        let bias = file.take(&join(prefix, "reparam_conv.bias"), &[config.out_channels])?;
        return Ok(Block::Reparam(ReparamBlock::new_on(config, &weights, &bias, attn, isa)?));
    }
    let k = count_branches(file, prefix);
    if k > 0 {
        config.num_conv_branches = k;
    }
    let conv_kxk = (0..config.num_conv_branches)
        .map(|b| load_conv_bn(file, &join(prefix, &format!("conv_kxk.{b}")), params, eps, isa))
        .collect::<Result<Vec<_>>>()?;
    let conv_scale = if config.has_scale() {
        Some(load_conv_bn(file, &join(prefix, "conv_scale"), config.scale_params(), eps, isa)?)
    } else {
        None
    };
    let identity = if config.has_identity() {
        Some(load_bn(file, &join(prefix, "identity"), config.out_channels, eps)?)
    } else {
        None
    };
    Ok(Block::MultiBranch(MobileOneBlock::from_parts(
        config, conv_kxk, conv_scale, identity, attn,
    )?))
}

// ---------------------------------------------------------------------------
// Saving.

fn conv_shape(p: &crate::Conv2dParams) -> Vec<usize> {
    vec![p.out_channels, p.in_per_group(), p.kernel[0], p.kernel[1]]
}

fn push_bn(out: &mut Vec<OutTensor>, prefix: &str, bn: &BatchNorm2d) {
    let c = vec![bn.channels()];
    out.push(OutTensor::f32(join(prefix, "weight"), c.clone(), bn.gamma()));
    out.push(OutTensor::f32(join(prefix, "bias"), c.clone(), bn.beta()));
    out.push(OutTensor::f32(join(prefix, "running_mean"), c.clone(), bn.running_mean()));
    out.push(OutTensor::f32(join(prefix, "running_var"), c, bn.running_var()));
    out.push(OutTensor::batch_counter(join(prefix, "num_batches_tracked")));
}

fn push_conv_bn(out: &mut Vec<OutTensor>, prefix: &str, b: &ConvBn) {
    let conv = b.conv();
    out.push(OutTensor::f32(
        join(prefix, "conv.weight"),
        conv_shape(conv.params()),
        conv.weights(),
    ));
    push_bn(out, &join(prefix, "bn"), b.bn());
}

fn push_se(out: &mut Vec<OutTensor>, prefix: &str, se: &SqueezeExcite) {
    let (c, rd) = (se.channels(), se.rd_channels());
    out.push(OutTensor::f32(join(prefix, "fc1.weight"), vec![rd, c, 1, 1], se.fc1_weight()));
    out.push(OutTensor::f32(join(prefix, "fc1.bias"), vec![rd], se.fc1_bias()));
    out.push(OutTensor::f32(join(prefix, "fc2.weight"), vec![c, rd, 1, 1], se.fc2_weight()));
    out.push(OutTensor::f32(join(prefix, "fc2.bias"), vec![c], se.fc2_bias()));
}

fn push_block(out: &mut Vec<OutTensor>, prefix: &str, block: &Block) {
    let attn = match block {
        Block::MultiBranch(b) => {
            for (i, branch) in b.conv_kxk().iter().enumerate() {
                push_conv_bn(out, &join(prefix, &format!("conv_kxk.{i}")), branch);
            }
            if let Some(s) = b.conv_scale() {
                push_conv_bn(out, &join(prefix, "conv_scale"), s);
            }
            if let Some(bn) = b.identity() {
                push_bn(out, &join(prefix, "identity"), bn);
            }
            b.attn()
        }
        Block::Reparam(b) => {
            let conv = b.reparam_conv();
            let c = conv.params().out_channels;
            let zeros = vec![0.0; c];
            let bias = conv.bias().unwrap_or(&zeros);
            out.push(OutTensor::f32(
                join(prefix, "reparam_conv.weight"),
                conv_shape(conv.params()),
                conv.weights(),
            ));
            out.push(OutTensor::f32(join(prefix, "reparam_conv.bias"), vec![c], bias));
            b.attn()
        }
    };
    if let Some(se) = attn {
        push_se(out, &join(prefix, "attn"), se);
    }
}

fn network_tensors(net: &MobileOne) -> Vec<OutTensor> {
    let mut out = Vec::new();
    for (name, block) in net.blocks() {
        push_block(&mut out, &name, block);
    }
    let fc = net.head_fc();
    out.push(OutTensor::f32(
        "head.fc.weight".into(),
        vec![fc.out_features(), fc.in_features()],
        fc.weight(),
    ));
    out.push(OutTensor::f32("head.fc.bias".into(), vec![fc.out_features()], fc.bias()));
    out
}

/// The network as safetensors bytes in timm's names (f32), in its current
/// form (block by block).
pub fn to_bytes(net: &MobileOne) -> Result<Vec<u8>> {
    file::serialize(&network_tensors(net))
}

/// Writes the network to `path` (see [`to_bytes`]) through a temporary file
/// in the same directory, so `path` never holds a partial file; replaces an
/// existing file only when `overwrite`.
pub fn save(net: &MobileOne, path: impl AsRef<Path>, overwrite: bool) -> Result<()> {
    write_file_atomic(path, &to_bytes(net)?, overwrite)
}

/// One block as safetensors bytes under block-relative names (the inverse of
/// [`load_block_bytes`]).
pub fn block_to_bytes(block: &Block) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    push_block(&mut out, "", block);
    file::serialize(&out)
}

/// Number of parameters a checkpoint of the network holds in its current
/// form (every float tensor [`to_bytes`] writes; BN running statistics
/// included, step counters not).
pub fn parameter_count(net: &MobileOne) -> usize {
    network_tensors(net)
        .iter()
        .filter(|t| t.dtype == safetensors::Dtype::F32)
        .map(|t| t.shape.iter().product::<usize>())
        .sum()
}

// ---------------------------------------------------------------------------
// Plain tensors (inputs and outputs of `repconv run`, test fixtures).

/// A named f32 tensor of any rank.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedTensor {
    /// Its name in the file.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

impl NamedTensor {
    /// The tensor as a 4-D NCHW [`Tensor`] (errors unless it has rank 4).
    pub fn to_nchw(&self) -> Result<Tensor> {
        let shape: [usize; 4] = self.shape[..].try_into().map_err(|_| Error::TensorValue {
            name: self.name.clone(),
            reason: format!("expected a 4-D NCHW tensor, found shape {:?}", self.shape),
        })?;
        Tensor::from_slice(shape, &self.data)
    }
}

/// Every tensor of a safetensors file (F32, F16 or BF16, converted to f32),
/// sorted by name.
pub fn read_tensors(bytes: &[u8]) -> Result<Vec<NamedTensor>> {
    Ok(TensorFile::parse(bytes)?
        .all_f32()?
        .into_iter()
        .map(|(name, shape, data)| NamedTensor { name, shape, data })
        .collect())
}

/// The one 4-D tensor of a safetensors file (any name), as NCHW.
pub fn read_single_nchw(bytes: &[u8]) -> Result<(String, Tensor)> {
    let tensors = read_tensors(bytes)?;
    match &tensors[..] {
        [t] if t.shape.len() == 4 => Ok((t.name.clone(), t.to_nchw()?)),
        [t] => Err(Error::TensorValue {
            name: t.name.clone(),
            reason: format!("expected a 4-D NCHW tensor, found shape {:?}", t.shape),
        }),
        _ => Err(Error::invalid(
            "input file",
            format!("must hold exactly one 4-D tensor, holds {}", tensors.len()),
        )),
    }
}

/// Serialises f32 tensors to safetensors bytes.
pub fn tensors_to_bytes(tensors: &[NamedTensor]) -> Result<Vec<u8>> {
    for t in tensors {
        let n = t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if n != Some(t.data.len()) {
            return Err(Error::LengthMismatch {
                what: "named tensor data",
                expected: n.unwrap_or(usize::MAX),
                got: t.data.len(),
            });
        }
    }
    let out: Vec<OutTensor> =
        tensors.iter().map(|t| OutTensor::f32(t.name.clone(), t.shape.clone(), &t.data)).collect();
    file::serialize(&out)
}
