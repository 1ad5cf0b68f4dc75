//! # repconv
//!
//! Hand-tuned SIMD NCHW f32 convolutions for CPUs, and the MobileOne
//! reparameterization they make fast.
//!
//! ```
//! use repconv::{Activation, Conv2d, Conv2dParams, Tensor};
//!
//! // 3x3 convolution, 8 -> 16 channels, stride 1, padding 1, bias, ReLU.
//! let params = Conv2dParams::new(8, 16, [3, 3]).with_padding([1, 1]);
//! let weights = vec![0.01f32; params.weight_len()?];
//! let bias = vec![0.1f32; 16];
//! let conv = Conv2d::new(params, &weights, Some(&bias), Activation::Relu)?;
//!
//! let input = Tensor::from_vec([1, 8, 32, 32], vec![1.0; 8 * 32 * 32])?;
//! let output = conv.forward(&input)?;
//! assert_eq!(output.shape(), [1, 16, 32, 32]);
//! // Interior pixels see all 8 * 9 taps: 0.72 + 0.1.
//! assert!((output.as_slice()[16 * 32 + 16] - 0.82).abs() < 1e-5);
//! println!("ran {}", conv.kernel_name());
//! # Ok::<(), repconv::Error>(())
//! ```
//!
//! Layers: [`Tensor`] and its borrowed views; [`Conv2dParams`] (validated
//! geometry); [`Conv2d`] (packed weights + a plan that picks a specialised
//! kernel from `repconv-kernels` or the general im2col path); rayon tiling that
//! gives bitwise identical results for any thread count.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod compare;
pub mod conv;
pub mod error;
pub mod mobileone;
mod parallel;
mod scratch;
pub mod tensor;
#[cfg(feature = "safetensors")]
pub mod weights;

pub use conv::plan::BF16_ENV;
pub use conv::{Activation, Conv2d, Conv2dParams, Parallelism};
pub use error::{Error, Result};
pub use repconv_kernels::ISA_ENV;
pub use tensor::{Tensor, TensorView, TensorViewMut};

/// The largest number of elements any tensor, weight buffer or workspace the
/// library creates may have (2^31 floats = 8 GiB). Larger requests return
/// [`Error::TooLarge`] instead of attempting the allocation.
pub const MAX_ELEMENTS: usize = 1 << 31;

/// Instruction sets: [`Isa::best`] is what this CPU runs by default,
/// [`Isa::available`] lists the others, [`Isa::from_name`] picks one by name,
/// and [`Conv2d::with_isa`] (or the networks' `with_isa`) applies it.
pub use repconv_kernels::{Isa, IsaError, IsaKind, Precision};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
