//! The planner: picks the kernel family for a convolution's geometry, and the
//! instantiation of it for the chosen instruction set. Pure: the ISA comes in
//! as an argument (its process default, `REPCONV_ISA`, is read once per
//! process by [`Isa::from_env`]).

use super::params::Conv2dParams;
use crate::error::{Error, Result};
use std::sync::OnceLock;

use repconv_kernels::bf16::{self, Bf16Isa, Bf16Kind};
use repconv_kernels::{
    ConvShape, Isa, IsaKind, KernelInfo, Op, Precision, kernel_info, kernels, select,
};

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
    /// The bf16 implementation, when the kernel is a bf16 one.
    bf16: Option<Bf16Isa>,
}

impl Plan {
    /// Validates `params` and picks the f32 kernel for `isa`: the first
    /// registry entry of the ISA that accepts the geometry
    /// ([`repconv_kernels::select`]).
    pub fn new(params: &Conv2dParams, choice: KernelChoice, isa: Isa) -> Result<Plan> {
        Plan::with_precision(params, choice, isa, Precision::F32)
    }

    /// [`Plan::new`] in `precision`: for `Bf16`, the bf16 kernel where one
    /// accepts the geometry (the 1x1 GEMM) and the f32 kernel elsewhere.
    /// `Bf16` needs the `avx512` ISA on a CPU with AVX512_BF16
    /// ([`Error::Precision`] otherwise, never an illegal instruction).
    pub fn with_precision(
        params: &Conv2dParams,
        choice: KernelChoice,
        isa: Isa,
        precision: Precision,
    ) -> Result<Plan> {
        params.validate()?;
        let bf16 = match precision {
            Precision::Bf16 => Some(bf16_isa(isa)?),
            Precision::F32 => None,
        };
        let shape = shape(params);
        // The bf16 kernels exist for the avx512 ISA only; the software model
        // (REPCONV_BF16=emulated) runs the same kernel with any ISA.
        let bf16_kernel =
            || kernels().iter().find(|k| k.precision == Precision::Bf16 && (k.accepts)(&shape));
        let info = match choice {
            KernelChoice::General => kernel_info(Op::General, isa),
            KernelChoice::Auto => bf16
                .and_then(|_| bf16_kernel())
                .or_else(|| select(&shape, isa, Precision::F32))
                .unwrap_or_else(|| kernel_info(Op::General, isa)),
        };
        let bf16 = bf16.filter(|_| info.precision == Precision::Bf16);
        Ok(Plan { family: family(info.op), isa, info, bf16 })
    }

    /// The bf16 implementation the kernel runs with, when it is a bf16 kernel.
    pub fn bf16(&self) -> Option<Bf16Isa> {
        self.bf16
    }

    /// The precision the chosen kernel computes in.
    pub fn precision(&self) -> Precision {
        self.info.precision
    }

    /// The kernel family.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The instruction set the kernel runs with.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// The kernel's name, as in the kernels registry (e.g. `conv1x1_8x48__avx512`;
    /// `conv1x1_bf16_8x48__emulated` for the bf16 software model).
    pub fn kernel_name(&self) -> &'static str {
        match (self.bf16, self.info.op) {
            (Some(b), Op::Conv3x3S1) if b.kind() == Bf16Kind::Emulated => {
                bf16::conv3x3_kernel_name(b, 1)
            }
            (Some(b), Op::Conv3x3S2) if b.kind() == Bf16Kind::Emulated => {
                bf16::conv3x3_kernel_name(b, 2)
            }
            (Some(b), _) if b.kind() == Bf16Kind::Emulated => bf16::conv1x1::kernel_name(b),
            _ => self.info.name,
        }
    }

    /// The kernel's registry entry.
    pub fn kernel(&self) -> &'static KernelInfo {
        self.info
    }
}

/// The environment variable that lets `Precision::Bf16` run on the bf16
/// kernels' software model where the CPU lacks AVX512_BF16: `emulated`
/// (slow: for tests and fidelity studies on any CPU). Unset, or `native`,
/// bf16 needs the hardware.
pub const BF16_ENV: &str = "REPCONV_BF16";

/// Whether `REPCONV_BF16=emulated` (read once per process).
fn emulation_allowed() -> bool {
    static ALLOWED: OnceLock<bool> = OnceLock::new();
    *ALLOWED.get_or_init(|| std::env::var(BF16_ENV).is_ok_and(|v| v.trim() == "emulated"))
}

/// The bf16 kernels' token for `isa`: the hardware with the avx512 ISA on a
/// CPU with AVX512_BF16, else the software model if `REPCONV_BF16=emulated`,
/// else an [`Error::Precision`] saying why.
pub(crate) fn bf16_isa(isa: Isa) -> Result<Bf16Isa> {
    let native = Bf16Isa::native();
    match native {
        Ok(b) if isa.kind() == IsaKind::Avx512 => Ok(b),
        _ if emulation_allowed() => Ok(Bf16Isa::emulated()),
        Ok(_) => Err(Error::Precision {
            reason: format!("bf16 needs the avx512 kernels; this convolution runs {isa}"),
        }),
        Err(e) => Err(Error::Precision {
            reason: format!("bf16: {e} (set {BF16_ENV}=emulated for the slow software model)"),
        }),
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
