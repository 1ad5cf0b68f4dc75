//! Multi-branch vs reparameterized MobileOne blocks against the branch count
//! `k`: one group per block type, `k` as the parameter, so criterion's report
//! plots latency against `k`. The fused block is the reparameterization of
//! the same `k`-branch block (its cost does not depend on `k`).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use repconv::Tensor;
use repconv::mobileone::{BlockConfig, MobileOneBlock, SplitMix64, Workspace};
use std::time::Duration;

const KS: [usize; 6] = [1, 2, 3, 4, 6, 8];

/// (group name, block configuration at k = 1, input height = width).
fn blocks() -> [(&'static str, BlockConfig, usize); 4] {
    [
        // MobileOne-S0 stem: dense 3x3 stride 2, 3 -> 48 @ 224x224.
        ("branches/stem_3x48@224s2", BlockConfig::new(3, 48, 3).with_stride(2), 224),
        // Stage-3 depthwise block of S1 (256 channels @ 14x14) and stage-2 of S0 (128 @ 28x28).
        ("branches/dw_256@14", BlockConfig::new(256, 256, 3).with_groups(256), 14),
        ("branches/dw_128@28", BlockConfig::new(128, 128, 3).with_groups(128), 28),
        // Stage-2 pointwise block of S0: 128 -> 128 @ 28x28.
        ("branches/pw_128x128@28", BlockConfig::new(128, 128, 1), 28),
    ]
}

fn bench(c: &mut Criterion) {
    for (name, config, hw) in blocks() {
        let mut group = c.benchmark_group(name);
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_millis(800));
        let shape = [1, config.in_channels, hw, hw];
        let mut rng = SplitMix64::new(1);
        let x =
            Tensor::from_vec(shape, rng.uniform_vec(shape.iter().product(), -1.0, 1.0)).unwrap();
        let fused_flops = config.conv_params().flops(shape).unwrap();
        group.throughput(Throughput::Elements(fused_flops));
        for k in KS {
            let block = MobileOneBlock::random(config.with_branches(k), &mut rng).unwrap();
            let fused = block.reparameterize().unwrap();
            let mut out = Tensor::zeros(block.output_shape(shape).unwrap()).unwrap();
            let mut ws = Workspace::new();
            group.bench_with_input(BenchmarkId::new("multi", k), &k, |b, _| {
                b.iter(|| block.forward_into(x.view(), out.view_mut(), &mut ws).unwrap())
            });
            group.bench_with_input(BenchmarkId::new("fused", k), &k, |b, _| {
                b.iter(|| fused.forward_into(x.view(), out.view_mut(), &mut ws).unwrap())
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
