//! Inference-mode batch normalisation over NCHW tensors.

use crate::error::{Error, Result};
use crate::tensor::{TensorView, TensorViewMut};

use super::ops;
use super::rng::SplitMix64;

/// Inference-mode `BatchNorm2d`:
/// `y = (x - running_mean) * gamma / sqrt(running_var + eps) + beta`, per channel.
///
/// Field names follow PyTorch (`weight` = gamma, `bias` = beta). The per-channel
/// scale and shift are computed once, in `f64`, when the layer is built.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNorm2d {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    running_mean: Vec<f32>,
    running_var: Vec<f32>,
    eps: f32,
    scale: Vec<f32>,
    shift: Vec<f32>,
}

impl BatchNorm2d {
    /// Builds a layer from its parameters, all `channels` long. Errors when the
    /// lengths differ or are zero, when `eps` is negative or not finite, or when
    /// some `running_var + eps` is not positive.
    pub fn new(
        gamma: Vec<f32>,
        beta: Vec<f32>,
        running_mean: Vec<f32>,
        running_var: Vec<f32>,
        eps: f32,
    ) -> Result<Self> {
        let c = gamma.len();
        if c == 0 {
            return Err(Error::invalid("batchnorm", "zero channels"));
        }
        for (what, v) in [
            ("batchnorm beta", &beta),
            ("batchnorm running_mean", &running_mean),
            ("batchnorm running_var", &running_var),
        ] {
            if v.len() != c {
                return Err(Error::LengthMismatch { what, expected: c, got: v.len() });
            }
        }
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(Error::invalid("eps", format!("must be finite and >= 0, got {eps}")));
        }
        if let Some((i, v)) = running_var.iter().enumerate().find(|(_, v)| {
            (f64::from(**v) + f64::from(eps)).partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
        }) {
            return Err(Error::invalid(
                "running_var",
                format!("running_var[{i}] + eps = {} is not positive", v + eps),
            ));
        }
        let (scale, shift) = (0..c)
            .map(|i| {
                let s = f64::from(gamma[i]) / (f64::from(running_var[i]) + f64::from(eps)).sqrt();
                (s as f32, (f64::from(beta[i]) - f64::from(running_mean[i]) * s) as f32)
            })
            .unzip();
        Ok(BatchNorm2d { gamma, beta, running_mean, running_var, eps, scale, shift })
    }

    /// The identity normalisation (`gamma = 1, beta = 0, mean = 0, var = 1`,
    /// `eps = 1e-5`, as PyTorch initialises it) over `channels` channels.
    pub fn identity(channels: usize) -> Result<Self> {
        BatchNorm2d::new(
            vec![1.0; channels],
            vec![0.0; channels],
            vec![0.0; channels],
            vec![1.0; channels],
            1e-5,
        )
    }

    /// Random statistics for tests and seeded networks: `running_var`
    /// log-uniform in `[0.01, 10)`, `running_mean` uniform in `[-0.5, 0.5)`,
    /// `gamma = sqrt(var) * u / sqrt(branches)` with `u` uniform in
    /// `[0.5, 1.5)` (so a sum of `branches` branches of unit-order inputs
    /// keeps a unit-order scale), `beta` uniform in `[-0.2, 0.2) / sqrt(branches)`.
    pub fn random(
        channels: usize,
        branches: usize,
        eps: f32,
        rng: &mut SplitMix64,
    ) -> Result<Self> {
        let norm = 1.0 / (branches.max(1) as f64).sqrt();
        let mut gamma = Vec::with_capacity(channels);
        let mut beta = Vec::with_capacity(channels);
        let mut mean = Vec::with_capacity(channels);
        let mut var = Vec::with_capacity(channels);
        for _ in 0..channels {
            let v = rng.log_uniform(0.01, 10.0);
            var.push(v as f32);
            mean.push(rng.uniform(-0.5, 0.5) as f32);
            gamma.push((v.sqrt() * rng.uniform(0.5, 1.5) * norm) as f32);
            beta.push((rng.uniform(-0.2, 0.2) * norm) as f32);
        }
        BatchNorm2d::new(gamma, beta, mean, var, eps)
    }

    /// Statistics calibrated on the tensor `y` it will normalise (see
    /// [`MobileOneBlock::random_calibrated`](super::MobileOneBlock::random_calibrated)),
    /// whose channel `c` was produced with a known random gain `gains[c]`:
    /// `running_mean` is the measured per-channel mean (+ `[-0.2, 0.2)`
    /// standard deviations), `running_var = gains[c]^2 * V * r` with `V` the
    /// layer's measured variance per unit gain (averaged over channels, so a
    /// nearly constant channel is not blown up) and `r` log-uniform in
    /// `[0.5, 2)`; `gamma` in `[0.5, 1.5) / sqrt(branches)`, `beta` in
    /// `[-0.2, 0.2) / sqrt(branches)`, eps 1e-5.
    pub fn calibrated(
        y: TensorView<'_>,
        gains: &[f32],
        branches: usize,
        rng: &mut SplitMix64,
    ) -> Result<Self> {
        let [n, c, h, w] = y.shape();
        if gains.len() != c {
            return Err(Error::LengthMismatch {
                what: "calibration gains",
                expected: c,
                got: gains.len(),
            });
        }
        let hw = h * w;
        let count = (n * hw) as f64;
        let mut mean = vec![0f64; c];
        let mut var = vec![0f64; c];
        for (p, plane) in y.as_slice().chunks_exact(hw).enumerate() {
            mean[p % c] += plane.iter().map(|&v| f64::from(v)).sum::<f64>() / count;
        }
        for (p, plane) in y.as_slice().chunks_exact(hw).enumerate() {
            let m = mean[p % c];
            var[p % c] += plane.iter().map(|&v| (f64::from(v) - m).powi(2)).sum::<f64>() / count;
        }
        let unit_var = (var.iter().zip(gains).map(|(v, g)| v / f64::from(*g).powi(2)).sum::<f64>()
            / c as f64)
            .max(1e-6);
        let norm = 1.0 / (branches.max(1) as f64).sqrt();
        let mut params = (
            Vec::with_capacity(c),
            Vec::with_capacity(c),
            Vec::with_capacity(c),
            Vec::with_capacity(c),
        );
        for (m, g) in mean.iter().zip(gains) {
            let v = f64::from(*g).powi(2) * unit_var * rng.log_uniform(0.5, 2.0);
            params.0.push((rng.uniform(0.5, 1.5) * norm) as f32);
            params.1.push((rng.uniform(-0.2, 0.2) * norm) as f32);
            params.2.push((m + rng.uniform(-0.2, 0.2) * v.sqrt()) as f32);
            params.3.push(v as f32);
        }
        BatchNorm2d::new(params.0, params.1, params.2, params.3, 1e-5)
    }

    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.gamma.len()
    }

    /// `gamma` (PyTorch's `weight`).
    pub fn gamma(&self) -> &[f32] {
        &self.gamma
    }

    /// `beta` (PyTorch's `bias`).
    pub fn beta(&self) -> &[f32] {
        &self.beta
    }

    /// The running mean.
    pub fn running_mean(&self) -> &[f32] {
        &self.running_mean
    }

    /// The running variance.
    pub fn running_var(&self) -> &[f32] {
        &self.running_var
    }

    /// The epsilon added to the variance.
    pub fn eps(&self) -> f32 {
        self.eps
    }

    /// Per-channel scale `gamma / sqrt(var + eps)` (computed in `f64`).
    pub fn scale(&self) -> &[f32] {
        &self.scale
    }

    /// Per-channel shift `beta - mean * gamma / sqrt(var + eps)`.
    pub fn shift(&self) -> &[f32] {
        &self.shift
    }

    /// Scale and shift of channel `c` in `f64`, for exact folding.
    pub(crate) fn scale_shift_f64(&self, c: usize) -> (f64, f64) {
        let s = f64::from(self.gamma[c])
            / (f64::from(self.running_var[c]) + f64::from(self.eps)).sqrt();
        (s, f64::from(self.beta[c]) - f64::from(self.running_mean[c]) * s)
    }

    fn check_channels(&self, shape: [usize; 4]) -> Result<()> {
        if shape[1] != self.channels() {
            return Err(Error::ShapeMismatch {
                what: "batchnorm input channels",
                expected: vec![shape[0], self.channels(), shape[2], shape[3]],
                got: shape.to_vec(),
            });
        }
        Ok(())
    }

    /// Normalises `x` in place (one pass over memory).
    pub fn forward_inplace(&self, mut x: TensorViewMut<'_>) -> Result<()> {
        let shape = x.shape();
        self.check_channels(shape)?;
        ops::affine_inplace(x.as_mut_slice(), shape[2] * shape[3], &self.scale, &self.shift, false);
        Ok(())
    }

    /// Adds `bn(x)` to `acc` (one fused pass: `acc += x * scale + shift`), the
    /// way a multi-branch block sums its normalised branches. Shapes must match.
    pub fn forward_accumulate(&self, x: TensorView<'_>, mut acc: TensorViewMut<'_>) -> Result<()> {
        let shape = x.shape();
        self.check_channels(shape)?;
        if acc.shape() != shape {
            return Err(Error::ShapeMismatch {
                what: "batchnorm accumulator",
                expected: shape.to_vec(),
                got: acc.shape().to_vec(),
            });
        }
        ops::affine_accumulate(
            acc.as_mut_slice(),
            x.as_slice(),
            shape[2] * shape[3],
            &self.scale,
            &self.shift,
            false,
        );
        Ok(())
    }
}
