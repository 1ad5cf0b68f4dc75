//! Arbitrary small convolutions on any ISA this CPU has: either a typed
//! error, or output equal to the f64 reference within `1e-5 * Σ|terms| + 1e-6`.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use repconv::{Activation, Conv2d, Conv2dParams, Isa, Tensor};
use repconv_kernels::reference::{RefConv, conv2d_nchw_ref};

#[derive(Arbitrary, Debug)]
struct Input {
    batch: u8,
    groups: u8,
    cin_g: u8,
    cout_g: u8,
    h: u8,
    w: u8,
    kernel: [u8; 2],
    stride: [u8; 2],
    padding: [u8; 2],
    dilation: [u8; 2],
    relu: bool,
    bias: bool,
    isa: u8,
    data: Vec<i8>,
}

fuzz_target!(|inp: Input| {
    // Keep shapes small (the reference is naive) but allow zeros and
    // kernels larger than the input, which must be clean errors.
    let groups = (inp.groups % 4) as usize;
    let cin = groups * (inp.cin_g % 9) as usize;
    let cout = groups * (inp.cout_g % 9) as usize;
    let params = Conv2dParams::new(cin, cout, [(inp.kernel[0] % 6) as usize, (inp.kernel[1] % 6) as usize])
        .with_stride([(inp.stride[0] % 4) as usize, (inp.stride[1] % 4) as usize])
        .with_padding([(inp.padding[0] % 3) as usize, (inp.padding[1] % 3) as usize])
        .with_dilation([(inp.dilation[0] % 3) as usize, (inp.dilation[1] % 3) as usize])
        .with_groups(groups);
    let shape = [(inp.batch % 3) as usize, cin, (inp.h % 24) as usize, (inp.w % 40) as usize];
    let val = |i: usize| inp.data.get(i % inp.data.len().max(1)).map_or(0.5, |&v| v as f32 / 64.0);
    let Ok(wlen) = params.weight_len() else { return };
    let weights: Vec<f32> = (0..wlen).map(|i| val(i * 7 + 1)).collect();
    let bias: Vec<f32> = (0..cout).map(|i| val(i * 3 + 2)).collect();
    let act = if inp.relu { Activation::Relu } else { Activation::None };
    let isas: Vec<Isa> = Isa::available().collect();
    let isa = isas[inp.isa as usize % isas.len()];
    let built = Conv2d::new(params, &weights, inp.bias.then_some(&bias[..]), act);
    let conv = match built.and_then(|c| c.with_isa(isa)) {
        Ok(c) => c,
        Err(_) => return,
    };
    let len = shape.iter().product::<usize>();
    let Ok(x) = Tensor::from_vec(shape, (0..len).map(val).collect()) else { return };
    let Ok(y) = conv.forward(&x) else { return };
    let rp = RefConv {
        n: shape[0],
        cin,
        h: shape[2],
        w: shape[3],
        cout,
        kernel: params.kernel,
        stride: params.stride,
        padding: params.padding,
        dilation: params.dilation,
        groups,
        relu: inp.relu,
    };
    let (want, mag) = conv2d_nchw_ref(&rp, x.as_slice(), &weights, inp.bias.then_some(&bias[..]));
    for (i, ((g, w), m)) in y.as_slice().iter().zip(&want).zip(&mag).enumerate() {
        assert!((g - w).abs() <= 1e-5 * m + 1e-6, "{} [{i}]: got {g} want {w}", conv.kernel_name());
    }
});
