//! `repconv reparam`: fold a train-form checkpoint into its fused form,
//! check both forms agree layer by layer, and write the fused checkpoint.

use std::path::PathBuf;

use clap::Args;
use repconv::Tensor;
use repconv::mobileone::{SplitMix64, Variant};
use repconv::weights::{self, LoadOptions};

use crate::compare;

/// Options of `repconv reparam`.
#[derive(Args, Debug, Clone)]
pub struct ReparamArgs {
    /// The train-form checkpoint (safetensors, timm names).
    #[arg(long)]
    pub weights: PathBuf,
    /// Where to write the fused checkpoint (timm's `reparam_conv` names, f32).
    #[arg(long)]
    pub out: PathBuf,
    /// Overwrite `--out` if it exists.
    #[arg(long)]
    pub force: bool,
    /// The variant (s0..s4); inferred from the tensor shapes when omitted.
    #[arg(long)]
    pub variant: Option<Variant>,
    /// Height and width of the random check input.
    #[arg(long, default_value_t = 224)]
    pub size: usize,
    /// Largest accepted per-layer max |difference|, relative to the layer's
    /// largest finite output; above it nothing is written. A NaN or an
    /// infinity in one form's output but not the other's is an infinite
    /// difference.
    #[arg(long, default_value_t = 1e-3)]
    pub tolerance: f64,
    /// Worker threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// Runs the command.
pub fn run(args: &ReparamArgs) -> Result<(), Box<dyn std::error::Error>> {
    if args.tolerance.is_nan() || args.tolerance < 0.0 {
        return Err(format!("--tolerance {}: must be a number >= 0", args.tolerance).into());
    }
    if !args.force && args.out.exists() {
        return Err(
            format!("{}: already exists (pass --force to overwrite)", args.out.display()).into()
        );
    }
    let pool = super::pool(args.threads)?;
    let options = LoadOptions::default().with_variant(args.variant);
    pool.install(|| -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let net = weights::load(&args.weights, &options)?;
        if net.is_reparameterized() {
            return Err(format!(
                "{}: already fused, nothing to reparameterize",
                args.weights.display()
            )
            .into());
        }
        let fused = net.reparameterize()?;

        // Per-layer check: each block in both forms on the multi-branch
        // activations of a random input.
        let c = net.config().in_channels;
        let shape = [1, c, args.size, args.size];
        let mut rng = SplitMix64::new(0x5EED);
        let mut x = Tensor::from_vec(shape, rng.uniform_vec(shape.iter().product(), -1.0, 1.0))?;
        let input = x.clone();
        outln!("check on a random 1x{c}x{0}x{0} input: max |multi - fused| per layer", args.size);
        outln!("{:<14} {:>12} {:>12} {:>11}", "layer", "max |diff|", "max |out|", "relative");
        // The first layer (or the logits) whose forms disagree: its name and
        // relative difference.
        let mut failed: Option<(String, f64)> = None;
        let mut check = |name: &str, a: &Tensor, b: &Tensor| -> std::io::Result<()> {
            let d = compare::max_abs_diff(a.as_slice(), b.as_slice());
            let m = compare::max_abs_finite(a.as_slice());
            let rel = compare::relative(d, m);
            if failed.is_none() && rel > args.tolerance {
                failed = Some((name.to_string(), rel));
            }
            use std::io::Write as _;
            writeln!(std::io::stdout(), "{name:<14} {d:>12.3e} {m:>12.3e} {rel:>11.3e}")
        };
        for ((name, multi), (_, one)) in net.blocks().into_iter().zip(fused.blocks()) {
            let a = multi.forward(&x)?;
            let b = one.forward(&x)?;
            check(&name, &a, &b)?;
            x = a;
        }
        let (a, b) = (net.forward(&input)?, fused.forward(&input)?);
        check("logits", &a, &b)?;
        if let Some((name, rel)) = failed {
            return Err(format!(
                "layer {name}: the multi-branch and fused forms disagree (relative max |diff| \
                 {rel:.3e} > {:.1e}; NaN or infinity in one form only counts as infinite); \
                 nothing written",
                args.tolerance
            )
            .into());
        }
        weights::save(&fused, &args.out, args.force)?;
        outln!(
            "wrote {} ({} parameters, was {})",
            args.out.display(),
            weights::parameter_count(&fused),
            weights::parameter_count(&net)
        );
        Ok(())
    })
    .map_err(|e| e as Box<dyn std::error::Error>)
}
