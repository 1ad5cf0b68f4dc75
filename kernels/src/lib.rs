//! Slice-level SIMD micro-kernels for `repconv`.
//!
//! No tensor type, no threads, no allocation in the hot loops: each kernel
//! family computes one output block from slices and strides (in elements).
//! Every kernel is written once against the lane type [`lanes::V`], so one
//! source serves AVX-512, AVX2, SSE, NEON and wasm builds.
//!
//! `unsafe` lives only in [`lanes`]'s unchecked helpers and the kernel bodies
//! that call them after one bounds `assert!` at entry.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod act;
pub mod conv1x1;
pub mod conv3x3;
pub mod dwconv1x1;
pub mod dwconv3x3;
pub mod lanes;
pub mod peak;
#[cfg(any(test, feature = "testing"))]
pub mod reference;
