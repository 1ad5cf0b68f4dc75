//! `repconv info`: what a checkpoint holds.

use std::path::PathBuf;

use clap::Args;
use repconv::mobileone::Variant;
use repconv::weights::{self, LoadOptions};

/// Options of `repconv info`.
#[derive(Args, Debug, Clone)]
pub struct InfoArgs {
    /// The checkpoint (safetensors, timm names, either form).
    #[arg(long)]
    pub weights: PathBuf,
    /// The variant (s0..s4); inferred from the tensor shapes when omitted.
    #[arg(long)]
    pub variant: Option<Variant>,
    /// Worker threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// Prints the variant, form, parameter count and FLOPs at 224x224.
pub fn run(args: &InfoArgs) -> Result<(), Box<dyn std::error::Error>> {
    let pool = super::pool(args.threads)?;
    let options = LoadOptions::default().with_variant(args.variant);
    let net = pool.install(|| weights::load(&args.weights, &options))?;
    let config = net.config();
    let variant = Variant::ALL
        .into_iter()
        .find(|v| {
            let c = repconv::mobileone::MobileOneConfig::variant(*v);
            c.stage_channels() == config.stage_channels()
                && c.stem_channels() == config.stem_channels()
        })
        .map_or("?", Variant::name);
    let shape = [1, config.in_channels, 224, 224];
    let flops = net.flops(shape)?;
    let fused_flops =
        if net.is_reparameterized() { flops } else { net.reparameterize()?.flops(shape)? };
    outln!("file        {}", args.weights.display());
    outln!("variant     mobileone_{variant}");
    outln!("form        {}", weights::form(&net).name());
    outln!(
        "branches    k = {} (stem: {})",
        config.num_conv_branches,
        net.stem().config().num_conv_branches
    );
    outln!(
        "channels    in {}, stem {}, stages {:?}",
        config.in_channels,
        config.stem_channels(),
        config.stage_channels()
    );
    outln!("classes     {}", config.num_classes);
    outln!("parameters  {}", weights::parameter_count(&net));
    outln!(
        "FLOPs       {:.1} MFLOP at 1x{}x224x224 in this form ({:.1} MFLOP fused)",
        flops as f64 / 1e6,
        config.in_channels,
        fused_flops as f64 / 1e6
    );
    Ok(())
}
