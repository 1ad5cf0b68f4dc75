//! The C API's calling overhead: the same 1x1 convolution (128 -> 128
//! channels, bias + ReLU) on a 1x128x28x28 input through
//! `repconv_conv_forward` and through `Conv2d::forward_into`, both on the
//! global rayon pool, into preallocated buffers. The C path adds pointer and
//! shape checks, a status and a thread-local write; it should be within
//! noise of the Rust path (target: 2%).
//!
//! The group `overhead_tiny` runs the same comparison on a 1x1 convolution
//! of 16 channels on a 4x4 plane (serial, about 8 KFLOP), where the fixed
//! cost per call is most of the time: it measures that cost in nanoseconds,
//! which a shared, noisy machine hides in the 28x28 layer's spread.
//!
//! ```text
//! cargo bench -p repconv-capi -- --warm-up-time 1 --measurement-time 3
//! ```

use std::ptr::null;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use repconv_capi::{
    ConvParams, REPCONV_ACTIVATION_RELU, REPCONV_OK, repconv_conv_create, repconv_conv_destroy,
    repconv_conv_forward,
};
use repconv_rs::mobileone::SplitMix64;
use repconv_rs::{Activation, Conv2d, Conv2dParams, Tensor};

/// One convolution through both APIs: 1x1, `channels` -> `channels`, bias +
/// ReLU, on a `[1, channels, hw, hw]` input.
fn compare(c: &mut Criterion, group: &str, channels: usize, hw: usize) {
    let params = Conv2dParams::new(channels, channels, [1, 1]);
    let shape = [1, channels, hw, hw];
    let mut rng = SplitMix64::new(1);
    let w = rng.uniform_vec(params.weight_len().unwrap(), -0.1, 0.1);
    let b = rng.uniform_vec(channels, -0.1, 0.1);
    let x = Tensor::from_vec(shape, rng.uniform_vec(channels * hw * hw, -1.0, 1.0)).unwrap();
    let mut y = Tensor::zeros(shape).unwrap();

    let rust = Conv2d::new(params, &w, Some(&b), Activation::Relu).unwrap();
    let c_params = ConvParams {
        in_channels: channels,
        out_channels: channels,
        kernel: [1, 1],
        stride: [1, 1],
        padding: [0, 0],
        dilation: [1, 1],
        groups: 1,
    };
    let mut handle = std::ptr::null_mut();
    // SAFETY: live buffers with their lengths; `handle` is a local.
    let status = unsafe {
        repconv_conv_create(
            &c_params,
            w.as_ptr(),
            w.len(),
            b.as_ptr(),
            b.len(),
            REPCONV_ACTIVATION_RELU,
            null(),
            &mut handle,
        )
    };
    assert_eq!(status, REPCONV_OK);

    let mut group = c.benchmark_group(group);
    group.throughput(Throughput::Elements(rust.params().flops(shape).unwrap()));
    let name = rust.kernel_name();
    group.bench_function(format!("rust_forward_into/{name}"), |bench| {
        bench.iter(|| rust.forward_into(x.view(), y.view_mut()).unwrap())
    });
    let (xp, yp, len) = (x.as_slice().as_ptr(), y.as_mut_slice().as_mut_ptr(), y.len());
    group.bench_function(format!("c_api_forward/{name}"), |bench| {
        bench.iter(|| {
            // SAFETY: a live handle; `xp` and `yp` point to the input and
            // output tensors of `shape`, which outlive the benchmark.
            let status = unsafe { repconv_conv_forward(handle, xp, shape.as_ptr(), yp, len) };
            assert_eq!(status, REPCONV_OK);
        })
    });
    group.finish();
    // SAFETY: created above, destroyed once.
    unsafe { repconv_conv_destroy(handle) };
}

fn bench(c: &mut Criterion) {
    compare(c, "overhead", 128, 28);
    compare(c, "overhead_tiny", 16, 4);
}

criterion_group!(benches, bench);
criterion_main!(benches);
