//! Opt-in bf16 compute (issue 21): f32 tensors in and out, the reduction's
//! operands rounded to bfloat16 and multiplied with `vdpbf16ps`
//! (AVX512_BF16), f32 accumulation, bias and activation in f32.
//!
//! # What is rounded, and how
//! Weights and input activations are rounded to bf16 with round-to-nearest-
//! even, exactly as `vcvtneps2bf16` does ([`f32_to_bf16`]: denormal inputs
//! become signed zeros, NaN stays a quiet NaN, values past the largest bf16
//! become infinities). Each product of two bf16 values is exact in f32; sums
//! are f32 (`vdpbf16ps`: per 32-bit lane, `acc += a.hi*b.hi`, then
//! `acc += a.lo*b.lo`, denormal inputs and results flushed to zero, round to
//! nearest even whatever MXCSR says). The bias is added in f32 (it is the
//! accumulators' start value) and ReLU is applied in f32 before the f32
//! store. NaN and infinity propagate as in the f32 kernels (PyTorch
//! semantics): a NaN input or weight makes every output it contributes to NaN,
//! also through ReLU.
//!
//! # Instruction sets
//! A [`Bf16Isa`] selects the implementation:
//! - [`Bf16Kind::Avx512Bf16`]: the hardware path, only obtainable when the
//!   CPU reports AVX512_BF16, AVX-512F/BW/VL, AVX2 and FMA ([`Bf16Isa::native`]);
//!   never a SIGILL, an [`Bf16Error`] instead;
//! - [`Bf16Kind::Emulated`]: the same kernel bodies over 16-lane arrays with
//!   a software model of each instruction (Intel's definition of
//!   `vdpbf16ps`, `vcvtne2ps2bf16`), available everywhere. It is slow; it
//!   exists so the drivers, layouts, tails and bounds are tested on every
//!   machine (the CI machine has no AVX-512 at all) and so a network can be
//!   simulated in bf16 on any CPU.
//!
//! The two may differ in the last bits of an output (the order of the two
//! products' roundings inside one `vdpbf16ps` is implementation-defined
//! enough that AMD and Intel need not agree); conversions agree bit for bit.
//!
//! # Kernels
//! - [`conv1x1_bf16`] / [`conv1x1_bf16_paired`] (`conv1x1_bf16_8x48__<isa>`):
//!   the GEMM, 8 output rows x 48 pixels per register tile, 24 `vdpbf16ps`
//!   per channel pair; f32 input converted a band at a time, or a pair panel
//!   read in place ([`conv1x1`]);
//! - [`conv3x3_bf16`] (`conv3x3_bf16_s{1,2}_8x48__<isa>`): dense 3x3,
//!   padding 1, stride 1 or 2, as pair panels of tap runs fed to the same
//!   GEMM ([`conv3x3`]);
//! - [`peak::dpbf16_loop`]: the in-process `vdpbf16ps` peak.
//!
//! # Layouts
//! - Packed weights ([`pack_weights`]): per block of [`MR`] output rows,
//!   `[bias f32 x MR][k/2 pairs][MR][2 x bf16]` as `u32` words (see
//!   [`conv1x1`]).
//! - Pair-interleaved activations ("panel", [`pack_panel`]): `[k/2][n]` `u32`
//!   words, word `(p, j)` = bf16 of channel `2p` in bits 0..16, channel
//!   `2p + 1` in bits 16..32, at `p * ldp + j`. An odd `k` pads the last pair's
//!   high half with zero.

#![allow(non_snake_case)]

pub mod conv1x1;
pub mod conv3x3;
mod convert;
mod microkernel;
pub mod peak;
mod scalar;
mod simd;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::fmt;

pub use conv1x1::{
    Conv1x1Bf16Args, Conv1x1Bf16PairedArgs, MR, NR, conv1x1_bf16, conv1x1_bf16_paired,
    pack_weights, packed_len, scratch_len,
};
pub use conv3x3::{
    Conv3x3Bf16Args, conv3x3_bf16, conv3x3_kernel_name, conv3x3_output_hw, conv3x3_scratch_len,
};
pub use convert::{
    bf16_to_f32, convert_to_bf16, f32_to_bf16, pack_panel, panel_len, round_to_bf16,
};
pub use peak::dpbf16_loop;

