//! `repconv sweep-branches`: block latency against the branch count `k`,
//! multi-branch vs fused, for the benchmarked block types, plotted to SVG.

use std::path::PathBuf;

use crate::measure::median_ms;
use clap::Args;
use plotters::prelude::*;
use repconv::Tensor;
use repconv::mobileone::{BlockConfig, MobileOneBlock, SplitMix64, Workspace};

/// Options of `repconv sweep-branches`.
#[derive(Args, Debug, Clone)]
pub struct SweepArgs {
    /// Output SVG file.
    #[arg(long, default_value = "docs/branches.svg")]
    pub out: PathBuf,
    /// Worker threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Timed runs per point (the median is reported).
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
}

const KS: [usize; 6] = [1, 2, 3, 4, 6, 8];

struct Series {
    name: &'static str,
    multi: Vec<(usize, f64)>,
    fused: Vec<(usize, f64)>,
}

/// Runs the sweep, prints the numbers and writes the plot.
pub fn run(args: &SweepArgs) -> Result<(), Box<dyn std::error::Error>> {
    let pool = super::timing_pool(args.threads)?;
    let threads = pool.current_num_threads();
    let blocks = [
        ("stem 3->48 @224 s2", BlockConfig::new(3, 48, 3).with_stride(2), 224),
        ("depthwise 256 @14", BlockConfig::new(256, 256, 3).with_groups(256), 14),
        ("depthwise 128 @28", BlockConfig::new(128, 128, 3).with_groups(128), 28),
        ("pointwise 128->128 @28", BlockConfig::new(128, 128, 1), 28),
    ];
    outln!("sweep-branches: {threads} thread(s), median of {} runs, ms", args.runs);
    outln!("{:<24} {:>3} {:>10} {:>10} {:>8}", "block", "k", "multi", "fused", "ratio");
    let mut all = Vec::new();
    for (name, config, hw) in blocks {
        let shape = [1, config.in_channels, hw, hw];
        let mut rng = SplitMix64::new(1);
        let x = Tensor::from_vec(shape, rng.uniform_vec(shape.iter().product(), -1.0, 1.0))?;
        let mut out = Tensor::zeros(config.output_shape(shape)?)?;
        let mut ws = Workspace::new();
        let mut s = Series { name, multi: Vec::new(), fused: Vec::new() };
        for k in KS {
            let block = MobileOneBlock::random(config.with_branches(k), &mut rng)?;
            let fused = block.reparameterize()?;
            // One checked run of each form first: the timed runs repeat them on
            // the same tensors, so their `expect` cannot fire.
            block.forward_into(x.view(), out.view_mut(), &mut ws)?;
            fused.forward_into(x.view(), out.view_mut(), &mut ws)?;
            let (m, f) = pool.install(|| {
                let m = median_ms(3, args.runs, || {
                    block.forward_into(x.view(), out.view_mut(), &mut ws).expect("ran above")
                });
                let f = median_ms(3, args.runs, || {
                    fused.forward_into(x.view(), out.view_mut(), &mut ws).expect("ran above")
                });
                (m, f)
            });
            outln!("{name:<24} {k:>3} {m:>10.4} {f:>10.4} {:>7.2}x", m / f);
            s.multi.push((k, m));
            s.fused.push((k, f));
        }
        all.push(s);
    }
    plot(&args.out, &all, threads)?;
    outln!("wrote {}", args.out.display());
    Ok(())
}

fn plot(
    path: &std::path::Path,
    all: &[Series],
    threads: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let root = SVGBackend::new(path, (1100, 760)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        &format!("MobileOne block latency vs branch count k ({threads} thread(s)): multi-branch vs reparameterized"),
        ("sans-serif", 18),
    )?;
    for (area, s) in root.split_evenly((2, 2)).iter().zip(all) {
        let ymax = s.multi.iter().chain(&s.fused).map(|p| p.1).fold(0.0, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(area)
            .caption(s.name, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0usize..9usize, 0.0..ymax.max(1e-6))?;
        chart.configure_mesh().x_desc("k (conv branches)").y_desc("ms").draw()?;
        chart
            .draw_series(LineSeries::new(s.multi.iter().copied(), RED.stroke_width(2)))?
            .label("multi-branch")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RED.stroke_width(2)));
        chart.draw_series(s.multi.iter().map(|&p| Circle::new(p, 3, RED.filled())))?;
        chart
            .draw_series(LineSeries::new(s.fused.iter().copied(), BLUE.stroke_width(2)))?
            .label("fused")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLUE.stroke_width(2)));
        chart.draw_series(s.fused.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
