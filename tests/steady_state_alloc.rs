//! Steady state allocates nothing: after warm-up, `Conv2d::forward_into` on
//! every kernel family, serial and split over a rayon pool, and a whole
//! MobileOne network's `forward_into` with its `Workspace` (both forms, S4 so
//! squeeze-excitation is included) make zero heap allocations per call,
//! counted by an instrumented global allocator over all threads. This file
//! holds one test so no other test's allocations run concurrently.

use repconv::mobileone::{MobileOne, MobileOneConfig, Variant, Workspace};
use repconv::{Activation, Conv2d, Conv2dParams, Parallelism, Tensor};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use std::alloc::System;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[test]
fn forward_into_allocates_nothing_after_warm_up() {
    convolutions_allocate_nothing();
    networks_allocate_nothing();
}

fn convolutions_allocate_nothing() {
    let layers = [
        (Conv2dParams::new(32, 48, [1, 1]), [1, 32, 14, 15]),
        (Conv2dParams::new(8, 24, [3, 3]).with_padding([1, 1]), [2, 8, 17, 19]),
        (Conv2dParams::new(3, 16, [3, 3]).with_padding([1, 1]).with_stride([2, 2]), [1, 3, 33, 31]),
        // Row-aligned tiles: on two threads, bands of output rows.
        (
            Conv2dParams::new(3, 20, [3, 3]).with_padding([1, 1]).with_stride([2, 2]),
            [1, 3, 21, 127],
        ),
        (Conv2dParams::new(24, 24, [3, 3]).with_padding([1, 1]).with_groups(24), [1, 24, 21, 18]),
        (
            Conv2dParams::new(24, 24, [3, 3])
                .with_padding([1, 1])
                .with_stride([2, 2])
                .with_groups(24),
            [2, 24, 13, 40],
        ),
        (
            Conv2dParams::new(6, 12, [5, 3])
                .with_padding([2, 0])
                .with_dilation([1, 2])
                .with_groups(3),
            [1, 6, 16, 16],
        ),
        (Conv2dParams::new(16, 16, [3, 3]), [1, 16, 12, 12]),
        // The general path in two bands (800 x 3136 floats of im2col > 8 MiB).
        (Conv2dParams::new(32, 32, [5, 5]).with_padding([2, 2]), [1, 32, 56, 56]),
        // A reduction too long for the GEMM: the direct tap loop.
        (Conv2dParams::new(70_000, 2, [1, 1]), [1, 70_000, 1, 2]),
    ];
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    for (params, shape) in layers {
        let weights = vec![0.01; params.weight_len().unwrap()];
        let bias = vec![0.1; params.out_channels];
        let conv = Conv2d::new(params, &weights, Some(&bias), Activation::Relu).unwrap();
        let x = Tensor::full(shape, 0.5).unwrap();
        let mut y = Tensor::zeros(conv.output_shape(shape).unwrap()).unwrap();
        for parallel in [false, true] {
            let conv = if parallel {
                conv.clone().with_parallel_threshold(0)
            } else {
                conv.clone().with_parallelism(Parallelism::Serial)
            };
            // Every worker sizes its thread-local scratch for this layer: a
            // serial pass on each of them (which work stealing alone does not
            // guarantee within a few warm-up runs on a busy machine).
            let serial = conv.clone().with_parallelism(Parallelism::Serial);
            pool.broadcast(|_| {
                let mut own = Tensor::zeros(y.shape()).unwrap();
                serial.forward_into(x.view(), own.view_mut()).unwrap();
            });
            pool.install(|| {
                for _ in 0..4 {
                    conv.forward_into(x.view(), y.view_mut()).unwrap();
                }
                let region = Region::new(GLOBAL);
                for _ in 0..8 {
                    conv.forward_into(x.view(), y.view_mut()).unwrap();
                }
                let change = region.change();
                // The counter works: `forward` allocates its output tensor.
                let probe = Region::new(GLOBAL);
                drop(conv.forward(&x).unwrap());
                assert!(probe.change().allocations >= 1, "allocation counter is not counting");
                assert_eq!(
                    (change.allocations, change.reallocations),
                    (0, 0),
                    "{} (parallel: {parallel}) allocated {} bytes in steady state",
                    conv.kernel_name(),
                    change.bytes_allocated
                );
            });
        }
    }
}

fn networks_allocate_nothing() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let net =
        MobileOne::random(MobileOneConfig::variant(Variant::S4).with_num_classes(10), 3).unwrap();
    let fused = net.reparameterize().unwrap();
    let x = Tensor::full([2, 3, 64, 64], 0.25).unwrap();
    let mut logits = Tensor::zeros([2, 10, 1, 1]).unwrap();
    for (form, model) in [("multi-branch", &net), ("fused", &fused)] {
        let mut ws = Workspace::new();
        // Each worker runs the network once as the caller, so the layers'
        // thread-local scratch is sized on both threads before the count.
        pool.broadcast(|_| {
            let mut own = Tensor::zeros(logits.shape()).unwrap();
            model.forward_into(x.view(), own.view_mut(), &mut Workspace::new()).unwrap();
        });
        pool.install(|| {
            for _ in 0..3 {
                model.forward_into(x.view(), logits.view_mut(), &mut ws).unwrap();
            }
            let region = Region::new(GLOBAL);
            for _ in 0..3 {
                model.forward_into(x.view(), logits.view_mut(), &mut ws).unwrap();
            }
            let change = region.change();
            assert_eq!(
                (change.allocations, change.reallocations),
                (0, 0),
                "{form} S4 forward_into allocated {} bytes in steady state",
                change.bytes_allocated
            );
        });
    }
}
