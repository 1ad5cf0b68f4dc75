//! The main job (no subcommand): MobileOne multi-branch vs reparameterized on
//! one network: agreement of the two forms, then latency, speedup and
//! effective throughput against the in-process FMA peak. Where bf16 can run
//! (AVX512_BF16 with the avx512 kernels, or the software model when
//! `REPCONV_BF16=emulated`), the fused network again with
//! `Precision::Bf16`, its logits against the multi-branch f32 network's;
//! elsewhere one line saying why not.

use crate::measure::{fma_peak_gflops, median_ms};
use clap::Args;
use repconv::mobileone::{MobileOne, MobileOneConfig, SplitMix64, Variant, Workspace};
use repconv::{Precision, Tensor};
use serde::Serialize;

use crate::{compare, precision};

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
    /// The fused network in bf16, where bf16 can run.
    bf16: Option<Bf16Row>,
    /// Why bf16 cannot run here (the library's message), where it cannot.
    bf16_unavailable: Option<String>,
}

/// The fused network with `Precision::Bf16`, against the multi-branch f32
/// network.
#[derive(Serialize)]
struct Bf16Row {
    /// The bf16 kernel the 1x1 convolutions run.
    kernel: &'static str,
    /// `avx512bf16` (the hardware) or `emulated` (the software model).
    implementation: &'static str,
    /// Whether the times are the software model's (`REPCONV_BF16=emulated`).
    emulated: bool,
    /// Convolutions on the bf16 kernel, of `convs`.
    bf16_convs: usize,
    /// Convolutions of the fused network.
    convs: usize,
    /// Timed runs (the median is reported).
    runs: usize,
    ms: f64,
    /// Multi-branch f32 time / this time.
    speedup: f64,
    /// Fused-network FLOPs / time, as for the other rows.
    gflops: f64,
    /// Of the f32 FMA peak, as the other rows; `None` when emulated.
    pct_peak: Option<f64>,
    /// Agreement of its logits with the multi-branch f32 network's.
    max_abs_diff: f64,
    max_rel_diff: f64,
    argmax_equal: bool,
}

/// Timed runs of the software model at most (it is about 50x slower).
const EMULATED_RUNS: usize = 3;

