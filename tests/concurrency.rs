//! One `Conv2d` shared by 8 threads, each running different inputs at once,
//! gives exactly the serial results (no shared mutable state, per-thread
//! scratch); and every kernel family is bitwise identical for rayon pools of
//! 1, 2, 3 and 8 threads (depthwise layers of 7 and 9 channels included, which
//! 2 and 3 threads split into uneven channel chunks).

mod common;

use common::values;
use repconv::{Activation, Conv2d, Conv2dParams, Parallelism, Tensor};

fn layers() -> Vec<(Conv2dParams, [usize; 4])> {
    vec![
        (Conv2dParams::new(40, 72, [1, 1]), [1, 40, 14, 14]),
        (Conv2dParams::new(16, 32, [3, 3]).with_padding([1, 1]), [2, 16, 23, 29]),
        (Conv2dParams::new(3, 24, [3, 3]).with_padding([1, 1]).with_stride([2, 2]), [1, 3, 64, 61]),
        // Rows of whole vectors (64 outputs): row-aligned tiles, which two
        // or more threads compute in bands of rows; 20 channels leave a
        // partial register block.
        (
            Conv2dParams::new(3, 20, [3, 3]).with_padding([1, 1]).with_stride([2, 2]),
            [2, 3, 21, 127],
        ),
        (Conv2dParams::new(3, 20, [3, 3]).with_padding([1, 1]), [1, 3, 9, 64]),
        (Conv2dParams::new(64, 64, [3, 3]).with_padding([1, 1]).with_groups(64), [1, 64, 28, 28]),
        (
            Conv2dParams::new(64, 64, [3, 3])
                .with_padding([1, 1])
                .with_stride([2, 2])
                .with_groups(64),
            [2, 64, 15, 17],
        ),
        // Depthwise with channel counts that 2 and 3 threads split unevenly
        // (7 = 4 + 3 = 3 + 2 + 2, 9 = 5 + 4), at both strides, and the
        // depthwise 1x1 kernel.
        (Conv2dParams::new(7, 7, [3, 3]).with_padding([1, 1]).with_groups(7), [1, 7, 30, 34]),
        (
            Conv2dParams::new(9, 9, [3, 3]).with_padding([1, 1]).with_stride([2, 2]).with_groups(9),
            [2, 9, 27, 31],
        ),
        (Conv2dParams::new(9, 9, [3, 3]).with_padding([1, 1]).with_groups(9), [1, 9, 15, 16]),
        (Conv2dParams::new(7, 7, [1, 1]).with_groups(7), [1, 7, 25, 27]),
        (Conv2dParams::new(12, 24, [5, 5]).with_padding([2, 2]).with_groups(4), [1, 12, 20, 20]),
        (
            Conv2dParams::new(16, 32, [3, 3]).with_stride([2, 1]).with_dilation([2, 1]),
            [1, 16, 19, 24],
        ),
    ]
}

fn build(params: Conv2dParams, seed: u64) -> Conv2d {
    let w = values(seed, params.weight_len().unwrap());
    let b = values(seed + 1, params.out_channels);
    Conv2d::new(params, &w, Some(&b), Activation::Relu).unwrap()
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.as_slice().iter().map(|v| v.to_bits()).collect()
}

#[test]
fn any_thread_count_gives_the_same_bits() {
    for (i, (params, shape)) in layers().into_iter().enumerate() {
        let conv = build(params, i as u64);
        let x = Tensor::from_vec(shape, values(100 + i as u64, shape.iter().product())).unwrap();
        let serial = bits(&conv.clone().with_parallelism(Parallelism::Serial).forward(&x).unwrap());
        for threads in [1, 2, 3, 8] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            for conv in [conv.clone(), conv.clone().with_parallel_threshold(0)] {
                let y = pool.install(|| conv.forward(&x).unwrap());
                assert_eq!(bits(&y), serial, "{} with {threads} threads", conv.kernel_name());
            }
        }
    }
}

