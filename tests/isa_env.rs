//! An explicit instruction set never consults `REPCONV_ISA`: with the
//! variable set to an unknown name, only what leaves the ISA to the process
//! default fails. The variable is read once per process, so the checks run
//! in a child process of this test binary that starts with it set.

mod common;

use common::watchdog::{expect_env, run_child};
use repconv::conv::KernelChoice;
use repconv::mobileone::{MobileOne, MobileOneConfig, Variant};
use repconv::weights::{self, LoadOptions};
use repconv::{Activation, Conv2d, Conv2dParams, Error, Isa, IsaError, Tensor};

const BAD: &str = "no-such-isa";

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[track_caller]
fn assert_isa_error<T: std::fmt::Debug>(r: Result<T, Error>) {
    match r {
        Err(Error::Isa(IsaError::Unknown(name))) => assert_eq!(name, BAD),
        other => panic!("expected the REPCONV_ISA error, got {other:?}"),
    }
}

#[test]
fn explicit_isas_ignore_a_bad_repconv_isa() {
    run_child("child_bad_repconv_isa", &[("REPCONV_ISA", BAD)], 300);
}

#[test]
#[ignore = "run by explicit_isas_ignore_a_bad_repconv_isa"]
fn child_bad_repconv_isa() {
    expect_env("REPCONV_ISA", BAD);
    let params = Conv2dParams::new(4, 8, [3, 3]).with_padding([1, 1]);
    let w = common::values(1, params.weight_len().unwrap());
    let x = Tensor::from_vec([1, 4, 6, 7], common::values(2, 4 * 6 * 7)).unwrap();

    // Left to the process default: the error.
    assert_isa_error(Isa::from_env().map_err(Error::from));
    assert_isa_error(Conv2d::new(params, &w, None, Activation::Relu));
    assert_isa_error(Conv2d::with_choice(
        params,
        &w,
        None,
        Activation::Relu,
        KernelChoice::General,
    ));
    assert_isa_error(weights::load(fixture("s0.fused.safetensors"), &LoadOptions::default()));
    let config = MobileOneConfig::variant(Variant::S0).with_num_classes(3);
    assert_isa_error(MobileOne::random(config.clone(), 1));

    // Chosen explicitly: no error, whatever the variable says.
    for isa in [Isa::portable(), Isa::from_name("best").unwrap(), Isa::best()] {
        let conv = Conv2d::new_on(params, &w, None, Activation::Relu, isa).unwrap();
        assert_eq!(conv.isa(), isa);
        conv.forward(&x).unwrap();
        for choice in [KernelChoice::Auto, KernelChoice::General] {
            let conv =
                Conv2d::with_choice_on(params, &w, None, Activation::None, choice, isa).unwrap();
            assert_eq!(conv.isa(), isa);
            let other = conv.with_isa(Isa::portable()).unwrap();
            assert_eq!(other.isa(), Isa::portable());
        }
        for file in ["s0.train.safetensors", "s0.fused.safetensors"] {
            let options = LoadOptions::default().with_isa(Some(isa));
            let net = weights::load(fixture(file), &options).unwrap();
            assert_eq!(net.isa(), isa, "{file}");
            let fused = net.reparameterize().unwrap();
            assert_eq!(fused.isa(), isa, "{file}, reparameterized");
            let input = Tensor::from_vec([1, 3, 32, 32], common::values(3, 3 * 32 * 32)).unwrap();
            fused.forward(&input).unwrap();
        }
    }
    let net = MobileOne::random_on(config, 1, Isa::portable()).unwrap();
    assert_eq!(net.isa(), Isa::portable());
    assert_eq!(net.reparameterize().unwrap().isa(), Isa::portable());
}
