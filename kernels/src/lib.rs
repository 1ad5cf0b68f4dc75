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

use std::sync::OnceLock;

pub use act::Activation;
pub use isa::{ISA_ENV, Isa, IsaError, IsaKind, IsaTraits};

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

/// The number format a kernel computes in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// f32 inputs, weights, arithmetic and outputs.
    #[default]
    F32,
    /// Inputs and weights rounded to bfloat16 (nearest even) for the
    /// products, f32 sums, bias, activation and outputs ([`bf16`]); needs
    /// AVX512_BF16.
    Bf16,
}

impl Precision {
    /// Its name in kernel names (`f32` is left out of them).
    pub const fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

/// A convolution's geometry as the registry's predicates see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel `[kh, kw]`.
    pub kernel: [usize; 2],
    /// Stride `[sh, sw]`.
    pub stride: [usize; 2],
    /// Zero padding `[ph, pw]`.
    pub padding: [usize; 2],
    /// Dilation `[dh, dw]`.
    pub dilation: [usize; 2],
    /// Groups.
    pub groups: usize,
}

impl ConvShape {
    fn depthwise(&self) -> bool {
        self.groups == self.in_channels && self.groups == self.out_channels
    }
    fn square(&self, kernel: usize, stride: usize, padding: usize) -> bool {
        self.kernel == [kernel; 2]
            && self.stride == [stride; 2]
            && self.padding == [padding; 2]
            // A 1x1 kernel reads one tap whatever its dilation.
            && (kernel == 1 || self.dilation == [1; 2])
    }
}

/// One kernel instantiation: what it computes, in which precision, for which
/// ISA, its register tile, and its name (`<op>_<geom>_<tile>__<isa>`), the one
/// name used by the planner, the conformance tests, the benches and the CLI.
/// Two entries are equal when their names are (names are unique).
#[derive(Clone, Copy, Debug)]
pub struct KernelInfo {
    /// The operation.
    pub op: Op,
    /// The number format.
    pub precision: Precision,
    /// The instruction set it is compiled for.
    pub isa: IsaKind,
    /// Register tile: output channels (GEMM kernels) or output rows
    /// (depthwise kernels) per step.
    pub mr: usize,
    /// Register tile: output pixels per step.
    pub nr: usize,
    /// Its name.
    pub name: &'static str,
    /// Whether the kernel computes a convolution of this geometry.
    pub accepts: fn(&ConvShape) -> bool,
}

