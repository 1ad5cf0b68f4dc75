//! Depthwise 1x1 convolution (groups = channels = out channels), no padding,
//! stride 1 or 2: a per-channel scale and shift,
//! `out[c][oy][ox] = A(bias[c] + w[c] · in[c][oy*s][ox*s])`.
//!
//! It is the 1x1 "scale" branch of MobileOne's depthwise blocks in their
//! train-time form; without it that branch would run on the general im2col
//! path, one 1-row GEMM per channel.
//!
//! Packed weights: `[bias[c], w[c]]` per channel ([`PACKED_PER_CHANNEL`] = 2).
//! Stride 1 is vectorised over the whole contiguous plane; stride 2 is a
//! strided scalar loop (a quarter of the plane is read).

use crate::act::Act;
use crate::lanes::{LANES, V, load, store};

/// Name of the stride-1 kernel.
#[cfg(target_feature = "avx512f")]
pub const NAME_S1: &str = "dw1x1_s1_1x16__x16";
/// Name of the stride-1 kernel.
#[cfg(not(target_feature = "avx512f"))]
pub const NAME_S1: &str = "dw1x1_s1_1x8__x8";
/// Name of the stride-2 kernel.
pub const NAME_S2: &str = "dw1x1_s2_1x1__scalar";

/// Floats of packed weights per channel: `[bias, w]`.
pub const PACKED_PER_CHANNEL: usize = 2;

/// Packs `weights[c]` and an optional `bias[c]` as `[bias, w]` per channel.
///
/// # Panics
/// If the lengths do not match `channels`.
pub fn pack_weights(weights: &[f32], bias: Option<&[f32]>, channels: usize, dst: &mut [f32]) {
    assert_eq!(weights.len(), channels, "one weight per channel");
    assert_eq!(dst.len(), channels * PACKED_PER_CHANNEL, "dst length");
    if let Some(b) = bias {
        assert_eq!(b.len(), channels, "bias length");
    }
    for (c, d) in dst.chunks_exact_mut(PACKED_PER_CHANNEL).enumerate() {
        d[0] = bias.map_or(0.0, |b| b[c]);
        d[1] = weights[c];
    }
}

/// Computes `channels` planes of `h x w` input into `oh x ow` output planes.
///
/// # Panics
/// If a slice is shorter than the shapes imply or `stride` is not 1 or 2.
#[allow(clippy::too_many_arguments)]
pub fn dw1x1<A: Act>(
    channels: usize,
    h: usize,
    w: usize,
    stride: usize,
    packed: &[f32],
    input: &[f32],
    output: &mut [f32],
) {
    assert!(stride == 1 || stride == 2, "stride must be 1 or 2");
    let (oh, ow) = ((h - 1) / stride + 1, (w - 1) / stride + 1);
    assert!(packed.len() >= channels * PACKED_PER_CHANNEL, "packed too short");
    assert!(input.len() >= channels * h * w, "input too short");
    assert!(output.len() >= channels * oh * ow, "output too short");
    for c in 0..channels {
        let (b, k) = (packed[2 * c], packed[2 * c + 1]);
        let x = &input[c * h * w..(c + 1) * h * w];
        let y = &mut output[c * oh * ow..(c + 1) * oh * ow];
        if stride == 1 {
            let (bv, kv) = (V::splat(b), V::splat(k));
            let full = x.len() / LANES * LANES;
            for i in (0..full).step_by(LANES) {
                store(y, i, A::apply(kv.mul_add(load(x, i), bv)));
            }
            for i in full..x.len() {
                y[i] = A::apply_scalar(if crate::lanes::HAS_FMA {
                    k.mul_add(x[i], b)
                } else {
                    k * x[i] + b
                });
            }
        } else {
            for oy in 0..oh {
                for ox in 0..ow {
                    let v = x[oy * 2 * w + ox * 2];
                    y[oy * ow + ox] = A::apply_scalar(if crate::lanes::HAS_FMA {
                        k.mul_add(v, b)
                    } else {
                        k * v + b
                    });
                }
            }
        }
    }
}
