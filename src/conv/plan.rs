//! The planner: picks the kernel family for a convolution's geometry, and the
//! instantiation of it for the chosen instruction set. Pure: the ISA comes in
//! as an argument (its process default, `REPCONV_ISA`, is read once per
//! process by [`Isa::from_env`]).

use super::params::Conv2dParams;
use crate::error::Result;
use repconv_kernels::{Isa, KernelInfo, Op, kernel_info};

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
    /// Validates `params` and picks the kernel for `isa`.
    pub fn new(params: &Conv2dParams, choice: KernelChoice, isa: Isa) -> Result<Plan> {
        params.validate()?;
        let (family, op) = match choice {
            KernelChoice::General => (Family::General, Op::General),
            KernelChoice::Auto => specialised(params),
        };
        Ok(Plan { family, isa, info: kernel_info(op, isa) })
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

/// The specialised family (and registry op) whose preconditions `p` meets,
/// or the general path.
fn specialised(p: &Conv2dParams) -> (Family, Op) {
    let stride = if p.stride == [1, 1] {
        Some(1)
    } else if p.stride == [2, 2] {
        Some(2)
    } else {
        None
    };
    let depthwise = p.groups == p.in_channels && p.groups == p.out_channels;
    let pick = |s1: Op, s2: Op| if stride == Some(1) { s1 } else { s2 };
    if p.kernel == [1, 1] && p.stride == [1, 1] && p.padding == [0, 0] && p.groups == 1 {
        (Family::Conv1x1, Op::Conv1x1)
    } else if p.kernel == [3, 3]
        && p.padding == [1, 1]
        && p.dilation == [1, 1]
        && p.groups == 1
        && stride.is_some()
    {
        (Family::Conv3x3, pick(Op::Conv3x3S1, Op::Conv3x3S2))
    } else if p.kernel == [3, 3]
        && p.padding == [1, 1]
        && p.dilation == [1, 1]
        && depthwise
        && stride.is_some()
    {
        (Family::Dw3x3, pick(Op::Dw3x3S1, Op::Dw3x3S2))
    } else if p.kernel == [1, 1]
        && p.padding == [0, 0]
        && depthwise
        && p.groups > 1
        && stride.is_some()
    {
        (Family::Dw1x1, pick(Op::Dw1x1S1, Op::Dw1x1S2))
    } else {
        (Family::General, Op::General)
    }
}
