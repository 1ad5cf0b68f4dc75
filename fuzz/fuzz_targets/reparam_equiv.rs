//! An arbitrary small MobileOne block (branches, kernel, stride, dense or
//! depthwise, SE, eps): the reparameterized block equals the multi-branch
//! block within `1e-5 * max|output| + 1e-5`, or construction is a typed error.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use repconv::Tensor;
use repconv::mobileone::{BlockConfig, MobileOneBlock, SplitMix64};

#[derive(Arbitrary, Debug)]
struct Input {
    cin: u8,
    cout: u8,
    kernel3: bool,
    stride2: bool,
    depthwise: bool,
    branches: u8,
    se: bool,
    eps_large: bool,
    h: u8,
    w: u8,
    batch: u8,
    seed: u64,
}

fuzz_target!(|inp: Input| {
    let cin = (inp.cin % 12) as usize;
    let cout = if inp.depthwise { cin } else { (inp.cout % 12) as usize };
    let config = BlockConfig::new(cin, cout, if inp.kernel3 { 3 } else { 1 })
        .with_stride(if inp.stride2 { 2 } else { 1 })
        .with_groups(if inp.depthwise { cin.max(1) } else { 1 })
        .with_branches((inp.branches % 7) as usize)
        .with_se(inp.se);
    let mut rng = SplitMix64::new(inp.seed);
    let eps = if inp.eps_large { 1e-3 } else { 1e-5 };
    let Ok(block) = MobileOneBlock::random_with_eps(config, eps, &mut rng) else { return };
    let Ok(fused) = block.reparameterize() else { return };
    let shape = [(inp.batch % 3) as usize, cin, (inp.h % 12) as usize, (inp.w % 12) as usize];
    let len = shape.iter().product::<usize>();
    let Ok(x) = Tensor::from_vec(shape, rng.uniform_vec(len, -1.0, 1.0)) else { return };
    let (Ok(multi), Ok(one)) = (block.forward(&x), fused.forward(&x)) else {
        // Both forms validate the input the same way.
        assert!(block.forward(&x).is_err() && fused.forward(&x).is_err());
        return;
    };
    let scale = multi.as_slice().iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for (a, b) in multi.as_slice().iter().zip(one.as_slice()) {
        assert!((a - b).abs() <= 1e-5 * scale + 1e-5, "multi {a} vs fused {b} (scale {scale})");
    }
});
