//! Instruction sets: which ones this CPU has, the proof-carrying [`Isa`]
//! token that selects one, and the crate-private vector abstraction every
//! kernel body is written against.
//!
//! # Why a layer of our own
//! `wide` chooses each type's representation from the *build's*
//! `cfg(target_feature)`, so in a dependent's default x86-64 build it is SSE2,
//! whatever the CPU, and wrapping it in `#[target_feature]` changes nothing.
//! The x86 instantiations therefore use `core::arch` intrinsics through the
//! `Vector` trait, whose methods are `#[inline(always)]`: a kernel body
//! generic over `V: Vector` and inlined into a `#[target_feature]` entry point
//! (`dispatch`) is compiled with that entry point's features. `wide` stays as
//! the portable baseline (SSE2 on plain x86-64, NEON on aarch64, simd128 on
//! wasm).
//!
//! # Soundness
//! Executing an AVX-512 instruction on a CPU without AVX-512 is undefined
//! behaviour (in practice SIGILL). The x86 vector types are private to this
//! crate and only ever created inside code reached through `dispatch`, which
//! takes an [`Isa`]; an `Isa` can only be obtained through [`Isa::new`] and
//! friends, which check the CPU first. So every `unsafe` intrinsic call in
//! `avx512.rs` / `avx2.rs` runs on a CPU that has the feature.

mod portable;
#[cfg(target_arch = "x86_64")]
mod x86_avx2;
#[cfg(target_arch = "x86_64")]
mod x86_avx512;

use std::fmt;
use std::sync::OnceLock;

/// The instruction sets repconv has kernel instantiations for. A plain name:
/// holding one says nothing about the CPU (see [`Isa`] for that).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IsaKind {
    /// AVX-512 F, VL and DQ (with AVX2 and FMA; every AVX-512 CPU since
    /// Skylake-SP and Zen 4): 16 f32 lanes in 512-bit registers.
    Avx512,
    /// AVX2 + FMA (x86-64-v3): 8 f32 lanes in 256-bit registers.
    Avx2,
    /// `wide`'s compile-time choice: SSE2 on a plain x86-64 build, NEON on
    /// aarch64, simd128 on wasm, scalar elsewhere; 8 f32 lanes.
    Portable,
}

impl IsaKind {
    /// Every kind, best first.
    pub const ALL: [IsaKind; 3] = [IsaKind::Avx512, IsaKind::Avx2, IsaKind::Portable];

    /// The name used in kernel names and by `REPCONV_ISA`: `avx512`, `avx2`, `portable`.
    pub const fn name(self) -> &'static str {
        match self {
            IsaKind::Avx512 => "avx512",
            IsaKind::Avx2 => "avx2",
            IsaKind::Portable => "portable",
        }
    }

    /// The kind called `name` (see [`IsaKind::name`]), if any.
    pub fn from_name(name: &str) -> Option<IsaKind> {
        IsaKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// f32 lanes per vector.
    pub const fn lanes(self) -> usize {
        self.traits().lanes
    }

    /// The constants of the kind's vector type (lanes, registers, register
    /// tiles), read without running any of its instructions: the registry,
    /// the tile functions and the peak loop take them from here, so an ISA
    /// states them once, in its own file.
    pub const fn traits(self) -> IsaTraits {
        match self {
            #[cfg(target_arch = "x86_64")]
            IsaKind::Avx512 => IsaTraits::of::<x86_avx512::V512>(),
            #[cfg(target_arch = "x86_64")]
            IsaKind::Avx2 => IsaTraits::of::<x86_avx2::V256>(),
            // Kinds with no instantiation in this build are never available;
            // the portable constants stand in for them.
            _ => IsaTraits::of::<portable::VP>(),
        }
    }

    /// Whether this build has an instantiation of the kind (the x86 ones
    /// exist only on x86-64): the registry lists exactly these.
    pub const fn compiled(self) -> bool {
        matches!(self, IsaKind::Portable) || cfg!(target_arch = "x86_64")
    }

    /// Whether this CPU can run the kind's kernels (detected at run time;
    /// `Portable` always can).
    pub fn is_available(self) -> bool {
        match self {
            IsaKind::Portable => true,
            #[cfg(target_arch = "x86_64")]
            IsaKind::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            IsaKind::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                    && std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }
}

/// The constants of one ISA's vector type ([`IsaKind::traits`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IsaTraits {
    /// f32 lanes per vector.
    pub lanes: usize,
    /// Vector registers (of this width) the kernels may plan for.
    pub registers: usize,
    /// GEMM register tile: output channels.
    pub gemm_mr: usize,
    /// GEMM register tile: pixels.
    pub gemm_nr: usize,
    /// Independent chains of the FMA peak loop.
    pub peak_chains: usize,
}

