//! Squeeze-excitation as in timm's `SEModule` (the `attn` of a MobileOne-S4 block).

use crate::error::{Error, Result};
use crate::tensor::TensorViewMut;

use super::ops;
use super::rng::SplitMix64;
use super::workspace::{Scratch, grow};

/// Reduced channel count of squeeze-excitation over `channels` channels, as
/// timm's `SEModule` computes it: `make_divisible(channels / 16, 8,
/// round_limit=0)`, i.e. `channels / 16` rounded to the nearest multiple of 8
/// (halves up), at least 8. For MobileOne-S4: 896 -> 56, 2048 -> 128.
pub fn se_channels(channels: usize) -> usize {
    // int(c/16 + 4) // 8 * 8 == ((c + 64) / 16) / 8 * 8 in integers.
    (channels.saturating_add(64) / 16 / 8 * 8).max(8)
}

/// Squeeze-excitation: `x * sigmoid(fc2(relu(fc1(mean_hw(x)))))`, where `fc1`
/// (`C -> rd`) and `fc2` (`rd -> C`) are 1x1 convolutions with bias on the
/// pooled vector (timm's `attn.fc1` and `attn.fc2`, weights `[out, in, 1, 1]`).
#[derive(Clone, Debug, PartialEq)]
pub struct SqueezeExcite {
    channels: usize,
    rd_channels: usize,
    fc1_weight: Vec<f32>,
    fc1_bias: Vec<f32>,
    fc2_weight: Vec<f32>,
    fc2_bias: Vec<f32>,
}

impl SqueezeExcite {
    /// Builds the module over `channels` channels; the reduced width is
    /// `fc1_bias.len()`. Errors on zero sizes or mismatched lengths.
    pub fn new(
        channels: usize,
        fc1_weight: Vec<f32>,
        fc1_bias: Vec<f32>,
        fc2_weight: Vec<f32>,
        fc2_bias: Vec<f32>,
    ) -> Result<Self> {
        let rd = fc1_bias.len();
        if channels == 0 || rd == 0 {
            return Err(Error::invalid("squeeze-excitation", "zero channels"));
        }
        let len = channels
            .checked_mul(rd)
            .ok_or(Error::TooLarge { what: "squeeze-excitation weights" })?;
        for (what, v, expected) in [
            ("se fc1 weight", &fc1_weight, len),
            ("se fc2 weight", &fc2_weight, len),
            ("se fc2 bias", &fc2_bias, channels),
        ] {
            if v.len() != expected {
                return Err(Error::LengthMismatch { what, expected, got: v.len() });
            }
        }
        Ok(SqueezeExcite { channels, rd_channels: rd, fc1_weight, fc1_bias, fc2_weight, fc2_bias })
    }

    /// Seeded random weights (uniform, He-scaled) with [`se_channels`] reduced channels.
    pub fn random(channels: usize, rng: &mut SplitMix64) -> Result<Self> {
        let rd = se_channels(channels);
        let len = channels
            .checked_mul(rd)
            .ok_or(Error::TooLarge { what: "squeeze-excitation weights" })?;
        let b1 = (6.0 / channels.max(1) as f32).sqrt();
        let b2 = (6.0 / rd as f32).sqrt();
        let fc1_weight = rng.uniform_vec(len, -b1, b1);
        let fc1_bias = rng.uniform_vec(rd, -0.1, 0.1);
        let fc2_weight = rng.uniform_vec(len, -b2, b2);
        let fc2_bias = rng.uniform_vec(channels, -0.5, 0.5);
        SqueezeExcite::new(channels, fc1_weight, fc1_bias, fc2_weight, fc2_bias)
    }

    /// Channels it scales.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Reduced channels (`fc1` outputs).
    pub fn rd_channels(&self) -> usize {
        self.rd_channels
    }

    /// `fc1.weight`, `[rd, channels, 1, 1]`.
    pub fn fc1_weight(&self) -> &[f32] {
        &self.fc1_weight
    }

    /// `fc1.bias`, `[rd]`.
    pub fn fc1_bias(&self) -> &[f32] {
        &self.fc1_bias
    }

    /// `fc2.weight`, `[channels, rd, 1, 1]`.
    pub fn fc2_weight(&self) -> &[f32] {
        &self.fc2_weight
    }

    /// `fc2.bias`, `[channels]`.
    pub fn fc2_bias(&self) -> &[f32] {
        &self.fc2_bias
    }

    /// FLOPs of one pass over `n` images of `hw` pixels: pooling, the two
    /// matrix-vector products and the scaling.
    pub fn flops(&self, n: usize, hw: usize) -> u64 {
        let (c, rd) = (self.channels as u64, self.rd_channels as u64);
        n as u64 * (2 * c * hw as u64 + 4 * c * rd)
    }

    /// Applies squeeze-excitation to `x` in place (allocates its small scratch).
    pub fn forward_inplace(&self, mut x: TensorViewMut<'_>) -> Result<()> {
        let shape = x.shape();
        if shape[1] != self.channels {
            return Err(Error::ShapeMismatch {
                what: "squeeze-excitation input channels",
                expected: vec![shape[0], self.channels, shape[2], shape[3]],
                got: shape.to_vec(),
            });
        }
        let isa = repconv_kernels::Isa::from_env()?;
        self.apply(isa, x.as_mut_slice(), shape, &mut Scratch::default(), false);
        Ok(())
    }

    /// The whole module on an NCHW slice of `shape` (channels already
    /// checked), followed by ReLU when `relu` (fused into the scaling pass).
    pub(crate) fn apply(
        &self,
        isa: repconv_kernels::Isa,
        y: &mut [f32],
        shape: [usize; 4],
        scratch: &mut Scratch,
        relu: bool,
    ) {
        let [n, c, h, w] = shape;
        let hw = h * w;
        let gates = grow(&mut scratch.means, n * c);
        let hidden = grow(&mut scratch.hidden, self.rd_channels);
        ops::plane_means(y, hw, gates);
        for g in gates.chunks_exact_mut(c) {
            ops::matvec(isa, &self.fc1_weight, &self.fc1_bias, g, hidden);
            hidden.iter_mut().for_each(|v| *v = ops::relu_nan(*v));
            ops::matvec(isa, &self.fc2_weight, &self.fc2_bias, hidden, g);
            g.iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-*v).exp()));
        }
        ops::scale_planes(y, hw, gates, relu);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn se_channels_matches_timm_make_divisible() {
        // timm: make_divisible(c / 16, 8, round_limit=0.)
        for (c, rd) in [
            (896, 56),
            (2048, 128),
            (64, 8),
            (16, 8),
            (1, 8),
            (120, 8),
            (192, 16),
            (200, 16),
            (1024, 64),
        ] {
            assert_eq!(se_channels(c), rd, "c = {c}");
        }
    }
}
