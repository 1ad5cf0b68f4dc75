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

/// What the crate knows about one kernel: the name used everywhere (plan,
/// benches, logs) and what it computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelInfo {
    /// `<op>_<geom>_<tile>__<lanes>`, e.g. `conv1x1_8x48__x16`.
    pub name: &'static str,
    /// Kernel height and width.
    pub kernel: usize,
    /// Stride (same on both axes).
    pub stride: usize,
    /// Whether it is depthwise (groups = channels).
    pub depthwise: bool,
}

/// Every specialised kernel of this build (the general path is not listed:
/// it is the 1x1 kernel over an im2col matrix).
pub const KERNELS: &[KernelInfo] = &[
    KernelInfo { name: conv1x1::NAME, kernel: 1, stride: 1, depthwise: false },
    KernelInfo { name: conv3x3::NAME_S1, kernel: 3, stride: 1, depthwise: false },
    KernelInfo { name: conv3x3::NAME_S2, kernel: 3, stride: 2, depthwise: false },
    KernelInfo { name: dwconv3x3::NAME_S1, kernel: 3, stride: 1, depthwise: true },
    KernelInfo { name: dwconv3x3::NAME_S2, kernel: 3, stride: 2, depthwise: true },
    KernelInfo { name: dwconv1x1::NAME_S1, kernel: 1, stride: 1, depthwise: true },
    KernelInfo { name: dwconv1x1::NAME_S2, kernel: 1, stride: 2, depthwise: true },
];
