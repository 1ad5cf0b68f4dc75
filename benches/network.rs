//! Whole MobileOne-S0 and -S1 networks at 224x224, batch 1, multi-branch vs
//! reparameterized, through `forward_into` with a reused workspace.
//! Throughput is the fused network's FLOPs for both forms (the useful work).
//! Group `batch`: the fused S0 on a batch of 8 with each batch schedule
//! (`BatchSplit`) on 1 and 2 threads; throughput in images.
//! Group `bf16`: the fused S0 with `Precision::Bf16` (its 1x1 layers on
//! `vdpbf16ps`), next to the same network in f32, where the CPU has
//! AVX512_BF16; elsewhere the group prints why it is skipped. The software
//! model (`REPCONV_BF16=emulated`) is never timed: its speed says nothing
//! about bf16 hardware.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use repconv::mobileone::{BatchSplit, MobileOne, MobileOneConfig, SplitMix64, Variant, Workspace};
use repconv::{Isa, Precision, Tensor};
use repconv_kernels::bf16::Bf16Isa;
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

/// The fused S0 in bf16 on the hardware, or why not: no AVX512_BF16, the
/// library's refusal (e.g. an ISA other than avx512 through `REPCONV_ISA`),
/// or only the software model on offer.
fn bf16_network(fused: &MobileOne) -> Result<MobileOne, String> {
    Bf16Isa::native().map_err(|e| e.to_string())?;
    let net = fused.clone().with_precision(Precision::Bf16).map_err(|e| e.to_string())?;
    let emulated = net.blocks().iter().any(|(_, b)| match b {
        repconv::mobileone::Block::Reparam(r) => {
            r.reparam_conv().kernel_name().ends_with("__emulated")
        }
        repconv::mobileone::Block::MultiBranch(_) => false,
    });
    if emulated {
        return Err(format!(
            "the bf16 kernels would run the software model on ISA {}",
            Isa::from_env().map_or("?", |i| i.name())
        ));
    }
    Ok(net)
}

fn bf16(c: &mut Criterion) {
    let shape = [1, 3, 224, 224];
    let fused = MobileOne::random(MobileOneConfig::variant(Variant::S0), 0)
        .unwrap()
        .reparameterize()
        .unwrap();
    let net = match bf16_network(&fused) {
        Ok(net) => net,
        Err(reason) => {
            println!("network/bf16: skipped: {reason}");
            return;
        }
    };
    let mut group = c.benchmark_group("bf16");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let x =
        Tensor::from_vec(shape, SplitMix64::new(3).uniform_vec(3 * 224 * 224, -1.0, 1.0)).unwrap();
    group.throughput(Throughput::Elements(fused.flops(shape).unwrap()));
    let mut logits = Tensor::zeros(fused.output_shape(shape).unwrap()).unwrap();
    for (precision, net) in [("f32", &fused), ("bf16", &net)] {
        let mut ws = Workspace::new();
        group.bench_function(BenchmarkId::new(format!("fused/{precision}"), "s0"), |b| {
            b.iter(|| net.forward_into(x.view(), logits.view_mut(), &mut ws).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench, batch, bf16);
criterion_main!(benches);
