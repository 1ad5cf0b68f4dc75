//! The activation applied in registers by every kernel's epilogue, as a
//! zero-sized type parameter so the hot loop has no runtime flag.
//!
//! NaN semantics match PyTorch on every build: `relu(NaN) == NaN`, and
//! `relu(-0.0) == -0.0`. `wide`'s `max` returns the non-NaN operand and would
//! turn NaN into 0, so it is not used. On x86, ReLU is one `maxps(0, x)`:
//! that instruction returns its second operand when either is NaN (and when
//! both are zeros), which is exactly `x < 0 ? 0 : x`; elsewhere it is that
//! compare and a select. One instruction instead of two matters in the
//! depthwise kernels, where the epilogue is a tenth of the arithmetic.

use crate::lanes::V;

/// An elementwise activation, applied after the bias is added.
pub trait Act: Copy + Send + Sync + 'static {
    /// Short name, used in logs and kernel descriptions.
    const NAME: &'static str;
    /// Applies the activation to every lane.
    fn apply(v: V) -> V;
    /// Applies the activation to one value; must agree bit for bit with [`Act::apply`].
    fn apply_scalar(x: f32) -> f32;
}

/// No activation: the value is stored as computed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Identity;

impl Act for Identity {
    const NAME: &'static str = "identity";
    #[inline(always)]
    fn apply(v: V) -> V {
        v
    }
    #[inline(always)]
    fn apply_scalar(x: f32) -> f32 {
        x
    }
}

/// ReLU: negative values become `+0.0`; NaN stays NaN; `-0.0` stays `-0.0`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Relu;

impl Act for Relu {
    const NAME: &'static str = "relu";
    #[inline(always)]
    fn apply(v: V) -> V {
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        {
            // maxps(a, b) = a > b ? a : b, so NaN (or an equal zero) in x gives x.
            V::ZERO.fast_max(v)
        }
        #[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
        {
            v.simd_lt(V::ZERO).select(V::ZERO, v)
        }
    }
    #[inline(always)]
    fn apply_scalar(x: f32) -> f32 {
        if x < 0.0 { 0.0 } else { x }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lanes::LANES;

    #[test]
    fn relu_propagates_nan_and_matches_scalar() {
        let vals = [f32::NAN, -1.0, -0.0, 0.0, 2.5, f32::INFINITY, f32::NEG_INFINITY, -1e-40];
        let mut arr = [0.0f32; LANES];
        for (i, a) in arr.iter_mut().enumerate() {
            *a = vals[i % vals.len()];
        }
        let out = Relu::apply(V::new(arr)).to_array();
        for (x, y) in arr.iter().zip(out.iter()) {
            assert_eq!(y.to_bits(), Relu::apply_scalar(*x).to_bits(), "relu({x})");
        }
        assert!(Relu::apply_scalar(f32::NAN).is_nan());
        assert_eq!(Relu::apply_scalar(-3.0), 0.0);
        assert_eq!(Relu::apply_scalar(f32::INFINITY), f32::INFINITY);
    }
}
