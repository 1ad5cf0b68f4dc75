//! The convolution layer shapes that matter: every distinct conv of the fused
//! MobileOne-S0 and -S1 networks at 224x224, batch 1 (derived from Apple's
//! MobileOne configuration as implemented in timm's `byobnet.py`; the counts
//! and FLOPs match `MobileOne::flops`), plus generic dense 3x3 shapes
//! (RepVGG-style) and depthwise extremes.

use repconv::conv::Conv2dParams;
use repconv::tensor::Tensor;

/// One benchmarked layer: geometry, input size and how often it occurs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerShape {
    /// Short label, e.g. `s0.pw.128x128@28`.
    pub name: &'static str,
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Input height and width (square).
    pub hw: usize,
    /// Kernel size (1 or 3, square).
    pub k: usize,
    /// Stride.
    pub stride: usize,
    /// Groups (1 for dense, `cin` for depthwise).
    pub groups: usize,
    /// Occurrences in the network (1 for generic shapes).
    pub count: usize,
}

impl LayerShape {
    /// The convolution parameters: padding `k / 2`, as in MobileOne.
    pub fn params(&self) -> Conv2dParams {
        Conv2dParams::new(self.cin, self.cout, [self.k, self.k])
            .with_stride([self.stride, self.stride])
            .with_padding([self.k / 2, self.k / 2])
            .with_groups(self.groups)
    }

    /// Input shape at batch 1.
    pub fn input_shape(&self) -> [usize; 4] {
        [1, self.cin, self.hw, self.hw]
    }

    /// Deterministic example data for timing this layer: OIHW weights in
    /// [-0.1, 0.1], a bias and a batch-1 input in [-1, 1]. The CLI's `layers`
    /// table and the criterion benches time the same numbers.
    pub fn example_data(&self) -> repconv::Result<(Vec<f32>, Vec<f32>, Tensor)> {
        let weights = seeded(self.params().weight_len()?, 1).iter().map(|w| w * 0.1).collect();
        let bias = seeded(self.cout, 2);
        let shape = self.input_shape();
        let input = Tensor::from_vec(shape, seeded(shape.iter().product(), 3))?;
        Ok((weights, bias, input))
    }
}

/// Values in [-1, 1] from a multiplicative hash of the index (no RNG state).
fn seeded(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 2001) as f32 / 1000.0 - 1.0)
        .collect()
}

/// Table-row constructor, positional to keep the tables one line per layer.
#[allow(clippy::too_many_arguments)]
const fn l(
    name: &'static str,
    cin: usize,
    cout: usize,
    hw: usize,
    k: usize,
    stride: usize,
    groups: usize,
    count: usize,
) -> LayerShape {
    LayerShape { name, cin, cout, hw, k, stride, groups, count }
}

/// MobileOne-S0 fused convolutions (274.1 MMAC in total).
pub const S0_LAYERS: &[LayerShape] = &[
    l("s0.stem.3x48@224/2", 3, 48, 224, 3, 2, 1, 1),
    l("s0.dw.48@112/2", 48, 48, 112, 3, 2, 48, 1),
    l("s0.pw.48x48@56", 48, 48, 56, 1, 1, 1, 2),
    l("s0.dw.48@56", 48, 48, 56, 3, 1, 48, 1),
    l("s0.dw.48@56/2", 48, 48, 56, 3, 2, 48, 1),
    l("s0.pw.48x128@28", 48, 128, 28, 1, 1, 1, 1),
    l("s0.dw.128@28", 128, 128, 28, 3, 1, 128, 7),
    l("s0.pw.128x128@28", 128, 128, 28, 1, 1, 1, 7),
    l("s0.dw.128@28/2", 128, 128, 28, 3, 2, 128, 1),
    l("s0.pw.128x256@14", 128, 256, 14, 1, 1, 1, 1),
    l("s0.dw.256@14", 256, 256, 14, 3, 1, 256, 9),
    l("s0.pw.256x256@14", 256, 256, 14, 1, 1, 1, 9),
    l("s0.dw.256@14/2", 256, 256, 14, 3, 2, 256, 1),
    l("s0.pw.256x1024@7", 256, 1024, 7, 1, 1, 1, 1),
];

/// MobileOne-S1 fused convolutions (823.8 MMAC in total).
pub const S1_LAYERS: &[LayerShape] = &[
    l("s1.stem.3x64@224/2", 3, 64, 224, 3, 2, 1, 1),
    l("s1.dw.64@112/2", 64, 64, 112, 3, 2, 64, 1),
    l("s1.pw.64x96@56", 64, 96, 56, 1, 1, 1, 1),
    l("s1.dw.96@56", 96, 96, 56, 3, 1, 96, 1),
    l("s1.pw.96x96@56", 96, 96, 56, 1, 1, 1, 1),
    l("s1.dw.96@56/2", 96, 96, 56, 3, 2, 96, 1),
    l("s1.pw.96x192@28", 96, 192, 28, 1, 1, 1, 1),
    l("s1.dw.192@28", 192, 192, 28, 3, 1, 192, 7),
    l("s1.pw.192x192@28", 192, 192, 28, 1, 1, 1, 7),
    l("s1.dw.192@28/2", 192, 192, 28, 3, 2, 192, 1),
    l("s1.pw.192x512@14", 192, 512, 14, 1, 1, 1, 1),
    l("s1.dw.512@14", 512, 512, 14, 3, 1, 512, 9),
    l("s1.pw.512x512@14", 512, 512, 14, 1, 1, 1, 9),
    l("s1.dw.512@14/2", 512, 512, 14, 3, 2, 512, 1),
    l("s1.pw.512x1280@7", 512, 1280, 7, 1, 1, 1, 1),
];

/// Generic shapes: RepVGG-style dense 3x3 and the largest/smallest depthwise planes.
pub const GENERIC_LAYERS: &[LayerShape] = &[
    l("dense3x3.64@56", 64, 64, 56, 3, 1, 1, 1),
    l("dense3x3.128@28", 128, 128, 28, 3, 1, 1, 1),
    l("dense3x3.256@14", 256, 256, 14, 3, 1, 1, 1),
    l("dw.48@112", 48, 48, 112, 3, 1, 48, 1),
    l("dw.1024@7", 1024, 1024, 7, 3, 1, 1024, 1),
];

/// Every layer shape above, S0 first.
pub fn all_layers() -> impl Iterator<Item = &'static LayerShape> {
    S0_LAYERS.iter().chain(S1_LAYERS).chain(GENERIC_LAYERS)
}
