//! The main job (no subcommand): MobileOne multi-branch vs reparameterized on
//! one network: agreement of the two forms, then latency, speedup and
//! effective throughput against the in-process FMA peak.

use crate::measure::{fma_peak_gflops, median_ms};
use clap::Args;
use repconv::Tensor;
use repconv::mobileone::{MobileOne, MobileOneConfig, SplitMix64, Variant, Workspace};
use serde::Serialize;

use crate::compare;

/// Options of the main job.
#[derive(Args, Debug, Clone)]
pub struct MainArgs {
    /// Network variant: s0, s1, s2, s3 or s4.
    #[arg(long, default_value = "s0")]
    pub variant: Variant,
    /// Input height and width.
    #[arg(long, default_value_t = 224)]
    pub size: usize,
    /// Batch size.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Worker threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Timed runs per form (the median is reported), after 3 warm-up runs.
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// One JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Seed of the random weights and input.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Instruction set: avx512, avx2, portable or best (default: $REPCONV_ISA,
    /// else the best this CPU has).
    #[arg(long)]
    pub isa: Option<String>,
}

/// The ISA named on the command line, else the process default.
pub(crate) fn chosen_isa(name: Option<&str>) -> Result<repconv::Isa, repconv::IsaError> {
    match name {
        Some(n) => repconv::Isa::from_name(n),
        None => repconv::Isa::from_env(),
    }
}

#[derive(Serialize)]
struct Report {
    variant: String,
    cpu: String,
    isa: &'static str,
    size: usize,
    batch: usize,
    threads: usize,
    multi_ms: f64,
    fused_ms: f64,
    speedup: f64,
    max_abs_diff: f64,
    max_rel_diff: f64,
    argmax_equal: bool,
    fused_gflops: f64,
    peak_gflops: f64,
}

fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold(0, |best, (i, x)| if *x > v[best] { i } else { best })
}

/// Runs the main job.
pub fn run(args: &MainArgs) -> Result<(), Box<dyn std::error::Error>> {
    let pool = super::timing_pool(args.threads)?;
    let threads = pool.current_num_threads();
    let shape = [args.batch, 3, args.size, args.size];
    let config = MobileOneConfig::variant(args.variant);
    let isa = chosen_isa(args.isa.as_deref())?;
    let (multi, fused, x) = pool.install(|| -> Result<_, repconv::Error> {
        let multi = MobileOne::random(config, args.seed)?.with_isa(isa)?;
        let fused = multi.reparameterize()?;
        let mut rng = SplitMix64::new(args.seed ^ 0x5EED);
        let x = Tensor::from_vec(shape, rng.uniform_vec(shape.iter().product(), -1.0, 1.0))?;
        Ok((multi, fused, x))
    })?;
    let out_shape = fused.output_shape(shape)?;
    let (mut a, mut b) = (Tensor::zeros(out_shape)?, Tensor::zeros(out_shape)?);
    let (mut ws_multi, mut ws_fused) = (Workspace::new(), Workspace::new());

    // Agreement of the two forms on the logits.
    pool.install(|| -> Result<(), repconv::Error> {
        multi.forward_into(x.view(), a.view_mut(), &mut ws_multi)?;
        fused.forward_into(x.view(), b.view_mut(), &mut ws_fused)
    })?;
    // NaN-aware: a NaN or infinity in one form only is an infinite difference.
    let max_abs_diff = compare::max_abs_diff(a.as_slice(), b.as_slice());
    let max_logit = compare::max_abs_finite(a.as_slice());
    let max_rel_diff = compare::relative(max_abs_diff, max_logit);
    let classes = out_shape[1];
    let argmax_equal = a
        .as_slice()
        .chunks(classes)
        .zip(b.as_slice().chunks(classes))
        .all(|(p, q)| argmax(p) == argmax(q));

    // Timing (the workspaces are already sized: nothing is allocated). Both
    // forms ran above on these very tensors with `?`, so the `expect`s below
    // cannot fire.
    let (multi_ms, fused_ms) = pool.install(|| {
        let m = median_ms(3, args.runs.max(1), || {
            multi.forward_into(x.view(), a.view_mut(), &mut ws_multi).expect("ran above");
        });
        let f = median_ms(3, args.runs.max(1), || {
            fused.forward_into(x.view(), b.view_mut(), &mut ws_fused).expect("ran above");
        });
        (m, f)
    });
    let flops = fused.flops(shape)? as f64;
    let multi_flops = multi.flops(shape)? as f64;
    let peak = fma_peak_gflops(isa, threads)?;
    let report = Report {
        variant: args.variant.name().to_string(),
        cpu: crate::machine::cpu_description(),
        isa: isa.name(),
        size: args.size,
        batch: args.batch,
        threads,
        multi_ms,
        fused_ms,
        speedup: multi_ms / fused_ms,
        max_abs_diff,
        max_rel_diff,
        argmax_equal,
        fused_gflops: flops / fused_ms / 1e6,
        peak_gflops: peak,
    };
    if args.json {
        outln!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    outln!("CPU: {}", report.cpu);
    outln!(
        "MobileOne-{} {}x{} batch {}: {} thread(s), ISA {} ({} lanes), in-process FMA peak {:.1} GFLOP/s",
        args.variant.name().to_uppercase(),
        args.size,
        args.size,
        args.batch,
        threads,
        isa,
        isa.lanes(),
        peak
    );
    outln!(
        "fused network {:.1} MFLOP (multi-branch convolutions {:.1} MFLOP, {:.2}x)",
        flops / 1e6,
        multi_flops / 1e6,
        multi_flops / flops
    );
    outln!(
        "agreement: max |diff| {:.3e}, max relative diff {:.3e} (of max |logit| {:.3}), argmax {}",
        max_abs_diff,
        max_rel_diff,
        max_logit,
        if argmax_equal { "equal" } else { "DIFFERENT" }
    );
    outln!("{:<14} {:>10} {:>9} {:>9} {:>7}", "form", "median ms", "speedup", "GFLOP/s", "%peak");
    for (form, ms) in [("multi-branch", multi_ms), ("fused", fused_ms)] {
        let g = flops / ms / 1e6;
        outln!(
            "{:<14} {:>10.3} {:>8.2}x {:>9.1} {:>6.1}%",
            form,
            ms,
            multi_ms / ms,
            g,
            100.0 * g / peak
        );
    }
    outln!(
        "(GFLOP/s = fused-network FLOPs / time for both forms; median of {} runs after 3 warm-up runs)",
        args.runs.max(1)
    );
    Ok(())
}
