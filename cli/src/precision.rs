//! The `--precision` option and what bf16 runs on here: the commands ask the
//! library (`Conv2d::with_precision`, `MobileOne::with_precision`) rather
//! than second-guess it, then read from the plans which kernels compute in
//! bf16, and whether on the hardware (`vdpbf16ps`, AVX512_BF16) or on the
//! kernels' software model (`REPCONV_BF16=emulated`).

use clap::ValueEnum;
use repconv::mobileone::{Block, MobileOne};
use repconv::{Activation, Conv2d, Conv2dParams, Isa, Precision};
use repconv_kernels::bf16::{Bf16Isa, Bf16Kind};

/// The precisions `--precision` accepts.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PrecisionArg {
    /// f32 everywhere (the default).
    #[default]
    F32,
    /// The 1x1 convolutions round weights and inputs to bfloat16 and sum in
    /// f32 (needs AVX512_BF16, or REPCONV_BF16=emulated for the slow
    /// software model); every other layer stays f32.
    Bf16,
}

impl PrecisionArg {
    /// The library's precision.
    pub fn precision(self) -> Precision {
        match self {
            PrecisionArg::F32 => Precision::F32,
            PrecisionArg::Bf16 => Precision::Bf16,
        }
    }
}

/// The bf16 implementation the library gives a 1x1 convolution on `isa` in
/// this process: the hardware, the software model (only with
/// `REPCONV_BF16=emulated`), or the library's [`repconv::Error::Precision`]
/// saying why bf16 cannot run.
pub fn bf16_on(isa: Isa) -> repconv::Result<Bf16Isa> {
    let probe =
        Conv2d::new_on(Conv2dParams::new(8, 8, [1, 1]), &[0.0; 64], None, Activation::None, isa)?
            .with_precision(Precision::Bf16)?;
    probe.plan().bf16().ok_or_else(|| repconv::Error::Precision {
        reason: format!("bf16: no bf16 kernel for a 1x1 convolution on {isa}"),
    })
}

/// Whether `bf16` is the software model.
pub fn is_emulated(bf16: Bf16Isa) -> bool {
    bf16.kind() == Bf16Kind::Emulated
}

/// Which of a network's convolutions compute in bf16.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bf16Layers {
    /// Convolutions on a bf16 kernel.
    pub bf16: usize,
    /// All convolutions (the multi-branch form counts each branch).
    pub convs: usize,
    /// The bf16 kernel's name (e.g. `conv1x1_bf16_8x48__avx512bf16`), if any
    /// convolution runs one.
    pub kernel: Option<&'static str>,
    /// Its implementation, if any convolution runs one.
    pub isa: Option<Bf16Isa>,
}

/// The bf16 convolutions of `net`, read from their plans.
pub fn bf16_layers(net: &MobileOne) -> Bf16Layers {
    let mut convs: Vec<&Conv2d> = Vec::new();
    for (_, block) in net.blocks() {
        match block {
            Block::MultiBranch(b) => {
                convs.extend(b.conv_kxk().iter().map(|c| c.conv()));
                convs.extend(b.conv_scale().map(|c| c.conv()));
            }
            Block::Reparam(b) => convs.push(b.reparam_conv()),
        }
    }
    let bf16: Vec<&&Conv2d> = convs.iter().filter(|c| c.plan().bf16().is_some()).collect();
    Bf16Layers {
        bf16: bf16.len(),
        convs: convs.len(),
        kernel: bf16.first().map(|c| c.kernel_name()),
        isa: bf16.first().and_then(|c| c.plan().bf16()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use repconv::mobileone::{MobileOneConfig, Variant};

    /// The probe agrees with what a network built the same way runs, and an
    /// f32 network has no bf16 layer. (Without AVX512_BF16 and without
    /// `REPCONV_BF16=emulated`, both refuse with the same message.)
    #[test]
    fn probe_and_network_agree() {
        let net = MobileOne::random(MobileOneConfig::variant(Variant::S0), 1).unwrap();
        let f32_layers = bf16_layers(&net);
        assert_eq!((f32_layers.bf16, f32_layers.kernel, f32_layers.isa), (0, None, None));
        assert!(f32_layers.convs > 20, "{f32_layers:?}");
        let isa = net.isa();
        match (bf16_on(isa), net.reparameterize().unwrap().with_precision(Precision::Bf16)) {
            (Ok(b), Ok(fused)) => {
                let layers = bf16_layers(&fused);
                assert_eq!(layers.isa, Some(b));
                assert!(0 < layers.bf16 && layers.bf16 < layers.convs, "{layers:?}");
                assert!(layers.kernel.unwrap().ends_with(b.name()), "{layers:?}");
            }
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            (a, b) => panic!("probe {a:?} but network {:?}", b.map(|n| bf16_layers(&n))),
        }
    }
}
