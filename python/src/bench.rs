//! `MobileOne.benchmark`: the main job's measurement (`repconv` with no
//! subcommand, cli/src/main_job.rs) on a loaded network instead of a random
//! one, with the CLI's own helpers: a fresh warmed-up pool, agreement of
//! the two forms' logits (NaN-aware), medians of timed runs after 3
//! warm-up runs, and the in-process FMA peak.

use pyo3::prelude::*;
use pyo3::types::PyDict;
use repconv_cli::{compare, machine, measure};
use repconv_rs::Tensor;
use repconv_rs::mobileone::{MobileOne, SplitMix64, Variant, Workspace};

use crate::errors::{self, Kind, raise};

/// The batch the forms run on.
pub(crate) enum Input {
    /// The caller's batch.
    Given(Tensor),
    /// Uniform in [-1, 1) from `seed`, as the main job makes it.
    Random { batch: usize, size: usize, seed: u64 },
}

/// How to measure.
pub(crate) struct Options {
    /// Threads of the timing pool.
    pub threads: usize,
    /// Timed runs per form (the median is reported).
    pub runs: usize,
    /// Whether to measure the FMA peak (about 0.1 s).
    pub peak: bool,
}

/// The main job's table.
pub(crate) struct Report {
    variant: &'static str,
    form: &'static str,
    cpu: String,
    isa: &'static str,
    precision: &'static str,
    shape: [usize; 4],
    threads: usize,
    runs: usize,
    multi_ms: f64,
    fused_ms: f64,
    max_abs_diff: f64,
    max_abs_logit: f64,
    argmax_equal: bool,
    multi_flops: u64,
    fused_flops: u64,
    peak_gflops: Option<f64>,
}

/// Index of the first largest value (the main job's argmax).
fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold(0, |best, (i, x)| if *x > v[best] { i } else { best })
}

/// Runs the measurement on `net`, which must have multi-branch blocks.
pub(crate) fn run(net: &MobileOne, input: Input, options: &Options) -> PyResult<Report> {
    let form = repconv_rs::weights::form(net);
    if net.is_reparameterized() {
        return Err(raise(
            Kind::Param,
            "benchmark compares the multi-branch form with the fused one, and this network is \
             already fused: load the train-form checkpoint",
        ));
    }
    if options.runs == 0 {
        return Err(raise(Kind::Param, "runs: must be >= 1, got 0"));
    }
    let x = match input {
        Input::Given(x) => x,
        Input::Random { batch, size, seed } => {
            let shape = [batch, net.config().in_channels, size, size];
            let len = repconv_rs::tensor::checked_numel("input", shape).map_err(errors::forward)?;
            let mut rng = SplitMix64::new(seed ^ 0x5EED);
            Tensor::from_vec(shape, rng.uniform_vec(len, -1.0, 1.0)).map_err(errors::forward)?
        }
    };
    let shape = x.shape();
    let out_shape = net.output_shape(shape).map_err(errors::forward)?;
    let pool = repconv_cli::timing_pool(options.threads)
        .map_err(|e| raise(Kind::Param, format!("threads: {e}")))?;
    let isa = net.isa();
    let fused = net.reparameterize().map_err(errors::lib)?;
    let (mut a, mut b) = (
        Tensor::zeros(out_shape).map_err(errors::forward)?,
        Tensor::zeros(out_shape).map_err(errors::forward)?,
    );
    let (mut ws_multi, mut ws_fused) = (Workspace::new(), Workspace::new());
    pool.install(|| -> repconv_rs::Result<()> {
        net.forward_into(x.view(), a.view_mut(), &mut ws_multi)?;
        fused.forward_into(x.view(), b.view_mut(), &mut ws_fused)
    })
    .map_err(errors::forward)?;
    let max_abs_diff = compare::max_abs_diff(a.as_slice(), b.as_slice());
    let max_abs_logit = compare::max_abs_finite(a.as_slice());
    let classes = out_shape[1].max(1);
    let argmax_equal = a
        .as_slice()
        .chunks(classes)
        .zip(b.as_slice().chunks(classes))
        .all(|(p, q)| argmax(p) == argmax(q));
    // Both forms ran above on these very tensors, so these passes succeed;
    // their results are checked all the same.
    let mut failed = None;
    let (multi_ms, fused_ms) = pool.install(|| {
        let m = measure::median_ms(3, options.runs, || {
            if let Err(e) = net.forward_into(x.view(), a.view_mut(), &mut ws_multi) {
                failed = Some(e);
            }
        });
        let f = measure::median_ms(3, options.runs, || {
            if let Err(e) = fused.forward_into(x.view(), b.view_mut(), &mut ws_fused) {
                failed = Some(e);
            }
        });
        (m, f)
    });
    if let Some(e) = failed {
        return Err(errors::forward(e));
    }
    let peak_gflops = if options.peak {
        let threads = pool.current_num_threads();
        Some(
            measure::fma_peak_gflops(isa, threads)
                .map_err(|e| raise(Kind::Param, format!("threads: {e}")))?,
        )
    } else {
        None
    };
    Ok(Report {
        variant: crate::net::variant_of(net.config()).map_or("custom", Variant::name),
        form: form.name(),
        cpu: machine::cpu_description(),
        isa: isa.name(),
        precision: net.precision().name(),
        shape,
        threads: pool.current_num_threads(),
        runs: options.runs,
        multi_ms,
        fused_ms,
        max_abs_diff,
        max_abs_logit,
        argmax_equal,
        multi_flops: net.flops(shape).map_err(errors::forward)?,
        fused_flops: fused.flops(shape).map_err(errors::forward)?,
        peak_gflops,
    })
}

impl Report {
    /// The report as a dict (keys documented in docs/python.md and the stub).
    pub(crate) fn into_dict(self, py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
        let d = PyDict::new(py);
        let [n, c, h, w] = self.shape;
        let fused_flops = self.fused_flops as f64;
        let gflops = |ms: f64| fused_flops / ms / 1e6;
        d.set_item("variant", self.variant)?;
        d.set_item("form", self.form)?;
        d.set_item("cpu", self.cpu)?;
        d.set_item("isa", self.isa)?;
        d.set_item("precision", self.precision)?;
        d.set_item("shape", (n, c, h, w))?;
        d.set_item("batch", n)?;
        d.set_item("size", if h == w { Some(h) } else { None })?;
        d.set_item("threads", self.threads)?;
        d.set_item("runs", self.runs)?;
        d.set_item("multi_ms", self.multi_ms)?;
        d.set_item("fused_ms", self.fused_ms)?;
        d.set_item("speedup", self.multi_ms / self.fused_ms)?;
        d.set_item("max_abs_diff", self.max_abs_diff)?;
        d.set_item("max_rel_diff", compare::relative(self.max_abs_diff, self.max_abs_logit))?;
        d.set_item("max_abs_logit", self.max_abs_logit)?;
        d.set_item("argmax_equal", self.argmax_equal)?;
        d.set_item("multi_mflop", self.multi_flops as f64 / 1e6)?;
        d.set_item("fused_mflop", fused_flops / 1e6)?;
        d.set_item("multi_gflops", gflops(self.multi_ms))?;
        d.set_item("fused_gflops", gflops(self.fused_ms))?;
        d.set_item("peak_gflops", self.peak_gflops)?;
        Ok(d)
    }
}