/// Runs the main job.
pub fn run(args: &MainArgs) -> Result<(), Box<dyn std::error::Error>> {
    let pool = super::timing_pool(args.threads)?;
    let threads = pool.current_num_threads();
    let shape = [args.batch, 3, args.size, args.size];
    let config = MobileOneConfig::variant(args.variant);
    let isa = chosen_isa(args.isa.as_deref())?;
    let (multi, fused, bf16, x) = pool.install(|| -> Result<_, repconv::Error> {
        let multi = MobileOne::random_on(config, args.seed, isa)?;
        let fused = multi.reparameterize()?;
        // The fused network in bf16, or why not (any other error is one).
        let bf16 = match fused.clone().with_precision(Precision::Bf16) {
            Ok(net) => Ok(net),
            Err(e @ repconv::Error::Precision { .. }) => Err(e.to_string()),
            Err(e) => return Err(e),
        };
        let mut rng = SplitMix64::new(args.seed ^ 0x5EED);
        let x = Tensor::from_vec(shape, rng.uniform_vec(shape.iter().product(), -1.0, 1.0))?;
        Ok((multi, fused, bf16, x))
    })?;
    let out_shape = fused.output_shape(shape)?;
    let (mut a, mut b, mut c) =
        (Tensor::zeros(out_shape)?, Tensor::zeros(out_shape)?, Tensor::zeros(out_shape)?);
    let (mut ws_multi, mut ws_fused, mut ws_bf16) =
        (Workspace::new(), Workspace::new(), Workspace::new());

    // Agreement of the forms on the logits.
    pool.install(|| -> Result<(), repconv::Error> {
        multi.forward_into(x.view(), a.view_mut(), &mut ws_multi)?;
        fused.forward_into(x.view(), b.view_mut(), &mut ws_fused)?;
        if let Ok(net) = &bf16 {
            net.forward_into(x.view(), c.view_mut(), &mut ws_bf16)?;
        }
        Ok(())
    })?;
    // NaN-aware: a NaN or infinity in one form only is an infinite difference.
    let classes = out_shape[1];
    let agree = compare::agreement(a.as_slice(), b.as_slice(), classes);
    let agree_bf16 = compare::agreement(a.as_slice(), c.as_slice(), classes);

    // Timing (the workspaces are already sized: nothing is allocated). Every
    // form ran above on these very tensors with `?`, so the `expect`s below
    // cannot fire.
    let runs = args.runs.max(1);
    let bf16_layers = bf16.as_ref().ok().map(precision::bf16_layers);
    let emulated = bf16_layers.as_ref().and_then(|l| l.isa).is_some_and(precision::is_emulated);
    let (warmup_bf16, runs_bf16) = if emulated { (1, runs.min(EMULATED_RUNS)) } else { (3, runs) };
    let (multi_ms, fused_ms, bf16_ms) = pool.install(|| {
        let m = median_ms(3, runs, || {
            multi.forward_into(x.view(), a.view_mut(), &mut ws_multi).expect("ran above");
        });
        let f = median_ms(3, runs, || {
            fused.forward_into(x.view(), b.view_mut(), &mut ws_fused).expect("ran above");
        });
        let h = bf16.as_ref().ok().map(|net| {
            median_ms(warmup_bf16, runs_bf16, || {
                net.forward_into(x.view(), c.view_mut(), &mut ws_bf16).expect("ran above");
            })
        });
        (m, f, h)
    });
    let flops = fused.flops(shape)? as f64;
    let multi_flops = multi.flops(shape)? as f64;
    let peak = fma_peak_gflops(isa, threads)?;
    let bf16_row = match (&bf16_layers, bf16_ms) {
        (Some(layers), Some(ms)) => {
            let gflops = flops / ms / 1e6;
            let implementation = layers.isa.map_or("none", |b| b.name());
            Some(Bf16Row {
                kernel: layers.kernel.unwrap_or("none"),
                implementation,
                emulated,
                bf16_convs: layers.bf16,
                convs: layers.convs,
                runs: runs_bf16,
                ms,
                speedup: multi_ms / ms,
                gflops,
                pct_peak: (!emulated).then_some(100.0 * gflops / peak),
                max_abs_diff: agree_bf16.max_abs_diff,
                max_rel_diff: agree_bf16.max_rel_diff,
                argmax_equal: agree_bf16.argmax_equal,
            })
        }
        _ => None,
    };
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
        max_abs_diff: agree.max_abs_diff,
        max_rel_diff: agree.max_rel_diff,
        argmax_equal: agree.argmax_equal,
        fused_gflops: flops / fused_ms / 1e6,
        peak_gflops: peak,
        bf16: bf16_row,
        bf16_unavailable: bf16.err(),
    };
    if args.json {
        outln!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let equal = |e: bool| if e { "equal" } else { "DIFFERENT" };
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
        agree.max_abs_diff,
        agree.max_rel_diff,
        agree.max_abs_logit,
        equal(agree.argmax_equal)
    );
    if let Some(row) = &report.bf16 {
        outln!(
            "bf16 agreement with multi-branch f32: max |diff| {:.3e}, max |diff| / max |logit| {:.3e}, argmax {} ({} of {} convolutions on {})",
            row.max_abs_diff,
            row.max_rel_diff,
            equal(row.argmax_equal),
            row.bf16_convs,
            row.convs,
            row.kernel
        );
    }
    outln!("{:<22} {:>10} {:>9} {:>9} {:>7}", "form", "median ms", "speedup", "GFLOP/s", "%peak");
    for (form, ms) in [("multi-branch", multi_ms), ("fused", fused_ms)] {
        let g = flops / ms / 1e6;
        outln!(
            "{:<22} {:>10.3} {:>8.2}x {:>9.1} {:>6.1}%",
            form,
            ms,
            multi_ms / ms,
            g,
            100.0 * g / peak
        );
    }
    match (&report.bf16, &report.bf16_unavailable) {
        (Some(row), _) => {
            let form = if row.emulated { "fused bf16 (emulated)" } else { "fused bf16" };
            let pct = row.pct_peak.map_or("-".to_string(), |p| format!("{p:.1}%"));
            outln!(
                "{:<22} {:>10.3} {:>8.2}x {:>9.1} {:>7}",
                form,
                row.ms,
                row.speedup,
                row.gflops,
                pct
            );
        }
        (None, Some(reason)) => outln!("fused bf16: not run: {reason}"),
        (None, None) => {}
    }
    outln!(
        "(GFLOP/s = fused-network FLOPs / time for every form; median of {} runs after 3 warm-up runs)",
        runs
    );
    if let Some(row) = &report.bf16 {
        if row.emulated {
            outln!(
                "(bf16 ran on the kernels' software model ({}=emulated), median of {} run(s) after 1 warm-up: its time is the model's, not bf16 hardware's)",
                repconv::BF16_ENV,
                row.runs
            );
        } else {
            outln!(
                "(bf16: the 1x1 convolutions on vdpbf16ps, the rest f32; %peak of the f32 FMA peak as for the other rows)"
            );
        }
    }
    Ok(())
}
