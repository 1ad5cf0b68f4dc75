//! Reparameterization arithmetic: BN folding, kernel padding and the identity
//! kernel, accumulated in `f64` so the fused weights are as exact as `f32`
//! storage allows.

use crate::error::{Error, Result};

use super::batchnorm::BatchNorm2d;

/// Folds `bn` into a bias-free convolution with OIHW `weights` (whose output
/// channels are `bn.channels()`): returns `(W', b')` with
/// `W'[o] = W[o] * g[o] / sqrt(v[o] + eps)` and
/// `b'[o] = beta[o] - mean[o] * g[o] / sqrt(v[o] + eps)`, computed in `f64`.
pub fn fold_conv_bn(weights: &[f32], bn: &BatchNorm2d) -> Result<(Vec<f32>, Vec<f32>)> {
    let c = bn.channels();
    if weights.is_empty() || !weights.len().is_multiple_of(c) {
        return Err(Error::invalid(
            "weights",
            format!(
                "{} weights are not a whole number of rows for {c} output channels",
                weights.len()
            ),
        ));
    }
    let per_out = weights.len() / c;
    let mut w = Vec::with_capacity(weights.len());
    let mut b = Vec::with_capacity(c);
    for (o, row) in weights.chunks_exact(per_out).enumerate() {
        let (s, t) = bn.scale_shift_f64(o);
        w.extend(row.iter().map(|&x| (f64::from(x) * s) as f32));
        b.push(t as f32);
    }
    Ok((w, b))
}

/// The identity as a grouped convolution kernel (OIHW, `[channels,
/// channels / groups, kh, kw]`): 1 at the centre of `[o, o % (channels /
/// groups)]`, 0 elsewhere. Convolving with it (padding `k / 2`, stride 1)
/// returns the input.
pub fn identity_kernel(channels: usize, groups: usize, kernel: [usize; 2]) -> Result<Vec<f32>> {
    if channels == 0 || groups == 0 || !channels.is_multiple_of(groups) {
        return Err(Error::invalid(
            "groups",
            format!("{groups} groups do not divide {channels} channels"),
        ));
    }
    if kernel[0].is_multiple_of(2) || kernel[1].is_multiple_of(2) {
        return Err(Error::invalid(
            "kernel",
            format!("identity needs an odd kernel, got {kernel:?}"),
        ));
    }
    let ipg = channels / groups;
    let len = [ipg, kernel[0], kernel[1]]
        .iter()
        .try_fold(channels, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= crate::MAX_ELEMENTS)
        .ok_or(Error::TooLarge { what: "identity kernel" })?;
    let mut w = vec![0.0; len];
    let per_out = ipg * kernel[0] * kernel[1];
    let centre = (kernel[0] / 2) * kernel[1] + kernel[1] / 2;
    for o in 0..channels {
        w[o * per_out + (o % ipg) * kernel[0] * kernel[1] + centre] = 1.0;
    }
    Ok(w)
}

/// Accumulates `W * scale` (zero-padded from `branch_kernel` to the centre of
/// `kernel`) and the BN shift of one branch into `f64` sums.
pub(crate) struct Accumulator {
    out_channels: usize,
    in_per_group: usize,
    kernel: [usize; 2],
    pub(crate) weights: Vec<f64>,
    pub(crate) bias: Vec<f64>,
}

impl Accumulator {
    pub(crate) fn new(out_channels: usize, in_per_group: usize, kernel: [usize; 2]) -> Self {
        let len = out_channels * in_per_group * kernel[0] * kernel[1];
        Accumulator {
            out_channels,
            in_per_group,
            kernel,
            weights: vec![0.0; len],
            bias: vec![0.0; out_channels],
        }
    }

    /// Adds one conv + BN branch whose OIHW weights have spatial size
    /// `branch_kernel` (odd, not larger than the target kernel).
    pub(crate) fn add(&mut self, weights: &[f32], branch_kernel: [usize; 2], bn: &BatchNorm2d) {
        let [kh, kw] = self.kernel;
        let [bh, bw] = branch_kernel;
        let (dy, dx) = ((kh - bh) / 2, (kw - bw) / 2);
        for o in 0..self.out_channels {
            let (s, t) = bn.scale_shift_f64(o);
            self.bias[o] += t;
            for i in 0..self.in_per_group {
                let src = (o * self.in_per_group + i) * bh * bw;
                let dst = (o * self.in_per_group + i) * kh * kw;
                for y in 0..bh {
                    for x in 0..bw {
                        self.weights[dst + (y + dy) * kw + x + dx] +=
                            f64::from(weights[src + y * bw + x]) * s;
                    }
                }
            }
        }
    }

    /// The sums rounded to `f32`: `(weights, bias)`.
    pub(crate) fn finish(self) -> (Vec<f32>, Vec<f32>) {
        (
            self.weights.into_iter().map(|v| v as f32).collect(),
            self.bias.into_iter().map(|v| v as f32).collect(),
        )
    }
}