impl IsaTraits {
    const fn of<V: Vector>() -> IsaTraits {
        IsaTraits {
            lanes: V::LANES,
            registers: V::REGISTERS,
            gemm_mr: <V::Gemm as RegisterTile>::MR,
            gemm_nr: <V::Gemm as RegisterTile>::NRV * V::LANES,
            peak_chains: V::PEAK_CHAINS,
        }
    }
}

impl fmt::Display for IsaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An instruction set this CPU supports: the only way to select kernels.
///
/// A value can only be made by [`Isa::new`], [`Isa::best`], [`Isa::portable`],
/// [`Isa::available`], [`Isa::from_name`] or [`Isa::from_env`], which check the
/// CPU, so passing one to a kernel never executes an instruction the CPU
/// lacks. Different ISAs may round differently in the last bits (FMA
/// contraction, summation order of the GEMV tail); one ISA gives bitwise
/// identical results for any thread count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Isa(IsaKind);

/// Why an ISA could not be selected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IsaError {
    /// The name is not one of `avx512`, `avx2`, `portable`.
    Unknown(String),
    /// The CPU lacks the instruction set.
    Unavailable(IsaKind),
}

impl fmt::Display for IsaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IsaError::Unknown(name) => {
                write!(f, "unknown ISA {name:?} (expected avx512, avx2 or portable)")
            }
            IsaError::Unavailable(kind) => write!(f, "this CPU does not support the {kind} ISA"),
        }
    }
}

impl std::error::Error for IsaError {}

/// The environment variable that overrides the default ISA (read once per process).
pub const ISA_ENV: &str = "REPCONV_ISA";

impl Isa {
    /// `kind`, if this CPU supports it.
    pub fn new(kind: IsaKind) -> Result<Isa, IsaError> {
        if kind.is_available() { Ok(Isa(kind)) } else { Err(IsaError::Unavailable(kind)) }
    }

