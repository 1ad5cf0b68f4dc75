//! The activation applied in registers by every kernel's epilogue.
//!
//! Public callers choose it with the [`Activation`] enum; inside the crate it
//! becomes a zero-sized type parameter (`Act`) so the hot loop has no
//! runtime flag.
//!
//! NaN semantics match PyTorch on every ISA: `relu(NaN) == NaN`, and
//! `relu(-0.0) == -0.0` (see [`crate::isa`]'s `Vector::relu`). `wide`'s `max`
//! returns the non-NaN operand and would turn NaN into 0, so it is not used.

use crate::isa::Vector;

/// The activation fused into a kernel's store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Activation {
    /// None: the value is stored as computed.
    #[default]
    Identity,
    /// ReLU: negative values become `+0.0`; NaN stays NaN; `-0.0` stays `-0.0`.
    Relu,
}

/// ReLU on one value, exactly as the kernels apply it (NaN stays NaN, `-0.0`
/// stays `-0.0`; `f32::max(x, 0.0)` would turn NaN into 0).
#[inline(always)]
pub fn relu(x: f32) -> f32 {
    if x < 0.0 { 0.0 } else { x }
}

/// An elementwise activation as a type, applied after the bias is added.
pub(crate) trait Act: Copy + Send + Sync + 'static {
    /// Applies the activation to every lane.
    fn apply<V: Vector>(v: V) -> V;
    /// Applies the activation to one value; agrees bit for bit with [`Act::apply`].
    fn apply_scalar(x: f32) -> f32;
}

/// No activation.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Identity;

impl Act for Identity {
    #[inline(always)]
    fn apply<V: Vector>(v: V) -> V {
        v
    }
    #[inline(always)]
    fn apply_scalar(x: f32) -> f32 {
        x
    }
}

/// ReLU (see [`relu`]).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Relu;

impl Act for Relu {
    #[inline(always)]
    fn apply<V: Vector>(v: V) -> V {
        v.relu()
    }
    #[inline(always)]
    fn apply_scalar(x: f32) -> f32 {
        relu(x)
    }
}

/// Calls `$f::<A>` with the [`Act`] type matching an [`Activation`] value.
macro_rules! with_act {
    ($act:expr, $f:ident :: <_ $(, $g:ty)*> ($($arg:expr),* $(,)?)) => {
        match $act {
            $crate::act::Activation::Identity => $f::<$crate::act::Identity $(, $g)*>($($arg),*),
            $crate::act::Activation::Relu => $f::<$crate::act::Relu $(, $g)*>($($arg),*),
        }
    };
}
pub(crate) use with_act;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::{Isa, Job, dispatch};
    use crate::lanes::Lanes;

    /// Applies `Relu::apply` to 16 values with one ISA's vectors.
    struct ReluJob([f32; 16]);
    impl Job for ReluJob {
        type Out = [f32; 16];
        #[inline(always)]
        fn run<V: Vector>(self) -> [f32; 16] {
            let mut out = [0.0; 16];
            for i in (0..16).step_by(V::LANES) {
                Relu::apply(V::load(&self.0, i)).store(&mut out, i);
            }
            out
        }
    }

    #[test]
    fn relu_propagates_nan_and_matches_scalar_on_every_isa() {
        let vals = [f32::NAN, -1.0, -0.0, 0.0, 2.5, f32::INFINITY, f32::NEG_INFINITY, -1e-40];
        let arr: [f32; 16] = core::array::from_fn(|i| vals[i % vals.len()]);
        for isa in Isa::available() {
            let out = dispatch(isa, ReluJob(arr));
            for (x, y) in arr.iter().zip(out.iter()) {
                assert_eq!(y.to_bits(), relu(*x).to_bits(), "{isa}: relu({x})");
            }
        }
        assert!(relu(f32::NAN).is_nan());
        assert_eq!(relu(-3.0), 0.0);
        assert_eq!(relu(f32::INFINITY), f32::INFINITY);
    }
}
