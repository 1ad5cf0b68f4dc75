//! Every kernel at every MobileOne-S0/S1 layer shape and the generic shapes,
//! through `Conv2d` (bias + ReLU, 1 thread), on every ISA this CPU has (the
//! benchmark ids are the registry's kernel names, which carry the ISA), next
//! to the general im2col path on the same shape as the baseline. Throughput
//! is in FLOPs (2 per MAC).
//!
//! `cargo bench --bench kernels` (add `-- s0.pw` to filter, `-- __avx2` for one ISA).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use repconv::conv::KernelChoice;
use repconv::{Activation, Conv2d, Isa, Parallelism, Tensor};
use repconv_cli::shapes::all_layers;
use std::hint::black_box;

fn kernels(c: &mut Criterion) {
    for layer in all_layers() {
        let params = layer.params();
        let shape = layer.input_shape();
        let (weights, bias, input) = layer.example_data().unwrap();
        let flops = params.flops(shape).unwrap();
        let family = if layer.groups > 1 {
            "dw3x3"
        } else if layer.k == 1 {
            "conv1x1"
        } else {
            "conv3x3"
        };
        let mut group = c.benchmark_group(family);
        group.throughput(Throughput::Elements(flops));
        let id = format!(
            "{}:c{}o{}h{}w{}s{}",
            layer.name, layer.cin, layer.cout, layer.hw, layer.hw, layer.stride
        );
        for isa in Isa::available() {
            for choice in [KernelChoice::Auto, KernelChoice::General] {
                let conv =
                    Conv2d::with_choice(params, &weights, Some(&bias), Activation::Relu, choice)
                        .and_then(|c| c.with_isa(isa))
                        .unwrap()
                        .with_parallelism(Parallelism::Serial);
                let mut out = Tensor::zeros(conv.output_shape(shape).unwrap()).unwrap();
                let bid = BenchmarkId::new(conv.kernel_name(), &id);
                group.bench_with_input(bid, &input, |b, x| {
                    b.iter(|| conv.forward_into(black_box(x.view()), out.view_mut()).unwrap())
                });
            }
        }
        group.finish();
    }
}

/// A few shapes at 1 and 2 threads (rayon pools), planned kernel and general
/// path, to show the thread scaling of both.
fn threads(c: &mut Criterion) {
    let picks = [
        "s0.pw.128x128@28",
        "s1.pw.512x512@14",
        "dense3x3.64@56",
        "s0.stem.3x48@224/2",
        "s0.dw.128@28",
    ];
    let mut group = c.benchmark_group("threads");
    for layer in all_layers().filter(|l| picks.contains(&l.name)) {
        let params = layer.params();
        let shape = layer.input_shape();
        let (weights, bias, input) = layer.example_data().unwrap();
        group.throughput(Throughput::Elements(params.flops(shape).unwrap()));
        for choice in [KernelChoice::Auto, KernelChoice::General] {
            let conv = Conv2d::with_choice(params, &weights, Some(&bias), Activation::Relu, choice)
                .unwrap();
            let mut out = Tensor::zeros(conv.output_shape(shape).unwrap()).unwrap();
            for n in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
                let id = format!("{}:{}t", layer.name, n);
                group.bench_with_input(
                    BenchmarkId::new(conv.kernel_name(), &id),
                    &input,
                    |b, x| {
                        pool.install(|| {
                            b.iter(|| {
                                conv.forward_into(black_box(x.view()), out.view_mut()).unwrap()
                            })
                        })
                    },
                );
            }
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2))
        .sample_size(30);
    targets = kernels, threads
}
criterion_main!(benches);
