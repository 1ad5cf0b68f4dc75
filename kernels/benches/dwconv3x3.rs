//! Depthwise 3x3 drivers on the MobileOne layer shapes (batch 1, one thread,
//! hot caches), reported as FLOP/s with FLOPs = 2 * 9 * c * oh * ow.
//!
//! `cargo bench -p repconv-kernels --bench dwconv3x3`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use repconv_kernels::dwconv3x3::{
    Dw3x3Args, PACKED_PER_CHANNEL, dw3x3_s1p1, dw3x3_s2p1, pack_weights, scratch_len,
};
use repconv_kernels::{Activation, Isa, Op, kernel_info};
use std::hint::black_box;

/// `(channels, h = w, stride)`: MobileOne S0/S1 depthwise layers (the layer tables of `repconv_cli::shapes`)
/// plus the largest and smallest stride-1 planes.
const SHAPES: &[(usize, usize, usize)] = &[
    (48, 112, 1),
    (48, 56, 1),
    (128, 28, 1),
    (256, 14, 1),
    (512, 14, 1),
    (1024, 7, 1),
    (48, 112, 2),
    (128, 28, 2),
    (256, 14, 2),
];

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("dwconv3x3");
    for &(ch, hw, stride) in SHAPES {
        let (h, w) = (hw, hw);
        let (oh, ow) = ((h - 1) / stride + 1, (w - 1) / stride + 1);
        // Deterministic data in [-1, 1); no denormals.
        let input: Vec<f32> =
            (0..ch * h * w).map(|i| ((i * 7919 % 2003) as f32 / 1001.5) - 1.0).collect();
        let weights: Vec<f32> = (0..9 * ch).map(|i| ((i * 31 % 17) as f32 / 8.5) - 1.0).collect();
        let bias: Vec<f32> = (0..ch).map(|i| (i % 5) as f32 * 0.1 - 0.2).collect();
        let mut packed = vec![0.0; ch * PACKED_PER_CHANNEL];
        pack_weights(&weights, Some(&bias), ch, &mut packed);
        let mut output = vec![0.0; ch * oh * ow];
        group.throughput(Throughput::Elements((2 * 9 * ch * oh * ow) as u64));
        // Every instantiation this CPU runs, named as in the registry.
        for isa in Isa::available() {
            let mut scratch = vec![0.0; scratch_len(isa, h, w, stride).unwrap()];
            let op = if stride == 1 { Op::Dw3x3S1 } else { Op::Dw3x3S2 };
            let id =
                BenchmarkId::new(kernel_info(op, isa).name, format!("c{ch}o{ch}h{h}w{w}s{stride}"));
            group.bench_function(id, |b| {
                b.iter(|| {
                    let args = Dw3x3Args {
                        channels: ch,
                        h,
                        w,
                        packed: &packed,
                        input: black_box(&input),
                        output: &mut output,
                    };
                    if stride == 1 {
                        dw3x3_s1p1(isa, Activation::Relu, args, &mut scratch);
                    } else {
                        dw3x3_s2p1(isa, Activation::Relu, args, &mut scratch);
                    }
                    black_box(&mut output);
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
