//! Where bf16 cannot run, asking for it is a typed error, never an illegal
//! instruction: on a CPU without AVX512_BF16 (unless `REPCONV_BF16=emulated`,
//! which this binary never sets), and with an ISA other than avx512.

mod common;

use repconv::mobileone::{MobileOne, MobileOneConfig, Variant};
use repconv::{Activation, Conv2d, Conv2dParams, Error, IsaKind, Precision};
use repconv_kernels::bf16::Bf16Isa;

#[test]
fn bf16_is_a_typed_error_where_it_cannot_run() {
    assert!(std::env::var(repconv::BF16_ENV).is_err(), "run without {}", repconv::BF16_ENV);
    let conv = || Conv2d::new(Conv2dParams::new(4, 4, [1, 1]), &[0.5; 16], None, Activation::None);
    let mut refused = Vec::new();
    for isa in common::available_isas("bf16_unavailable") {
        let runs = isa.kind() == IsaKind::Avx512 && Bf16Isa::native().is_ok();
        let got = conv().unwrap().with_isa(isa).unwrap().with_precision(Precision::Bf16);
        match got {
            Ok(c) => {
                assert!(runs, "{isa}: bf16 accepted without the hardware");
                assert_eq!(c.kernel_name(), "conv1x1_bf16_8x48__avx512bf16");
            }
            Err(e) => {
                assert!(!runs, "{isa}: {e}");
                assert!(matches!(e, Error::Precision { .. }), "{e:?}");
                refused.push(format!("{isa}: {e}"));
            }
        }
    }
    // A whole network reports the same error.
    if Bf16Isa::native().is_err() {
        let net = MobileOne::random(MobileOneConfig::variant(Variant::S0), 1).unwrap();
        let err = net.with_precision(Precision::Bf16).unwrap_err();
        assert!(matches!(err, Error::Precision { .. }), "{err:?}");
    }
    println!("bf16 refused with: {refused:?}");
}