/// The general path in narrow bands (mid-row starts and ends) and through the
/// direct tap loop, forced by small scratch limits, and a 1x1 layer whose
/// 70000-channel reduction is too long for the GEMM: the same bits for any
/// pool size.
#[test]
fn banded_and_tap_paths_give_the_same_bits_for_any_thread_count() {
    let cases: Vec<(Conv2dParams, [usize; 4], usize)> = vec![
        (Conv2dParams::new(16, 24, [5, 5]).with_padding([2, 2]), [2, 16, 23, 29], 2 << 10),
        (Conv2dParams::new(16, 24, [5, 5]).with_padding([2, 2]), [2, 16, 23, 29], 64 << 10),
        (
            Conv2dParams::new(12, 24, [3, 5])
                .with_padding([3, 1])
                .with_stride([2, 1])
                .with_dilation([2, 3])
                .with_groups(4),
            [2, 12, 19, 24],
            4,
        ),
        (Conv2dParams::new(70_000, 3, [1, 1]), [1, 70_000, 2, 3], 4 << 20),
    ];
    for (i, (params, shape, limit)) in cases.into_iter().enumerate() {
        let conv = build(params, 20 + i as u64).with_scratch_limit(limit);
        let x = Tensor::from_vec(shape, values(200 + i as u64, shape.iter().product())).unwrap();
        let serial = bits(&conv.clone().with_parallelism(Parallelism::Serial).forward(&x).unwrap());
        for threads in [1, 2, 3, 8] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let conv = conv.clone().with_parallel_threshold(0);
            let y = pool.install(|| conv.forward(&x).unwrap());
            assert_eq!(
                bits(&y),
                serial,
                "{} (limit {limit}) with {threads} threads",
                conv.kernel_name()
            );
        }
    }
}

#[test]
fn one_conv_shared_by_eight_threads() {
    for (i, (params, shape)) in layers().into_iter().enumerate() {
        let conv = build(params, 10 + i as u64).with_parallel_threshold(0);
        let inputs: Vec<Tensor> = (0..8)
            .map(|t| {
                Tensor::from_vec(shape, values(1000 * (i as u64 + 1) + t, shape.iter().product()))
                    .unwrap()
            })
            .collect();
        let want: Vec<Vec<u32>> = inputs
            .iter()
            .map(|x| bits(&conv.clone().with_parallelism(Parallelism::Serial).forward(x).unwrap()))
            .collect();
        std::thread::scope(|s| {
            let handles: Vec<_> = inputs
                .iter()
                .map(|x| {
                    let conv = &conv;
                    s.spawn(move || {
                        (0..4).map(|_| bits(&conv.forward(x).unwrap())).collect::<Vec<_>>()
                    })
                })
                .collect();
            for (h, want) in handles.into_iter().zip(&want) {
                for got in h.join().unwrap() {
                    assert_eq!(&got, want, "{}", conv.kernel_name());
                }
            }
        });
    }
}

/// Small networks (S0 with k = 4 branches, S4 with squeeze-excitation) in both
/// forms.
fn networks() -> Vec<(String, repconv::mobileone::MobileOne)> {
    use repconv::mobileone::{MobileOne, MobileOneConfig, Variant};
    let mut out = Vec::new();
    for variant in [Variant::S0, Variant::S4] {
        let net =
            MobileOne::random(MobileOneConfig::variant(variant).with_num_classes(10), 5).unwrap();
        let fused = net.reparameterize().unwrap();
        out.push((format!("{variant:?} multi-branch"), net));
        out.push((format!("{variant:?} fused"), fused));
    }
    out
}

#[test]
fn networks_give_the_same_bits_for_any_thread_count() {
    let x = Tensor::from_vec([2, 3, 48, 48], values(77, 2 * 3 * 48 * 48)).unwrap();
    for (name, net) in networks() {
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let want = bits(&one.install(|| net.forward(&x).unwrap()));
        for threads in [2, 3, 8] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            assert_eq!(
                bits(&pool.install(|| net.forward(&x).unwrap())),
                want,
                "{name}, {threads} threads"
            );
        }
    }
}

#[test]
fn one_network_shared_by_eight_threads() {
    for (name, net) in networks() {
        let inputs: Vec<Tensor> = (0..8)
            .map(|t| Tensor::from_vec([1, 3, 40, 40], values(500 + t, 3 * 40 * 40)).unwrap())
            .collect();
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let want: Vec<Vec<u32>> =
            inputs.iter().map(|x| bits(&one.install(|| net.forward(x).unwrap()))).collect();
        std::thread::scope(|s| {
            let handles: Vec<_> = inputs
                .iter()
                .map(|x| {
                    let net = &net;
                    s.spawn(move || {
                        (0..2).map(|_| bits(&net.forward(x).unwrap())).collect::<Vec<_>>()
                    })
                })
                .collect();
            for (h, want) in handles.into_iter().zip(&want) {
                for got in h.join().unwrap() {
                    assert_eq!(&got, want, "{name}");
                }
            }
        });
    }
}
