//! Dot products: the squeeze-excitation 1x1 convolutions on pooled vectors and
//! the classifier head (a 1024 x 1000 matrix-vector product per image, which
//! streams 4 MB of weights: it must run at load speed on every ISA).

use crate::isa::{Isa, Job, Vector, dispatch};
use crate::lanes::Lanes;

/// `Σ a[i] * b[i]` over the common length, with `isa`'s vectors: four
/// independent accumulators (enough FMA chains to hide their latency), then
/// the scalar tail. The summation order is fixed per ISA.
pub fn dot(isa: Isa, a: &[f32], b: &[f32]) -> f32 {
    dispatch(isa, Dot(a, b))
}

/// `y[o] = bias[o] + dot(w[o*k..(o+1)*k], x)` for every row `o`, `k = x.len()`.
///
/// # Panics
/// If `w.len() < y.len() * x.len()` or `bias.len() < y.len()`.
pub fn matvec(isa: Isa, w: &[f32], bias: &[f32], x: &[f32], y: &mut [f32]) {
    let k = x.len();
    assert!(y.len().checked_mul(k).is_some_and(|n| w.len() >= n), "matrix too short");
    assert!(bias.len() >= y.len(), "bias too short");
    dispatch(isa, MatVec { w, bias, x, y });
}

struct Dot<'a>(&'a [f32], &'a [f32]);

impl Job for Dot<'_> {
    type Out = f32;
    #[inline(always)]
    fn run<V: Vector>(self) -> f32 {
        dot_body::<V>(self.0, self.1)
    }
}

struct MatVec<'a> {
    w: &'a [f32],
    bias: &'a [f32],
    x: &'a [f32],
    y: &'a mut [f32],
}

impl Job for MatVec<'_> {
    type Out = ();
    #[inline(always)]
    fn run<V: Vector>(self) {
        let k = self.x.len();
        for (o, out) in self.y.iter_mut().enumerate() {
            *out = self.bias[o] + dot_body::<V>(&self.w[o * k..(o + 1) * k], self.x);
        }
    }
}

#[inline(always)]
fn dot_body<V: Vector>(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let step = 4 * V::LANES;
    let mut acc = [V::zero(); 4];
    for (x, y) in a.chunks_exact(step).zip(b.chunks_exact(step)) {
        for (j, acc) in acc.iter_mut().enumerate() {
            *acc = V::load(x, j * V::LANES).mul_add(V::load(y, j * V::LANES), *acc);
        }
    }
    let full = n / step * step;
    let tail: f32 = a[full..].iter().zip(&b[full..]).map(|(x, y)| x * y).sum();
    (acc[0].add(acc[1])).add(acc[2].add(acc[3])).reduce_add() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_and_matvec_match_f64_on_every_isa() {
        let n = 1000 + 13;
        let a: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
        let b: Vec<f32> = (0..n).map(|i| ((i * 53 % 89) as f32 - 44.0) / 44.0).collect();
        let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
        let mag: f64 = a.iter().zip(&b).map(|(x, y)| (*x as f64 * *y as f64).abs()).sum();
        for isa in Isa::available() {
            let got = dot(isa, &a, &b) as f64;
            assert!((got - want).abs() <= 1e-5 * mag, "{isa}: {got} vs {want}");
            let mut y = [0.0f32; 3];
            let w: Vec<f32> = a[..3 * 300].to_vec();
            matvec(isa, &w, &[1.0, 2.0, 3.0], &b[..300], &mut y);
            for (o, v) in y.iter().enumerate() {
                let r: f64 = (o + 1) as f64
                    + (0..300).map(|i| w[o * 300 + i] as f64 * b[i] as f64).sum::<f64>();
                assert!((*v as f64 - r).abs() <= 1e-4, "{isa}: row {o}: {v} vs {r}");
            }
        }
    }
}
