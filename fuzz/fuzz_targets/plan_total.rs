//! Any parameters and input shape, including huge ones: planning and running
//! give `Ok` or a typed error, never a panic, and never a giant allocation
//! (the library caps what a caller can make it allocate).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use repconv::{Activation, Conv2d, Conv2dParams, Tensor};

#[derive(Arbitrary, Debug)]
struct Input {
    cin: usize,
    cout: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
    groups: usize,
    shape: [u16; 4],
    small: bool,
}

fuzz_target!(|inp: Input| {
    // Half the runs squeeze the fields into small ranges, so that many
    // parameter sets are valid and reach execution.
    let s = |v: usize, m: usize| if inp.small { v % m } else { v };
    let params = Conv2dParams {
        in_channels: s(inp.cin, 17),
        out_channels: s(inp.cout, 17),
        kernel: [s(inp.kernel[0], 6), s(inp.kernel[1], 6)],
        stride: [s(inp.stride[0], 4), s(inp.stride[1], 4)],
        padding: [s(inp.padding[0], 4), s(inp.padding[1], 4)],
        dilation: [s(inp.dilation[0], 3), s(inp.dilation[1], 3)],
        groups: s(inp.groups, 5),
    };
    let _ = params.validate();
    let _ = params.output_hw([inp.shape[2] as usize, inp.shape[3] as usize]);
    let Ok(wlen) = params.weight_len() else { return };
    if wlen > 1 << 20 {
        return; // a real caller would have to allocate these weights itself
    }
    let weights = vec![0.25f32; wlen];
    let Ok(conv) = Conv2d::new(params, &weights, None, Activation::Relu) else { return };
    let shape = inp.shape.map(|d| (d % 64) as usize);
    let Ok(out_shape) = conv.output_shape(shape) else { return };
    if out_shape.iter().product::<usize>() > 1 << 22 {
        return;
    }
    if let Ok(x) = Tensor::zeros(shape) {
        let _ = conv.forward(&x);
    }
});