    /// The best instruction set this CPU supports (detected once, cached).
    pub fn best() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| Isa::available().next().unwrap_or(Isa(IsaKind::Portable)))
    }

    /// The portable baseline, available everywhere.
    pub fn portable() -> Isa {
        Isa(IsaKind::Portable)
    }

    /// Every instruction set this CPU supports, best first.
    pub fn available() -> impl Iterator<Item = Isa> {
        IsaKind::ALL.into_iter().filter(|k| k.is_available()).map(Isa)
    }

    /// The ISA called `name` (`avx512`, `avx2`, `portable`, or `best`).
    pub fn from_name(name: &str) -> Result<Isa, IsaError> {
        if name == "best" {
            return Ok(Isa::best());
        }
        let kind = IsaKind::from_name(name).ok_or_else(|| IsaError::Unknown(name.to_string()))?;
        Isa::new(kind)
    }

    /// The process default: `REPCONV_ISA` if set and not empty (read once per
    /// process, so a test that sets it cannot change what other code already
    /// runs), else [`Isa::best`]. An unknown or unsupported name is an error
    /// every time it is asked, never a silent fallback.
    pub fn from_env() -> Result<Isa, IsaError> {
        static FROM_ENV: OnceLock<Result<Isa, IsaError>> = OnceLock::new();
        FROM_ENV
            .get_or_init(|| match std::env::var(ISA_ENV) {
                Ok(name) if !name.trim().is_empty() => Isa::from_name(name.trim()),
                _ => Ok(Isa::best()),
            })
            .clone()
    }

    /// Which instruction set this is.
    pub fn kind(self) -> IsaKind {
        self.0
    }

    /// Its name, as in kernel names: `avx512`, `avx2`, `portable`.
    pub fn name(self) -> &'static str {
        self.0.name()
    }

    /// f32 lanes per vector.
    pub fn lanes(self) -> usize {
        self.0.lanes()
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The most lanes any [`Vector`] has; sizes stack buffers that must fit any ISA.
pub(crate) const MAX_LANES: usize = 16;

/// One SIMD vector of f32 lanes and the operations the kernels need. Every
/// method is `#[inline(always)]` in every implementation, so a generic body
/// inlined into a `#[target_feature]` function compiles to that ISA's
/// instructions. Only [`dispatch`] picks the implementation (see the module
/// docs for why that makes the intrinsics sound).
pub(crate) trait Vector: Copy + Send + Sync + 'static {
    /// f32 lanes.
    const LANES: usize;
    /// Register tile of the GEMM micro-kernel for this ISA (output channels x
    /// vectors along the pixels), as a type, so drivers are instantiated for
    /// it at compile time ([`RegisterTile::run`]) with no runtime match.
    type Gemm: RegisterTile;
    /// Independent FMA chains of the peak loop ([`crate::peak`]): enough to
    /// cover FMA latency x FMA pipes, few enough to stay in registers.
    const PEAK_CHAINS: usize;
    /// Whether [`Vector::pick2`] is one instruction (AVX-512's `vpermt2ps`),
    /// so kernels built on lane permutes pay off (AVX2 needs three, and the
    /// portable build emulates it).
    const ONE_INSTRUCTION_PICK2: bool;
    /// Vector registers the ISA has for values of this type, so kernels can
    /// size their register tiles (a portable `f32x8` is two of SSE2's 16).
    const REGISTERS: usize;
    /// An 8-lane vector of the same ISA (the GEMV tail of the 1x1 kernel
    /// vectorises over at most 8 output channels).
    type V8: Vector;
    /// A lane-index vector for [`Vector::pick2`].
    type Index: Copy;

    /// All lanes `+0.0`.
    fn zero() -> Self;
    /// All lanes `x`.
    fn splat(x: f32) -> Self;
    /// Reads `LANES` floats from `p` (any alignment).
    ///
    /// # Safety
    /// `p .. p + LANES` must be readable.
    unsafe fn load_ptr(p: *const f32) -> Self;
    /// Writes the lanes to `p` (any alignment).
    ///
    /// # Safety
    /// `p .. p + LANES` must be writable.
    unsafe fn store_ptr(self, p: *mut f32);
    /// `self * b + c`, fused (one rounding) on the x86 ISAs and NEON,
    /// a multiply then an add on SSE2.
    fn mul_add(self, b: Self, c: Self) -> Self;
    /// `self * b`.
    fn mul(self, b: Self) -> Self;
    /// `self + b`.
    fn add(self, b: Self) -> Self;
    /// Bitwise AND (masks are all-ones or zero per lane; clears NaN too).
    fn and(self, b: Self) -> Self;
    /// ReLU with PyTorch semantics: `x < 0 ? 0 : x` per lane, so NaN stays
    /// NaN and `-0.0` stays `-0.0`.
    fn relu(self) -> Self;
    /// Sum of the lanes (a fixed order per ISA).
    fn reduce_add(self) -> f32;
    /// Builds the index vector whose lane `j` is `f(j)`, each `< 2 * LANES`.
    fn index(f: impl Fn(usize) -> u32) -> Self::Index;
    /// Lane `j` of the result is lane `idx[j]` of the concatenation `[a, b]`.
    fn pick2(a: Self, b: Self, idx: Self::Index) -> Self;
    /// Writes lanes `0..n` to `p .. p + n` and nothing else (`n <= LANES`):
    /// one masked store on AVX-512, lane by lane elsewhere.
    ///
    /// # Safety
    /// `p .. p + n` must be writable.
    #[inline(always)]
    unsafe fn store_first(self, p: *mut f32, n: usize) {
        const { assert!(Self::LANES <= MAX_LANES) };
        let mut buf = [0.0f32; MAX_LANES];
        // SAFETY: `buf` holds MAX_LANES >= LANES floats.
        unsafe { self.store_ptr(buf.as_mut_ptr()) };
        // SAFETY: the caller guarantees `p .. p + n` is writable, n <= LANES.
        unsafe { core::ptr::copy_nonoverlapping(buf.as_ptr(), p, n.min(Self::LANES)) }
    }
    /// Writes lanes `first..first + n` to `p .. p + n` and nothing else
    /// (`first + n <= LANES`): one masked store on AVX-512 (no permute to
    /// move the lanes down first), lane by lane elsewhere.
    ///
    /// # Safety
    /// `p .. p + n` must be writable.
    #[inline(always)]
    unsafe fn store_lanes(self, p: *mut f32, first: usize, n: usize) {
        const { assert!(Self::LANES <= MAX_LANES) };
        let mut buf = [0.0f32; MAX_LANES];
        // SAFETY: `buf` holds MAX_LANES >= LANES floats.
        unsafe { self.store_ptr(buf.as_mut_ptr()) };
        let first = first.min(Self::LANES);
        let n = n.min(Self::LANES - first);
        // SAFETY: the caller guarantees `p .. p + n` is writable; `first + n
        // <= LANES` lanes of `buf` are read.
        unsafe { core::ptr::copy_nonoverlapping(buf.as_ptr().add(first), p, n) }
    }
    /// `a * b + c` on one float, fused where this ISA's vectors fuse (never a
    /// libm call).
    fn mul_add_scalar(a: f32, b: f32, c: f32) -> f32;
}

