//! The planner: picks the kernel family for a convolution's geometry, and the
//! instantiation of it for the chosen instruction set. Pure: the ISA comes in
//! as an argument (its process default, `REPCONV_ISA`, is read once per
//! process by [`Isa::from_env`]).

use super::params::Conv2dParams;
use crate::error::Result;
use repconv_kernels::{ConvShape, Isa, KernelInfo, Op, Precision, kernel_info, select};

/// The kernel families a convolution can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Family {
    /// 1x1, stride 1, no padding: a GEMM straight over the input, no copies.
    Conv1x1,
    /// 3x3, stride 1 or 2 (same on both axes), padding 1, dilation 1, groups 1:
    /// direct implicit GEMM over a padded, phase-split input.
    Conv3x3,
    /// Depthwise 3x3 (groups = in = out channels), stride 1 or 2, padding 1,
    /// dilation 1: vectorised along W over padded planes.
    Dw3x3,
    /// Depthwise 1x1 (groups = in = out channels), stride 1 or 2, no
    /// padding: a per-channel scale and shift (MobileOne's scale branch).
    Dw1x1,
    /// Any geometry: im2col per group into a reused buffer, then the 1x1 GEMM.
    General,
}

/// How a [`Conv2d`](super::Conv2d) chooses its kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KernelChoice {
    /// The fastest kernel whose preconditions the geometry meets (the default).
    #[default]
    Auto,
    /// Always the general im2col path (a baseline for benchmarks and tests).
    General,
}

/// The chosen kernel of one convolution: family, ISA and registry entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    family: Family,
    isa: Isa,
    info: &'static KernelInfo,
}

impl Plan {
    /// Validates `params` and picks the kernel for `isa`: the first registry
    /// entry of the ISA that accepts the geometry ([`repconv_kernels::select`]).
    pub fn new(params: &Conv2dParams, choice: KernelChoice, isa: Isa) -> Result<Plan> {
        params.validate()?;
        let info = match choice {
            KernelChoice::General => kernel_info(Op::General, isa),
            KernelChoice::Auto => select(&shape(params), isa, Precision::F32)
                .unwrap_or_else(|| kernel_info(Op::General, isa)),
        };
        Ok(Plan { family: family(info.op), isa, info })
    }

    /// The kernel family.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The instruction set the kernel runs with.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// The kernel's name, as in the kernels registry (e.g. `conv1x1_8x48__avx512`).
    pub fn kernel_name(&self) -> &'static str {
        self.info.name
    }

    /// The kernel's registry entry.
    pub fn kernel(&self) -> &'static KernelInfo {
        self.info
    }
}

/// The registry's view of `p`.
fn shape(p: &Conv2dParams) -> ConvShape {
    ConvShape {
        in_channels: p.in_channels,
        out_channels: p.out_channels,
        kernel: p.kernel,
        stride: p.stride,
        padding: p.padding,
        dilation: p.dilation,
        groups: p.groups,
    }
}

/// The runner family of a registry op (a new op is a compile error here
/// until it has a runner).
fn family(op: Op) -> Family {
    match op {
        Op::Conv1x1 => Family::Conv1x1,
        Op::Conv3x3S1 | Op::Conv3x3S2 => Family::Conv3x3,
        Op::Dw3x3S1 | Op::Dw3x3S2 => Family::Dw3x3,
        Op::Dw1x1S1 | Op::Dw1x1S2 => Family::Dw1x1,
        Op::General => Family::General,
    }
}
