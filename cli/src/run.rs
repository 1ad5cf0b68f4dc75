//! `repconv run`: logits of a checkpoint on an input tensor, in f32 or (with
//! `--precision bf16`) with the 1x1 convolutions in bf16.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use repconv::mobileone::Variant;
use repconv::weights::{self, LoadOptions, NamedTensor};

use crate::precision::PrecisionArg;

/// Which form to run.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunForm {
    /// One fused convolution per block (reparameterizes a train-form file first).
    Fused,
    /// The train-time branches (needs a train-form file).
    Multi,
}

/// Options of `repconv run`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The checkpoint (safetensors, timm names, either form).
    #[arg(long)]
    pub weights: PathBuf,
    /// Safetensors file holding one 4-D f32 NCHW tensor (any name).
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write the logits (tensor `logits`, shape [batch, classes]).
    #[arg(long)]
    pub output: PathBuf,
    /// The form to run.
    #[arg(long, value_enum, default_value_t = RunForm::Fused)]
    pub form: RunForm,
    /// The variant (s0..s4); inferred from the tensor shapes when omitted.
    #[arg(long)]
    pub variant: Option<Variant>,
    /// Overwrite `--output` if it exists.
    #[arg(long)]
    pub force: bool,
    /// Worker threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Precision: f32, or bf16 (the 1x1 convolutions round weights and
    /// inputs to bfloat16 and sum in f32; the rest and the logits stay f32).
    /// bf16 needs AVX512_BF16, or REPCONV_BF16=emulated for the slow
    /// software model.
    #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
    pub precision: PrecisionArg,
}

/// Runs the network and writes `logits`.
pub fn run(args: &RunArgs) -> Result<(), Box<dyn std::error::Error>> {
    let pool = super::pool(args.threads)?;
    if !args.force && args.output.exists() {
        return Err(format!(
            "{}: already exists (pass --force to overwrite)",
            args.output.display()
        )
        .into());
    }
    let options = LoadOptions::default().with_variant(args.variant);
    let logits = pool
        .install(|| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
            let net = weights::load(&args.weights, &options)?;
            // Before reparameterizing, which carries the precision over.
            let net = net.with_precision(args.precision.precision())?;
            let (_, x) = weights::read_single_nchw(&weights::read_file(&args.input)?)?;
            let net = match (args.form, weights::form(&net)) {
                (RunForm::Fused, _) => net.reparameterize()?,
                (RunForm::Multi, weights::Form::MultiBranch) => net,
                (RunForm::Multi, form) => {
                    return Err(format!(
                        "{}: holds {} weights; the multi-branch form needs a train-form checkpoint",
                        args.weights.display(),
                        form.name()
                    )
                    .into());
                }
            };
            Ok(net.forward(&x)?)
        })
        .map_err(|e| e as Box<dyn std::error::Error>)?;
    let [n, classes, _, _] = logits.shape();
    let out = NamedTensor { name: "logits".into(), shape: vec![n, classes], data: logits.to_vec() };
    weights::write_file_atomic(&args.output, &weights::tensors_to_bytes(&[out])?, args.force)?;
    Ok(())
}
