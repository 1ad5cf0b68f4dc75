//! Convolution geometry: [`Conv2dParams`], its validation and the sizes it implies.

use crate::MAX_ELEMENTS;
use crate::error::{Error, Result};

/// Geometry of a 2-D convolution over NCHW input with OIHW weights
/// (`[out_channels, in_channels / groups, kernel_h, kernel_w]`), as in PyTorch.
/// Every per-axis field is `[h, w]`; padding is the same on both sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2dParams {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Stride along H and W.
    pub stride: [usize; 2],
    /// Zero padding along H and W.
    pub padding: [usize; 2],
    /// Dilation along H and W.
    pub dilation: [usize; 2],
    /// Channel groups (`in_channels` for depthwise); divides both channel counts.
    pub groups: usize,
}

impl Conv2dParams {
    /// A convolution with stride 1, no padding, dilation 1 and one group.
    pub fn new(in_channels: usize, out_channels: usize, kernel: [usize; 2]) -> Self {
        Conv2dParams {
            in_channels,
            out_channels,
            kernel,
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
        }
    }

    /// Sets the stride.
    pub fn with_stride(mut self, stride: [usize; 2]) -> Self {
        self.stride = stride;
        self
    }

    /// Sets the zero padding.
    pub fn with_padding(mut self, padding: [usize; 2]) -> Self {
        self.padding = padding;
        self
    }

    /// Sets the dilation.
    pub fn with_dilation(mut self, dilation: [usize; 2]) -> Self {
        self.dilation = dilation;
        self
    }

    /// Sets the number of channel groups.
    pub fn with_groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    /// Input channels per group.
    pub fn in_per_group(&self) -> usize {
        self.in_channels / self.groups.max(1)
    }

    /// Output channels per group.
    pub fn out_per_group(&self) -> usize {
        self.out_channels / self.groups.max(1)
    }

    /// Checks every field: nothing zero, groups dividing both channel counts,
    /// and the weight count representable.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("kernel", self.kernel[0].min(self.kernel[1])),
            ("stride", self.stride[0].min(self.stride[1])),
            ("dilation", self.dilation[0].min(self.dilation[1])),
            ("groups", self.groups),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(Error::invalid(name, "must be at least 1"));
            }
        }
        for (name, c) in [("in_channels", self.in_channels), ("out_channels", self.out_channels)] {
            if !c.is_multiple_of(self.groups) {
                return Err(Error::invalid(
                    "groups",
                    format!("{} groups do not divide {name} = {c}", self.groups),
                ));
            }
        }
        self.weight_len()?;
        // Kernel span and padded sizes must be computable for any later input.
        for axis in 0..2 {
            self.dilation[axis]
                .checked_mul(self.kernel[axis] - 1)
                .and_then(|s| s.checked_add(1))
                .ok_or(Error::TooLarge { what: "kernel span" })?;
            self.padding[axis].checked_mul(2).ok_or(Error::TooLarge { what: "padding" })?;
        }
        Ok(())
    }

    /// Number of weights: `out_channels * in_channels/groups * kh * kw`.
    pub fn weight_len(&self) -> Result<usize> {
        let n = [self.in_per_group(), self.kernel[0], self.kernel[1]]
            .iter()
            .try_fold(self.out_channels, |acc, &d| acc.checked_mul(d))
            .ok_or(Error::TooLarge { what: "weights" })?;
        if n > MAX_ELEMENTS {
            return Err(Error::TooLarge { what: "weights" });
        }
        Ok(n)
    }

    /// Output `[h, w]` for an input of `[h, w]`, or an error when the
    /// (dilated) kernel is larger than the padded input.
    pub fn output_hw(&self, input_hw: [usize; 2]) -> Result<[usize; 2]> {
        self.validate()?;
        let mut out = [0; 2];
        for axis in 0..2 {
            let span = self.dilation[axis] * (self.kernel[axis] - 1) + 1;
            let padded = input_hw[axis]
                .checked_add(2 * self.padding[axis])
                .ok_or(Error::TooLarge { what: "padded input" })?;
            if input_hw[axis] == 0 {
                return Err(Error::invalid("input", "spatial size is zero"));
            }
            if padded < span {
                return Err(Error::invalid(
                    "kernel",
                    format!(
                        "dilated kernel span {span} exceeds padded input {padded} along {}",
                        ["h", "w"][axis]
                    ),
                ));
            }
            out[axis] = (padded - span) / self.stride[axis] + 1;
        }
        Ok(out)
    }

    /// Output shape `[n, out_channels, oh, ow]` for an input shape, checking
    /// the input channel count.
    pub fn output_shape(&self, input: [usize; 4]) -> Result<[usize; 4]> {
        let [n, c, h, w] = input;
        if c != self.in_channels {
            return Err(Error::ShapeMismatch {
                what: "input channels",
                expected: vec![n, self.in_channels, h, w],
                got: input.to_vec(),
            });
        }
        let [oh, ow] = self.output_hw([h, w])?;
        let shape = [n, self.out_channels, oh, ow];
        crate::tensor::checked_numel("output", shape)?;
        Ok(shape)
    }

    /// Floating-point operations (2 per multiply-add) of one forward pass over
    /// an input shape, without bias and activation.
    pub fn flops(&self, input: [usize; 4]) -> Result<u64> {
        let [n, cout, oh, ow] = self.output_shape(input)?;
        let per_out = (self.in_per_group() * self.kernel[0] * self.kernel[1]) as u64;
        Ok(2 * (n * cout * oh * ow) as u64 * per_out)
    }
}
