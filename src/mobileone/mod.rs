//! MobileOne (Apple, "An Improved One millisecond Mobile Backbone") on top of
//! [`Conv2d`](crate::Conv2d): blocks and networks that run either in their
//! train-time multi-branch form or as the single fused convolution they
//! reparameterize into.
//!
//! * [`BatchNorm2d`]: inference-mode batch normalisation, and its folding into
//!   a preceding convolution.
//! * [`MobileOneBlock`]: `k` conv branches (conv + BN), a 1x1 scale branch
//!   (conv + BN) when the kernel is larger than 1, a BN skip branch when
//!   in == out channels and stride == 1, optional [`SqueezeExcite`], ReLU.
//!   [`MobileOneBlock::reparameterize`] folds it into a [`ReparamBlock`]: one
//!   convolution with bias and fused ReLU.
//! * [`MobileOne`]: the S0..S4 networks ([`MobileOneConfig`]): stem, stages of
//!   (depthwise 3x3 block, pointwise 1x1 block) pairs, global average pool and
//!   a linear head, runnable in either form through a reusable [`Workspace`].
//!
//! The structure and field names follow timm's `byobnet.py` (`MobileOneBlock`,
//! `mobileone_s0..s4`), so a checkpoint's tensor names map onto
//! [`MobileOne::blocks`] (`stem`, `stages.{s}.{i}`) and each block's
//! `conv_kxk.{b}`, `conv_scale`, `identity`, `attn.fc1/fc2`, `reparam_conv`,
//! and the network's `head.fc`.
//!
//! ```
//! use repconv::mobileone::{BlockConfig, MobileOneBlock, SplitMix64};
//! use repconv::Tensor;
//!
//! // A depthwise 3x3 block with 4 conv branches, a scale and a skip branch.
//! let config = BlockConfig::new(16, 16, 3).with_groups(16).with_branches(4);
//! let block = MobileOneBlock::random(config, &mut SplitMix64::new(7))?;
//! let fused = block.reparameterize()?;
//!
//! let mut rng = SplitMix64::new(1);
//! let x = Tensor::from_vec([1, 16, 9, 9], rng.uniform_vec(16 * 81, -1.0, 1.0))?;
//! let (multi, one) = (block.forward(&x)?, fused.forward(&x)?);
//! let max = multi.as_slice().iter().fold(0f32, |m, v| m.max(v.abs()));
//! for (a, b) in multi.as_slice().iter().zip(one.as_slice()) {
//!     assert!((a - b).abs() <= 1e-5 * max + 1e-6);
//! }
//! # Ok::<(), repconv::Error>(())
//! ```

mod batchnorm;
mod block;
mod network;
mod ops;
mod reparam;
mod rng;
mod se;
mod workspace;

pub use batchnorm::BatchNorm2d;
pub use block::{Block, BlockConfig, ConvBn, MobileOneBlock, ReparamBlock};
pub use network::{BatchSplit, Linear, MobileOne, MobileOneConfig, Variant};
pub use reparam::{fold_conv_bn, identity_kernel};
pub use rng::SplitMix64;
pub use se::{SqueezeExcite, se_channels};
pub use workspace::Workspace;