use simd::Simd;

/// f32 lanes per vector in every bf16 kernel (one 512-bit register; the
/// emulation uses the same width so both run the same tiles).
pub const LANES: usize = 16;

/// The bf16 implementations. A plain name: holding one says nothing about
/// the CPU (see [`Bf16Isa`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bf16Kind {
    /// `vdpbf16ps` and `vcvtne2ps2bf16` on 512-bit registers: AVX512_BF16
    /// with AVX-512F/BW/VL, AVX2 and FMA (Cooper Lake, Sapphire Rapids and
    /// later Xeons, Zen 4 and Zen 5).
    Avx512Bf16,
    /// The same kernels on 16-lane arrays with a software model of each
    /// instruction; any CPU.
    Emulated,
}

impl Bf16Kind {
    /// Every kind, best first.
    pub const ALL: [Bf16Kind; 2] = [Bf16Kind::Avx512Bf16, Bf16Kind::Emulated];

    /// The suffix used in kernel names: `avx512bf16` or `emulated`.
    pub const fn name(self) -> &'static str {
        match self {
            Bf16Kind::Avx512Bf16 => "avx512bf16",
            Bf16Kind::Emulated => "emulated",
        }
    }

    /// The kind called `name` (see [`Bf16Kind::name`]), if any.
    pub fn from_name(name: &str) -> Option<Bf16Kind> {
        Bf16Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Why this CPU cannot run the kind, or `Ok` if it can (detected at run
    /// time; `Emulated` always can).
    pub fn check(self) -> Result<(), Bf16Error> {
        match self {
            Bf16Kind::Emulated => Ok(()),
            Bf16Kind::Avx512Bf16 => native_check(),
        }
    }
}

impl fmt::Display for Bf16Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(target_arch = "x86_64")]
fn native_check() -> Result<(), Bf16Error> {
    use std::arch::is_x86_feature_detected as has;
    // The entry point enables exactly these (x86::run).
    let features: [(&'static str, bool); 6] = [
        ("avx512f", has!("avx512f")),
        ("avx512bw", has!("avx512bw")),
        ("avx512vl", has!("avx512vl")),
        ("avx512bf16", has!("avx512bf16")),
        ("avx2", has!("avx2")),
        ("fma", has!("fma")),
    ];
    match features.iter().find(|(_, present)| !present) {
        Some((name, _)) => Err(Bf16Error::MissingFeature(name)),
        None => Ok(()),
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn native_check() -> Result<(), Bf16Error> {
    Err(Bf16Error::UnsupportedArch)
}

/// Why a bf16 implementation could not be selected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bf16Error {
    /// The CPU lacks this feature (the first missing one of `avx512f`,
    /// `avx512bw`, `avx512vl`, `avx512bf16`, `avx2`, `fma`).
    MissingFeature(&'static str),
    /// Not an x86-64 build: there is no hardware bf16 path.
    UnsupportedArch,
    /// The name is not `avx512bf16` or `emulated`.
    Unknown(String),
}

impl fmt::Display for Bf16Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bf16Error::MissingFeature(feat) => {
                write!(f, "this CPU cannot run bf16 kernels: it lacks {feat}")
            }
            Bf16Error::UnsupportedArch => {
                f.write_str("bf16 kernels need an x86-64 CPU with AVX512_BF16")
            }
            Bf16Error::Unknown(name) => {
                write!(f, "unknown bf16 ISA {name:?} (expected avx512bf16 or emulated)")
            }
        }
    }
}

impl std::error::Error for Bf16Error {}

/// A bf16 implementation this CPU can run: the only way to call the bf16
/// kernels.
///
/// A value can only be made by [`Bf16Isa::new`], [`Bf16Isa::native`],
/// [`Bf16Isa::emulated`], [`Bf16Isa::available`] or [`Bf16Isa::from_name`],
/// which check the CPU, so passing one to a kernel never executes an
/// instruction the CPU lacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Bf16Isa(Bf16Kind);

