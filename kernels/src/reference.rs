//! The reference convolution: naive, obviously correct, accumulating in f64.
//! It is THE oracle every kernel, the general path, the MobileOne layer and the
//! fuzz targets are checked against.

/// Geometry and activation of one reference convolution (NCHW input, OIHW weights).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefConv {
    /// Batch size.
    pub n: usize,
    /// Input channels.
    pub cin: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub cout: usize,
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Stride along H and W.
    pub stride: [usize; 2],
    /// Zero padding along H and W (same on both sides).
    pub padding: [usize; 2],
    /// Dilation along H and W.
    pub dilation: [usize; 2],
    /// Channel groups; must divide `cin` and `cout`.
    pub groups: usize,
    /// Apply ReLU after the bias.
    pub relu: bool,
}

impl RefConv {
    /// Output height and width, or `None` if the kernel does not fit the padded input.
    pub fn output_hw(&self) -> Option<(usize, usize)> {
        let span_h = self.dilation[0] * (self.kernel[0] - 1) + 1;
        let span_w = self.dilation[1] * (self.kernel[1] - 1) + 1;
        let ph = self.h + 2 * self.padding[0];
        let pw = self.w + 2 * self.padding[1];
        if ph < span_h || pw < span_w {
            return None;
        }
        Some(((ph - span_h) / self.stride[0] + 1, (pw - span_w) / self.stride[1] + 1))
    }

    /// Number of weights, `cout * cin/groups * kh * kw`.
    pub fn weight_len(&self) -> usize {
        self.cout * (self.cin / self.groups) * self.kernel[0] * self.kernel[1]
    }

    /// Number of output elements.
    pub fn output_len(&self) -> usize {
        let (oh, ow) = self.output_hw().expect("kernel fits");
        self.n * self.cout * oh * ow
    }
}

/// Computes the convolution in f64 and returns `(output, magnitude)`, where
/// `magnitude[i]` is `|bias| + Σ |w·x|` over the terms of output `i`: the scale
/// a float rounding error of that output is relative to.
///
/// # Panics
/// If the slices do not have the lengths `p` implies, or `groups` does not
/// divide both channel counts, or the kernel does not fit.
pub fn conv2d_nchw_ref(
    p: &RefConv,
    input: &[f32],
    weights: &[f32],
    bias: Option<&[f32]>,
) -> (Vec<f32>, Vec<f32>) {
    assert!(p.groups > 0 && p.cin.is_multiple_of(p.groups) && p.cout.is_multiple_of(p.groups));
    assert_eq!(input.len(), p.n * p.cin * p.h * p.w, "input length");
    assert_eq!(weights.len(), p.weight_len(), "weight length");
    if let Some(b) = bias {
        assert_eq!(b.len(), p.cout, "bias length");
    }
    let (oh, ow) = p.output_hw().expect("kernel fits padded input");
    let cin_g = p.cin / p.groups;
    let cout_g = p.cout / p.groups;
    let [kh, kw] = p.kernel;
    let mut out = vec![0.0f32; p.n * p.cout * oh * ow];
    let mut mag = vec![0.0f32; out.len()];
    for b in 0..p.n {
        for oc in 0..p.cout {
            let g = oc / cout_g;
            let bias_v = bias.map_or(0.0, |bb| bb[oc] as f64);
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = bias_v;
                    let mut abs = bias_v.abs();
                    for ci in 0..cin_g {
                        let ic = g * cin_g + ci;
                        for ky in 0..kh {
                            let iy = (oy * p.stride[0] + ky * p.dilation[0]) as isize
                                - p.padding[0] as isize;
                            for kx in 0..kw {
                                let ix = (ox * p.stride[1] + kx * p.dilation[1]) as isize
                                    - p.padding[1] as isize;
                                let wv = weights[((oc * cin_g + ci) * kh + ky) * kw + kx] as f64;
                                if iy < 0 || iy >= p.h as isize || ix < 0 || ix >= p.w as isize {
                                    // A padding zero: `w * 0`, which is NaN for
                                    // a non-finite weight (PyTorch).
                                    acc += wv * 0.0;
                                    continue;
                                }
                                let x = input
                                    [((b * p.cin + ic) * p.h + iy as usize) * p.w + ix as usize]
                                    as f64;
                                acc += x * wv;
                                abs += (x * wv).abs();
                            }
                        }
                    }
                    let v = acc as f32;
                    let v = if p.relu && v < 0.0 { 0.0 } else { v };
                    let i = ((b * p.cout + oc) * oh + oy) * ow + ox;
                    out[i] = v;
                    mag[i] = abs as f32;
                }
            }
        }
    }
    (out, mag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_kernel_copies_input() {
        let p = RefConv {
            n: 1,
            cin: 2,
            h: 3,
            w: 3,
            cout: 2,
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1],
            dilation: [1, 1],
            groups: 2,
            relu: false,
        };
        let input: Vec<f32> = (0..18).map(|i| i as f32 - 9.0).collect();
        let mut w = vec![0.0; 18];
        w[4] = 1.0;
        w[13] = 2.0;
        let (out, _) = conv2d_nchw_ref(&p, &input, &w, Some(&[0.5, 0.0]));
        for i in 0..9 {
            assert_eq!(out[i], input[i] + 0.5);
            assert_eq!(out[9 + i], 2.0 * input[9 + i]);
        }
    }

    #[test]
    fn stride_dilation_and_relu() {
        // 1 channel, 5x5 input of ones, 2x2 kernel of ones, dilation 2, stride 2, pad 0:
        // output 2x2, every value 4 + bias.
        let p = RefConv {
            n: 1,
            cin: 1,
            h: 5,
            w: 5,
            cout: 1,
            kernel: [2, 2],
            stride: [2, 2],
            padding: [0, 0],
            dilation: [2, 2],
            groups: 1,
            relu: true,
        };
        assert_eq!(p.output_hw(), Some((2, 2)));
        let (out, _) = conv2d_nchw_ref(&p, &[1.0; 25], &[1.0; 4], Some(&[-10.0]));
        assert_eq!(out, vec![0.0; 4]);
        let (out, mag) = conv2d_nchw_ref(&p, &[1.0; 25], &[1.0; 4], Some(&[-1.0]));
        assert_eq!(out, vec![3.0; 4]);
        assert_eq!(mag, vec![5.0; 4]);
    }
}
