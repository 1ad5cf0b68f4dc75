//! Slice-level SIMD micro-kernels for `repconv`.
//!
//! No tensor type, no threads, no allocation in the hot loops: each kernel
//! family computes one output block from slices and strides (in elements).
//! Every kernel body is written once, generic over a crate-private vector
//! abstraction, and instantiated for AVX-512F, AVX2+FMA and a portable `wide`
//! baseline; the caller picks one with an [`Isa`], which can only be obtained
//! for an instruction set the CPU has (see [`isa`]). No build flags are needed.
//!
//! Every public function is safe for any arguments: a slice too short for the
//! shapes, or sizes that overflow, panic (documented under `# Panics`); nothing
//! is read or written out of bounds. `unsafe` lives only in the ISA
//! instantiations' intrinsics, in `lanes`'s unchecked helpers and in the
//! kernel bodies that call them after one bounds `assert!` at entry.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod act;
pub mod bf16;
pub mod conv1x1;
pub mod conv3x3;
pub mod dot;
pub mod dwconv1x1;
pub mod dwconv3x3;
pub mod isa;
mod lanes;
pub mod peak;
pub mod prefetch;
#[cfg(any(test, feature = "testing"))]
pub mod reference;

pub use act::Activation;
pub use isa::{ISA_ENV, Isa, IsaError, IsaKind};

/// The operations kernels exist for (one per kernel family and stride).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// 1x1, stride 1, no padding, groups 1 ([`conv1x1`]).
    Conv1x1,
    /// Dense 3x3, stride 1, padding 1 ([`conv3x3`]).
    Conv3x3S1,
    /// Dense 3x3, stride 2, padding 1 ([`conv3x3`]).
    Conv3x3S2,
    /// Depthwise 3x3, stride 1, padding 1 ([`dwconv3x3::dw3x3_s1p1`]).
    Dw3x3S1,
    /// Depthwise 3x3, stride 2, padding 1 ([`dwconv3x3::dw3x3_s2p1`]).
    Dw3x3S2,
    /// Depthwise 1x1, stride 1 ([`dwconv1x1`]).
    Dw1x1S1,
    /// Depthwise 1x1, stride 2 ([`dwconv1x1`]).
    Dw1x1S2,
    /// Anything else: im2col, then the 1x1 GEMM ([`conv1x1`]).
    General,
}

/// One kernel instantiation: what it computes, for which ISA, and its name
/// (`<op>_<geom>_<tile>__<isa>`), the one name used by the planner, the
/// conformance tests, the benches and the CLI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelInfo {
    /// The operation.
    pub op: Op,
    /// The instruction set it is compiled for.
    pub isa: IsaKind,
    /// Its name.
    pub name: &'static str,
}

const fn k(op: Op, isa: IsaKind, name: &'static str) -> KernelInfo {
    KernelInfo { op, isa, name }
}

/// Every kernel x ISA, the single list the planner, tests and benches read.
/// Tiles: GEMM kernels `MR x NR` output channels x pixels ([`conv1x1::tile`]);
/// depthwise kernels output rows (or vectors per step) x lanes.
pub const KERNELS: &[KernelInfo] = {
    use IsaKind::{Avx2, Avx512, Portable};
    use Op::*;
    &[
        k(Conv1x1, Avx512, "conv1x1_8x48__avx512"),
        k(Conv1x1, Avx2, "conv1x1_6x16__avx2"),
        k(Conv1x1, Portable, "conv1x1_6x16__portable"),
        k(Conv3x3S1, Avx512, "conv3x3_s1_8x48__avx512"),
        k(Conv3x3S1, Avx2, "conv3x3_s1_6x16__avx2"),
        k(Conv3x3S1, Portable, "conv3x3_s1_6x16__portable"),
        k(Conv3x3S2, Avx512, "conv3x3_s2_8x48__avx512"),
        k(Conv3x3S2, Avx2, "conv3x3_s2_6x16__avx2"),
        k(Conv3x3S2, Portable, "conv3x3_s2_6x16__portable"),
        k(Dw3x3S1, Avx512, "dw3x3_s1p1_7x16__avx512"),
        k(Dw3x3S1, Avx2, "dw3x3_s1p1_7x8__avx2"),
        k(Dw3x3S1, Portable, "dw3x3_s1p1_4x8__portable"),
        k(Dw3x3S2, Avx512, "dw3x3_s2p1_1x16__avx512"),
        k(Dw3x3S2, Avx2, "dw3x3_s2p1_1x8__avx2"),
        k(Dw3x3S2, Portable, "dw3x3_s2p1_1x8__portable"),
        k(Dw1x1S1, Avx512, "dw1x1_s1_1x16__avx512"),
        k(Dw1x1S1, Avx2, "dw1x1_s1_1x8__avx2"),
        k(Dw1x1S1, Portable, "dw1x1_s1_1x8__portable"),
        k(Dw1x1S2, Avx512, "dw1x1_s2_1x1__avx512"),
        k(Dw1x1S2, Avx2, "dw1x1_s2_1x1__avx2"),
        k(Dw1x1S2, Portable, "dw1x1_s2_1x1__portable"),
        k(General, Avx512, "general_im2col+conv1x1_8x48__avx512"),
        k(General, Avx2, "general_im2col+conv1x1_6x16__avx2"),
        k(General, Portable, "general_im2col+conv1x1_6x16__portable"),
    ]
};

/// The registry entry of `op` for `isa`.
pub fn kernel_info(op: Op, isa: Isa) -> &'static KernelInfo {
    KERNELS
        .iter()
        .find(|k| k.op == op && k.isa == isa.kind())
        .expect("the registry lists every op for every ISA (tested)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_has_each_op_once_per_isa_and_names_carry_isa_and_tile() {
        let ops = [
            Op::Conv1x1,
            Op::Conv3x3S1,
            Op::Conv3x3S2,
            Op::Dw3x3S1,
            Op::Dw3x3S2,
            Op::Dw1x1S1,
            Op::Dw1x1S2,
            Op::General,
        ];
        for kind in IsaKind::ALL {
            for op in ops {
                let n = KERNELS.iter().filter(|k| k.op == op && k.isa == kind).count();
                assert_eq!(n, 1, "{op:?} x {kind}");
            }
        }
        for k in KERNELS {
            assert!(k.name.ends_with(&format!("__{}", k.isa.name())), "{}", k.name);
            let lanes = k.isa.lanes();
            match k.op {
                Op::Dw3x3S1 => {
                    let rows = if k.isa == IsaKind::Portable { 4 } else { 7 };
                    assert!(k.name.contains(&format!("_{rows}x{lanes}__")))
                }
                Op::Dw3x3S2 => assert!(k.name.contains(&format!("_1x{lanes}__"))),
                Op::Dw1x1S1 => assert!(k.name.contains(&format!("_1x{lanes}__"))),
                Op::Dw1x1S2 => assert!(k.name.contains("_1x1__")),
                _ => {}
            }
        }
        assert_eq!(KERNELS.len(), ops.len() * IsaKind::ALL.len());
    }

    #[test]
    fn gemm_names_match_the_tiles_of_every_available_isa() {
        for isa in Isa::available() {
            let (mr, nr) = conv1x1::tile(isa);
            for op in [Op::Conv1x1, Op::Conv3x3S1, Op::Conv3x3S2, Op::General] {
                let name = kernel_info(op, isa).name;
                assert!(name.contains(&format!("_{mr}x{nr}__")), "{name} vs {mr}x{nr}");
            }
        }
    }
}