impl Bf16Isa {
    /// `kind`, if this CPU supports it.
    pub fn new(kind: Bf16Kind) -> Result<Bf16Isa, Bf16Error> {
        kind.check().map(|()| Bf16Isa(kind))
    }

    /// The hardware path ([`Bf16Kind::Avx512Bf16`]), if this CPU has it.
    pub fn native() -> Result<Bf16Isa, Bf16Error> {
        Bf16Isa::new(Bf16Kind::Avx512Bf16)
    }

    /// The software model ([`Bf16Kind::Emulated`]), available everywhere.
    pub fn emulated() -> Bf16Isa {
        Bf16Isa(Bf16Kind::Emulated)
    }

    /// Every implementation this CPU runs, best first (the emulation last).
    pub fn available() -> impl Iterator<Item = Bf16Isa> {
        Bf16Kind::ALL.into_iter().filter_map(|k| Bf16Isa::new(k).ok())
    }

    /// The implementation called `name` (`avx512bf16` or `emulated`).
    pub fn from_name(name: &str) -> Result<Bf16Isa, Bf16Error> {
        let kind = Bf16Kind::from_name(name).ok_or_else(|| Bf16Error::Unknown(name.into()))?;
        Bf16Isa::new(kind)
    }

    /// Which implementation this is.
    pub fn kind(self) -> Bf16Kind {
        self.0
    }

    /// Its name, as in kernel names: `avx512bf16` or `emulated`.
    pub fn name(self) -> &'static str {
        self.0.name()
    }
}

impl fmt::Display for Bf16Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A computation generic over the bf16 vector implementation, run by
/// [`dispatch`]. Implementations make `run` `#[inline(always)]`, so the
/// whole body is compiled inside the hardware entry point's
/// `#[target_feature]` function.
pub(crate) trait Bf16Job {
    /// What the job returns.
    type Out;
    /// Runs the job with implementation `S`.
    fn run<S: Simd>(self) -> Self::Out;
}

/// Runs `job` with the implementation of `isa`.
#[inline]
pub(crate) fn dispatch<J: Bf16Job>(isa: Bf16Isa, job: J) -> J::Out {
    match isa.0 {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `Bf16Isa` of kind Avx512Bf16 exists only if the CPU has
        // AVX512_BF16, AVX-512F/BW/VL, AVX2 and FMA (checked by
        // `Bf16Kind::check` in `Bf16Isa::new`), the features `x86::run`
        // enables.
        Bf16Kind::Avx512Bf16 => unsafe { x86::run(job) },
        _ => job.run::<simd::Emu>(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_errors_are_typed() {
        for k in Bf16Kind::ALL {
            assert_eq!(Bf16Kind::from_name(k.name()), Some(k));
        }
        assert_eq!(Bf16Isa::from_name("bf17"), Err(Bf16Error::Unknown("bf17".into())));
        assert_eq!(Bf16Isa::from_name("emulated"), Ok(Bf16Isa::emulated()));
        let native = Bf16Isa::native();
        match &native {
            Ok(isa) => assert_eq!(isa.kind(), Bf16Kind::Avx512Bf16),
            Err(Bf16Error::MissingFeature(f)) => assert!(
                ["avx512f", "avx512bw", "avx512vl", "avx512bf16", "avx2", "fma"].contains(f),
                "{f}"
            ),
            Err(e) => {
                #[cfg(target_arch = "x86_64")]
                panic!("x86-64 only fails with a missing feature: {e}");
                #[cfg(not(target_arch = "x86_64"))]
                assert_eq!(e, &Bf16Error::UnsupportedArch);
            }
        }
        let all: Vec<Bf16Isa> = Bf16Isa::available().collect();
        assert_eq!(all.last(), Some(&Bf16Isa::emulated()));
        assert_eq!(all.len(), 1 + usize::from(native.is_ok()));
    }
}