impl PartialEq for KernelInfo {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for KernelInfo {}

/// One line of the registry: a kernel family's op, how its name starts, its
/// tile on an ISA, and the geometries it takes. Instantiated for every ISA
/// this build compiles ([`IsaKind::compiled`]), so an ISA adds no line here.
struct Line {
    op: Op,
    precision: Precision,
    prefix: &'static str,
    tile: fn(IsaTraits) -> (usize, usize),
    accepts: fn(&ConvShape) -> bool,
    /// The ISAs the line has an instantiation for.
    on: fn(IsaKind) -> bool,
}

fn every_isa(_: IsaKind) -> bool {
    true
}

/// The bf16 dense 3x3 takes layers of 16 to 4096 input channels. A stem
/// (3 channels: the image) stays f32: rounding the image to bf16 raised the
/// S0 fixture's bf16-vs-f32 logit error from 2.8e-2 to 7.1e-2 of the largest
/// logit and changed its top class, for 6% of the network's FLOPs.
fn bf16_dense3x3(s: &ConvShape, stride: usize) -> bool {
    s.square(3, stride, 1) && s.groups == 1 && (16..=1 << 12).contains(&s.in_channels)
}

fn bf16_dense3x3_s1(s: &ConvShape) -> bool {
    bf16_dense3x3(s, 1)
}

fn bf16_dense3x3_s2(s: &ConvShape) -> bool {
    bf16_dense3x3(s, 2)
}

fn gemm_tile(t: IsaTraits) -> (usize, usize) {
    (t.gemm_mr, t.gemm_nr)
}

/// Every kernel family's ops, in the planner's order of preference: the
/// first line whose predicate accepts a geometry runs it (`General` accepts
/// every geometry, so it comes last).
const LINES: &[Line] = &[
    Line {
        op: Op::Conv1x1,
        precision: Precision::F32,
        prefix: "conv1x1",
        tile: gemm_tile,
        accepts: |s| s.square(1, 1, 0) && s.groups == 1,
        on: every_isa,
    },
    Line {
        op: Op::Conv1x1,
        precision: Precision::Bf16,
        prefix: "conv1x1_bf16",
        tile: |_| (bf16::MR, bf16::NR),
        // Reductions up to the f32 GEMM's limit, so its scratch stays bounded.
        accepts: |s| s.square(1, 1, 0) && s.groups == 1 && s.in_channels <= 1 << 16,
        on: |isa| isa == IsaKind::Avx512,
    },
    Line {
        op: Op::Conv3x3S1,
        precision: Precision::F32,
        prefix: "conv3x3_s1",
        tile: gemm_tile,
        accepts: |s| s.square(3, 1, 1) && s.groups == 1,
        on: every_isa,
    },
    Line {
        op: Op::Conv3x3S2,
        precision: Precision::F32,
        prefix: "conv3x3_s2",
        tile: gemm_tile,
        accepts: |s| s.square(3, 2, 1) && s.groups == 1,
        on: every_isa,
    },
    Line {
        op: Op::Conv3x3S1,
        precision: Precision::Bf16,
        prefix: "conv3x3_bf16_s1",
        tile: |_| (bf16::MR, bf16::NR),
        accepts: bf16_dense3x3_s1,
        on: |isa| isa == IsaKind::Avx512,
    },
    Line {
        op: Op::Conv3x3S2,
        precision: Precision::Bf16,
        prefix: "conv3x3_bf16_s2",
        tile: |_| (bf16::MR, bf16::NR),
        accepts: bf16_dense3x3_s2,
        on: |isa| isa == IsaKind::Avx512,
    },
    Line {
        op: Op::Dw3x3S1,
        precision: Precision::F32,
        prefix: "dw3x3_s1p1",
        tile: |t| (dwconv3x3::s1_rows(t.registers), t.lanes),
        accepts: |s| s.square(3, 1, 1) && s.depthwise(),
        on: every_isa,
    },
    Line {
        op: Op::Dw3x3S2,
        precision: Precision::F32,
        prefix: "dw3x3_s2p1",
        tile: |t| (1, t.lanes),
        accepts: |s| s.square(3, 2, 1) && s.depthwise(),
        on: every_isa,
    },
    Line {
        op: Op::Dw1x1S1,
        precision: Precision::F32,
        prefix: "dw1x1_s1",
        tile: |t| (1, t.lanes),
        accepts: |s| s.square(1, 1, 0) && s.depthwise() && s.groups > 1,
        on: every_isa,
    },
    Line {
        op: Op::Dw1x1S2,
        precision: Precision::F32,
        prefix: "dw1x1_s2",
        tile: |_| (1, 1),
        accepts: |s| s.square(1, 2, 0) && s.depthwise() && s.groups > 1,
        on: every_isa,
    },
    Line {
        op: Op::General,
        precision: Precision::F32,
        prefix: "general_im2col+conv1x1",
        tile: gemm_tile,
        accepts: |_| true,
        on: every_isa,
    },
];

/// Every kernel x ISA this build compiles, the single list the planner,
/// tests, benches and CLI read (built once, on first use).
pub fn kernels() -> &'static [KernelInfo] {
    static ALL: OnceLock<Vec<KernelInfo>> = OnceLock::new();
    ALL.get_or_init(|| {
        let mut all = Vec::new();
        for isa in IsaKind::ALL.into_iter().filter(|k| k.compiled()) {
            for line in LINES.iter().filter(|l| (l.on)(isa)) {
                let (mr, nr) = (line.tile)(isa.traits());
                let name = match line.precision {
                    Precision::F32 => format!("{}_{mr}x{nr}__{isa}", line.prefix),
                    // The instruction set is the ISA's plus AVX512_BF16.
                    Precision::Bf16 => format!("{}_{mr}x{nr}__{isa}bf16", line.prefix),
                };
                all.push(KernelInfo {
                    op: line.op,
                    precision: line.precision,
                    isa,
                    mr,
                    nr,
                    // Leaked once per process: names are `&'static str`
                    // everywhere (plans, bench ids, the C API).
                    name: Box::leak(name.into_boxed_str()),
                    accepts: line.accepts,
                });
            }
        }
        all
    })
}

/// The registry entry of `op` for `isa` in f32.
///
/// # Panics
/// Never for an [`Isa`] (which this build always compiles): every op has a
/// line, instantiated for every compiled ISA.
pub fn kernel_info(op: Op, isa: Isa) -> &'static KernelInfo {
    kernels()
        .iter()
        .find(|k| k.op == op && k.isa == isa.kind() && k.precision == Precision::F32)
        .expect("the registry lists every op for every compiled ISA")
}

