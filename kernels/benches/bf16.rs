//! The bf16 1x1 GEMM (`conv1x1_bf16_8x48__avx512bf16`) on the MobileOne 1x1
//! layer shapes, one thread, hot caches, reported as FLOP/s with
//! FLOPs = 2 * cin * cout * h * w, next to the in-process `vdpbf16ps` peak
//! (group `bf16_peak`, 24 independent chains; 12 and 16 to show where the
//! loop stops being latency-bound), so each layer reads as a fraction of the
//! peak measured in the same run.
//!
//! Both entry points are measured: `f32in` converts the input to the pair
//! panel inside the call (what a layer with f32 activations pays), `paired`
//! reads a panel made beforehand (a producer writing bf16 pairs).
//!
//! Only the hardware path is measured: the software model is a test and
//! simulation aid, thousands of times slower. On a CPU without AVX512_BF16
//! the bench prints why and measures nothing.
//!
//! `cargo bench -p repconv-kernels --bench bf16`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use repconv_kernels::Activation;
use repconv_kernels::bf16::conv1x1::kernel_name;
use repconv_kernels::bf16::peak::dpbf16_loop_chains;
use repconv_kernels::bf16::{
    Bf16Isa, Conv1x1Bf16Args, Conv1x1Bf16PairedArgs, conv1x1_bf16, conv1x1_bf16_paired, pack_panel,
    pack_weights, packed_len, panel_len, scratch_len,
};
use std::hint::black_box;

/// `(cin, cout, h = w)`: the MobileOne S0 and S1 1x1 layers (the layer tables
/// of `repconv_cli::shapes`).
const SHAPES: &[(usize, usize, usize)] = &[
    (48, 48, 56),
    (48, 128, 28),
    (128, 128, 28),
    (128, 256, 14),
    (256, 256, 14),
    (256, 1024, 7),
    // S1
    (96, 96, 56),
    (192, 192, 28),
    (512, 512, 14),
];

fn bench(c: &mut Criterion) {
    let isa = match Bf16Isa::native() {
        Ok(isa) => isa,
        Err(e) => {
            eprintln!("bf16 bench: nothing to measure: {e}");
            return;
        }
    };
    let mut peak = c.benchmark_group("bf16_peak");
    const ITERS: u64 = 100_000;
    for chains in [12, 16, 24] {
        peak.throughput(Throughput::Elements(ITERS * chains as u64 * 64));
        peak.bench_function(BenchmarkId::new("dpbf16_loop", format!("chains{chains}")), |b| {
            b.iter(|| black_box(dpbf16_loop_chains(isa, chains, black_box(ITERS))))
        });
    }
    peak.finish();

    let mut group = c.benchmark_group("conv1x1_bf16");
    for &(cin, cout, hw) in SHAPES {
        let n = hw * hw;
        // Deterministic data in [-1, 1); no denormals.
        let input: Vec<f32> =
            (0..cin * n).map(|i| ((i * 7919 % 2003) as f32 / 1001.5) - 1.0).collect();
        let weights: Vec<f32> =
            (0..cout * cin).map(|i| ((i * 31 % 17) as f32 / 8.5) - 1.0).collect();
        let bias: Vec<f32> = (0..cout).map(|i| (i % 5) as f32 * 0.1 - 0.2).collect();
        let mut packed = vec![0; packed_len(cout, cin).unwrap()];
        pack_weights(&weights, Some(&bias), cout, cin, &mut packed);
        let mut panel = vec![0; panel_len(cin, n, n).unwrap()];
        pack_panel(isa, &input, n, cin, n, &mut panel, n);
        let mut output = vec![0.0; cout * n];
        let mut scratch = vec![0; scratch_len(cin, n).unwrap()];
        group.throughput(Throughput::Elements((2 * cin * cout * n) as u64));
        let shape = format!("c{cin}o{cout}h{hw}w{hw}s1");
        let name = kernel_name(isa);
        group.bench_function(BenchmarkId::new(format!("{name}/f32in"), &shape), |b| {
            b.iter(|| {
                let args = Conv1x1Bf16Args {
                    m: cout,
                    k: cin,
                    n,
                    packed: &packed,
                    b: black_box(&input),
                    ldb: n,
                    c: &mut output,
                    ldc: n,
                };
                conv1x1_bf16(isa, Activation::Relu, args, &mut scratch);
                black_box(&mut output);
            })
        });
        group.bench_function(BenchmarkId::new(format!("{name}/paired"), &shape), |b| {
            b.iter(|| {
                let args = Conv1x1Bf16PairedArgs {
                    m: cout,
                    k: cin,
                    n,
                    packed: &packed,
                    panel: black_box(&panel),
                    ldp: n,
                    c: &mut output,
                    ldc: n,
                };
                conv1x1_bf16_paired(isa, Activation::Relu, args, &mut scratch);
                black_box(&mut output);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
