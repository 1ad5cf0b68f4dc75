//! The planner: picks the kernel family for a convolution's geometry.
//!
//! `Plan::new` is pure apart from one knob, `REPCONV_FORCE_KERNEL=general`,
//! read here only, which forces the general path (for tests and benches).

use super::params::Conv2dParams;
use crate::error::Result;

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
    /// `REPCONV_FORCE_KERNEL=general` in the environment turns this into `General`.
    #[default]
    Auto,
    /// Always the general im2col path (a baseline for benchmarks and tests).
    General,
}

/// The chosen kernel of one convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    family: Family,
    name: &'static str,
}

/// Name of the general path in this build.
const GENERAL_NAME: &str = if cfg!(target_feature = "avx512f") {
    "general_im2col+conv1x1_8x48__x16"
} else {
    "general_im2col+conv1x1_6x16__x8"
};

impl Plan {
    /// Validates `params` and picks the kernel family.
    pub fn new(params: &Conv2dParams, choice: KernelChoice) -> Result<Plan> {
        params.validate()?;
        let forced = std::env::var("REPCONV_FORCE_KERNEL").is_ok_and(|v| v == "general");
        if choice == KernelChoice::General || forced {
            return Ok(Plan { family: Family::General, name: GENERAL_NAME });
        }
        let p = params;
        let plan =
            if p.kernel == [1, 1] && p.stride == [1, 1] && p.padding == [0, 0] && p.groups == 1 {
                Plan { family: Family::Conv1x1, name: repconv_kernels::conv1x1::NAME }
            } else if p.kernel == [3, 3]
                && p.padding == [1, 1]
                && p.dilation == [1, 1]
                && p.groups == 1
                && (p.stride == [1, 1] || p.stride == [2, 2])
            {
                let name = if p.stride[0] == 1 {
                    repconv_kernels::conv3x3::NAME_S1
                } else {
                    repconv_kernels::conv3x3::NAME_S2
                };
                Plan { family: Family::Conv3x3, name }
            } else if p.kernel == [3, 3]
                && p.padding == [1, 1]
                && p.dilation == [1, 1]
                && p.groups == p.in_channels
                && p.groups == p.out_channels
                && (p.stride == [1, 1] || p.stride == [2, 2])
            {
                let name = if p.stride[0] == 1 {
                    repconv_kernels::dwconv3x3::NAME_S1
                } else {
                    repconv_kernels::dwconv3x3::NAME_S2
                };
                Plan { family: Family::Dw3x3, name }
            } else if p.kernel == [1, 1]
                && p.padding == [0, 0]
                && p.groups == p.in_channels
                && p.groups == p.out_channels
                && p.groups > 1
                && (p.stride == [1, 1] || p.stride == [2, 2])
            {
                let name = if p.stride[0] == 1 {
                    repconv_kernels::dwconv1x1::NAME_S1
                } else {
                    repconv_kernels::dwconv1x1::NAME_S2
                };
                Plan { family: Family::Dw1x1, name }
            } else {
                Plan { family: Family::General, name: GENERAL_NAME }
            };
        Ok(plan)
    }

    /// The kernel family.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The kernel's name, as in the kernels registry (e.g. `conv1x1_8x48__x16`).
    pub fn kernel_name(&self) -> &'static str {
        self.name
    }
}