/// The first kernel, in the registry's order, of `isa` and `precision` that
/// accepts `shape` (for `F32`, at least the general path always does).
pub fn select(shape: &ConvShape, isa: Isa, precision: Precision) -> Option<&'static KernelInfo> {
    kernels()
        .iter()
        .filter(|k| k.isa == isa.kind() && k.precision == precision)
        .find(|k| (k.accepts)(shape))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_has_each_op_once_per_compiled_isa_and_names_carry_isa_and_tile() {
        let compiled: Vec<IsaKind> = IsaKind::ALL.into_iter().filter(|k| k.compiled()).collect();
        let mut lines = 0;
        for &kind in &compiled {
            for line in LINES.iter().filter(|l| (l.on)(kind)) {
                let same = |k: &&KernelInfo| {
                    k.op == line.op && k.isa == kind && k.precision == line.precision
                };
                assert_eq!(kernels().iter().filter(same).count(), 1, "{:?} x {kind}", line.op);
                lines += 1;
            }
            // Every op has an f32 kernel on every ISA.
            for line in LINES {
                let f32_of_op = |k: &&KernelInfo| {
                    k.op == line.op && k.isa == kind && k.precision == Precision::F32
                };
                assert_eq!(kernels().iter().filter(f32_of_op).count(), 1);
            }
        }
        assert_eq!(kernels().len(), lines);
        for k in kernels() {
            let suffix = match k.precision {
                Precision::F32 => format!("_{}x{}__{}", k.mr, k.nr, k.isa),
                Precision::Bf16 => format!("_{}x{}__{}bf16", k.mr, k.nr, k.isa),
            };
            assert!(k.name.ends_with(&suffix), "{}", k.name);
            assert_eq!(k.name.contains("_bf16_"), k.precision == Precision::Bf16, "{}", k.name);
        }
        let names: std::collections::HashSet<_> = kernels().iter().map(|k| k.name).collect();
        assert_eq!(names.len(), kernels().len(), "names are unique");
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
        // The tile names of today's ISAs, spelled out once.
        assert!(kernels().iter().any(|k| k.name == "conv1x1_6x16__portable"));
        assert!(kernels().iter().any(|k| k.name == "dw3x3_s1p1_4x8__portable"));
        if IsaKind::Avx512.compiled() {
            assert!(kernels().iter().any(|k| k.name == "conv1x1_8x48__avx512"));
            assert!(kernels().iter().any(|k| k.name == "dw3x3_s1p1_7x16__avx512"));
            assert!(kernels().iter().any(|k| k.name == "dw1x1_s2_1x1__avx2"));
            assert!(kernels().iter().any(|k| k.name == "conv1x1_bf16_8x48__avx512bf16"));
        }
    }

    #[test]
    fn the_planner_picks_the_specialised_kernel_and_falls_back_to_general() {
        let isa = Isa::portable();
        let shape = |k: usize, s: usize, p: usize, groups: usize, c: usize| ConvShape {
            in_channels: c,
            out_channels: c,
            kernel: [k, k],
            stride: [s, s],
            padding: [p, p],
            dilation: [1, 1],
            groups,
        };
        let op = |s: ConvShape| select(&s, isa, Precision::F32).map(|k| k.op);
        assert_eq!(op(shape(1, 1, 0, 1, 8)), Some(Op::Conv1x1));
        assert_eq!(op(shape(3, 1, 1, 1, 8)), Some(Op::Conv3x3S1));
        assert_eq!(op(shape(3, 2, 1, 1, 8)), Some(Op::Conv3x3S2));
        assert_eq!(op(shape(3, 1, 1, 8, 8)), Some(Op::Dw3x3S1));
        assert_eq!(op(shape(3, 2, 1, 8, 8)), Some(Op::Dw3x3S2));
        assert_eq!(op(shape(1, 1, 0, 8, 8)), Some(Op::Dw1x1S1));
        assert_eq!(op(shape(1, 2, 0, 8, 8)), Some(Op::Dw1x1S2));
        // A 1-channel depthwise 1x1 is a plain 1x1 (groups 1).
        assert_eq!(op(shape(1, 1, 0, 1, 1)), Some(Op::Conv1x1));
        assert_eq!(op(shape(3, 1, 0, 1, 8)), Some(Op::General));
        assert_eq!(op(shape(3, 1, 1, 2, 8)), Some(Op::General));
        assert_eq!(op(ConvShape { dilation: [2, 2], ..shape(3, 1, 1, 1, 8) }), Some(Op::General));
        assert_eq!(op(ConvShape { stride: [1, 2], ..shape(3, 1, 1, 1, 8) }), Some(Op::General));
        // bf16 kernels exist for the 1x1 GEMM and the dense 3x3, with AVX-512.
        if let Ok(avx512) = Isa::new(IsaKind::Avx512) {
            let k = select(&shape(1, 1, 0, 1, 8), avx512, Precision::Bf16).unwrap();
            assert_eq!((k.op, k.name), (Op::Conv1x1, "conv1x1_bf16_8x48__avx512bf16"));
            assert!(select(&shape(3, 1, 1, 8, 8), avx512, Precision::Bf16).is_none());
            let k = select(&shape(3, 2, 1, 1, 16), avx512, Precision::Bf16).unwrap();
            assert_eq!((k.op, k.name), (Op::Conv3x3S2, "conv3x3_bf16_s2_8x48__avx512bf16"));
            // A stem (3 input channels) stays f32.
            let stem = ConvShape { in_channels: 3, ..shape(3, 2, 1, 1, 16) };
            assert!(select(&stem, avx512, Precision::Bf16).is_none());
        }
        assert!(select(&shape(1, 1, 0, 1, 8), isa, Precision::Bf16).is_none());
    }
}