/// A computation generic over a register tile's shape (`MR` rows x `NRV`
/// vectors), run by [`RegisterTile::run`].
pub(crate) trait TileJob {
    /// What the job returns.
    type Out;
    /// Runs the job with the tile `MR x NRV`.
    fn run<const MR: usize, const NRV: usize>(self) -> Self::Out;
}

/// A register tile as a type: an ISA names its GEMM tile once
/// ([`Vector::Gemm`]), and every driver is instantiated for it from there.
pub(crate) trait RegisterTile {
    /// Output channels (rows) of the tile.
    const MR: usize;
    /// Vectors along the pixels (columns) of the tile.
    const NRV: usize;
    /// Runs `job` with this tile's constants.
    fn run<J: TileJob>(job: J) -> J::Out;
}

/// The register tile of `MR` rows x `NRV` vectors.
pub(crate) struct Tile<const MR: usize, const NRV: usize>;

impl<const MR: usize, const NRV: usize> RegisterTile for Tile<MR, NRV> {
    const MR: usize = MR;
    const NRV: usize = NRV;
    #[inline(always)]
    fn run<J: TileJob>(job: J) -> J::Out {
        job.run::<MR, NRV>()
    }
}

/// A computation generic over the vector type, run by [`dispatch`] for one
/// ISA. Implementations make `run` `#[inline(always)]`, so the whole body is
/// compiled inside the ISA's `#[target_feature]` entry point.
pub(crate) trait Job {
    /// What the job returns.
    type Out;
    /// Runs the job with vector type `V`.
    fn run<V: Vector>(self) -> Self::Out;
}

/// Runs `job` with the vector type of `isa`.
#[inline]
pub(crate) fn dispatch<J: Job>(isa: Isa, job: J) -> J::Out {
    match isa.0 {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an `Isa` of kind Avx512 exists only if the CPU has AVX-512F,
        // VL, DQ, AVX2 and FMA (checked in `Isa::new`), the features the entry
        // enables.
        IsaKind::Avx512 => unsafe { x86_avx512::run(job) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an `Isa` of kind Avx2 exists only if the CPU has AVX2 and FMA.
        IsaKind::Avx2 => unsafe { x86_avx2::run(job) },
        _ => job.run::<portable::VP>(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_is_an_error() {
        for k in IsaKind::ALL {
            assert_eq!(IsaKind::from_name(k.name()), Some(k));
        }
        assert_eq!(Isa::from_name("sse9"), Err(IsaError::Unknown("sse9".into())));
        assert_eq!(Isa::from_name("portable"), Ok(Isa::portable()));
        assert_eq!(Isa::from_name("best"), Ok(Isa::best()));
    }

    #[test]
    fn available_is_best_first_and_ends_with_portable() {
        let all: Vec<Isa> = Isa::available().collect();
        assert_eq!(all.first(), Some(&Isa::best()));
        assert_eq!(all.last(), Some(&Isa::portable()));
        for k in IsaKind::ALL {
            assert_eq!(Isa::new(k).is_ok(), all.iter().any(|i| i.kind() == k));
            if !k.is_available() {
                assert_eq!(Isa::new(k), Err(IsaError::Unavailable(k)));
            }
        }
    }
}
