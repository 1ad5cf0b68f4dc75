//! Whole MobileOne-S0 and -S1 networks at 224x224, batch 1, multi-branch vs
//! reparameterized, through `forward_into` with a reused workspace.
//! Throughput is the fused network's FLOPs for both forms (the useful work).
//! Group `batch`: the fused S0 on a batch of 8 with each batch schedule
//! (`BatchSplit`) on 1 and 2 threads; throughput in images.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use repconv::Tensor;
use repconv::mobileone::{BatchSplit, MobileOne, MobileOneConfig, SplitMix64, Variant, Workspace};
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("network");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let shape = [1, 3, 224, 224];
    let x =
        Tensor::from_vec(shape, SplitMix64::new(3).uniform_vec(3 * 224 * 224, -1.0, 1.0)).unwrap();
    for variant in [Variant::S0, Variant::S1] {
        let multi = MobileOne::random(MobileOneConfig::variant(variant), 0).unwrap();
        let fused = multi.reparameterize().unwrap();
        group.throughput(Throughput::Elements(fused.flops(shape).unwrap()));
        let mut logits = Tensor::zeros(fused.output_shape(shape).unwrap()).unwrap();
        let mut ws = Workspace::new();
        for (form, net) in [("multi", &multi), ("fused", &fused)] {
            group.bench_function(BenchmarkId::new(form, variant.name()), |b| {
                b.iter(|| net.forward_into(x.view(), logits.view_mut(), &mut ws).unwrap())
            });
        }
    }
    group.finish();
}

fn batch(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let shape = [8, 3, 224, 224];
    let len = shape.iter().product();
    let x = Tensor::from_vec(shape, SplitMix64::new(4).uniform_vec(len, -1.0, 1.0)).unwrap();
    let fused = MobileOne::random(MobileOneConfig::variant(Variant::S0), 0)
        .unwrap()
        .reparameterize()
        .unwrap();
    let mut logits = Tensor::zeros(fused.output_shape(shape).unwrap()).unwrap();
    group.throughput(Throughput::Elements(shape[0] as u64));
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        for split in [BatchSplit::Images, BatchSplit::WithinImage] {
            let net = fused.clone().with_batch_split(split);
            let mut ws = Workspace::new();
            let id = BenchmarkId::new(format!("s0x8/{split:?}"), format!("{threads}t"));
            group.bench_function(id, |b| {
                pool.install(|| {
                    b.iter(|| net.forward_into(x.view(), logits.view_mut(), &mut ws).unwrap())
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench, batch);
criterion_main!(benches);
