//! `repconv.Conv2d`: one convolution with packed weights, called on numpy
//! arrays.

use std::time::Instant;

use numpy::PyUntypedArrayMethods;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use repconv_rs::{Activation, Conv2dParams, Isa, Precision, TensorView, TensorViewMut};

use crate::array::{self, fmt_shape};
use crate::errors::{self, Kind, raise};
use crate::threads::Threads;

/// A non-negative integer argument.
pub(crate) fn count(v: i64, what: &str) -> PyResult<usize> {
    usize::try_from(v).map_err(|_| raise(Kind::Param, format!("{what}: must be >= 0, got {v}")))
}

/// An int or a pair of ints (height, width), as PyTorch's `conv2d` takes;
/// anything else is a TypeError naming the argument.
pub(crate) struct IntOrPair([i64; 2]);

impl<'a, 'py> FromPyObject<'a, 'py> for IntOrPair {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if let Ok(v) = obj.extract::<i64>() {
            return Ok(IntOrPair([v, v]));
        }
        match obj.extract::<Vec<i64>>() {
            Ok(v) if v.len() == 2 => Ok(IntOrPair([v[0], v[1]])),
            _ => Err(PyTypeError::new_err(format!(
                "expected an int or a pair of ints, got {}",
                obj.repr().map(|r| r.to_string()).unwrap_or_default()
            ))),
        }
    }
}

impl IntOrPair {
    fn get(&self, what: &str) -> PyResult<[usize; 2]> {
        Ok([count(self.0[0], what)?, count(self.0[1], what)?])
    }
}

/// `None`/"none" or "relu".
fn activation(name: Option<&str>) -> PyResult<Activation> {
    match name {
        None | Some("none") => Ok(Activation::None),
        Some("relu") => Ok(Activation::Relu),
        Some(other) => {
            Err(raise(Kind::Param, format!("activation: expected None or \"relu\", got {other:?}")))
        }
    }
}

/// `None` for the process default, else an ISA name ("best", "avx512",
/// "avx2", "portable").
pub(crate) fn isa(name: Option<&str>) -> PyResult<Option<Isa>> {
    name.map(|n| Isa::from_name(n).map_err(errors::isa)).transpose()
}

/// `None`/"f32" (the default) or "bf16"; anything else is a
/// `PrecisionError` naming the values.
pub(crate) fn precision(name: Option<&str>) -> PyResult<Precision> {
    match name {
        None | Some("f32") => Ok(Precision::F32),
        Some("bf16") => Ok(Precision::Bf16),
        Some(other) => Err(raise(
            Kind::Precision,
            format!("precision: expected None, \"f32\" or \"bf16\", got {other:?}"),
        )),
    }
}

/// A 2-D convolution over NCHW float32 arrays, with PyTorch's arguments:
/// OIHW `weight` (out_channels, in_channels / groups, kh, kw), optional
/// `bias`, and `stride`, `padding` (zeros, both sides), `dilation` as an int
/// or a (height, width) pair. `precision="bf16"` runs a 1x1 convolution on
/// the bf16 kernel (weights and inputs rounded to bfloat16, f32 sums);
/// other geometries stay f32.
#[pyclass(frozen, module = "repconv")]
pub(crate) struct Conv2d {
    conv: repconv_rs::Conv2d,
    threads: Threads,
}

impl Conv2d {
    /// Checks `x` (and `out`) and runs the convolution with the GIL
    /// released, `calls` times back to back; returns the output array and
    /// the seconds the calls took.
    fn run<'py>(
        &self,
        x: &Bound<'py, PyAny>,
        out: Option<&Bound<'py, PyAny>>,
        calls: usize,
    ) -> PyResult<(Bound<'py, PyAny>, f64)> {
        let py = x.py();
        let input = array::input(x, "x", 4, "NCHW")?;
        let shape = array::nchw(input.shape())?;
        let out_shape = self.conv.output_shape(shape).map_err(errors::forward)?;
        let out = match out {
            Some(out) => out.clone(),
            None => array::zeros::<f32>(py, &out_shape).into_any(),
        };
        let mut output = array::output(&out, "out", &out_shape)?;
        let (x, y) = (array::slice(&input, "x")?, array::slice_mut(&mut output, "out")?);
        let seconds = py.detach(|| {
            self.threads.run(|| -> repconv_rs::Result<f64> {
                let start = Instant::now();
                for _ in 0..calls {
                    let view = TensorView::new(shape, x)?;
                    self.conv.forward_into(view, TensorViewMut::new(out_shape, &mut *y)?)?;
                }
                Ok(start.elapsed().as_secs_f64())
            })
        });
        let seconds = seconds.map_err(errors::forward)?;
        drop(output);
        Ok((out, seconds))
    }
}

#[pymethods]
impl Conv2d {
    /// Validates the geometry, copies `weight` and `bias` (any real dtype,
    /// converted to float32), picks the kernel for the ISA and packs the
    /// weights.
    #[new]
    #[pyo3(
        signature = (weight, bias=None, stride=IntOrPair([1, 1]), padding=IntOrPair([0, 0]), dilation=IntOrPair([1, 1]), groups=1, *, activation=None, isa=None, threads=0, precision=None),
        text_signature = "(weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, activation=None, isa=None, threads=0, precision=None)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn new(
        weight: &Bound<'_, PyAny>,
        bias: Option<&Bound<'_, PyAny>>,
        stride: IntOrPair,
        padding: IntOrPair,
        dilation: IntOrPair,
        groups: i64,
        activation: Option<&str>,
        isa: Option<&str>,
        threads: i64,
        precision: Option<&str>,
    ) -> PyResult<Conv2d> {
        let (w_shape, w) = array::to_f32_vec(weight, "weight")?;
        let &[out_channels, in_per_group, kh, kw] = &w_shape[..] else {
            return Err(raise(
                Kind::Shape,
                format!(
                    "weight: expected a 4-D array (out_channels, in_channels / groups, kh, kw), \
                     got shape {}",
                    fmt_shape(&w_shape)
                ),
            ));
        };
        let groups = count(groups, "groups")?;
        let in_channels = in_per_group.checked_mul(groups).ok_or_else(|| {
            raise(Kind::Param, format!("groups: {groups} x {in_per_group} overflows"))
        })?;
        let params = Conv2dParams::new(in_channels, out_channels, [kh, kw])
            .with_stride(stride.get("stride")?)
            .with_padding(padding.get("padding")?)
            .with_dilation(dilation.get("dilation")?)
            .with_groups(groups);
        params.validate().map_err(errors::lib)?;
        let bias = match bias {
            None => None,
            Some(b) => {
                let (b_shape, b) = array::to_f32_vec(b, "bias")?;
                if b_shape != [out_channels] {
                    return Err(raise(
                        Kind::Shape,
                        format!(
                            "bias: expected shape ({out_channels},) (out_channels), got {}",
                            fmt_shape(&b_shape)
                        ),
                    ));
                }
                Some(b)
            }
        };
        let isa = self::isa(isa)?;
        let precision = self::precision(precision)?;
        let activation = self::activation(activation)?;
        let threads = Threads::new(count(threads, "threads")?)?;
        // An explicit isa never consults REPCONV_ISA (`new_on`).
        let conv = match isa {
            Some(isa) => repconv_rs::Conv2d::new_on(params, &w, bias.as_deref(), activation, isa),
            None => repconv_rs::Conv2d::new(params, &w, bias.as_deref(), activation),
        }
        .map_err(errors::lib)?;
        let conv = conv.with_precision(precision).map_err(errors::lib)?;
        Ok(Conv2d { conv, threads })
    }

    /// A new convolution computing in `precision` (None/"f32" or "bf16"),
    /// with the same weights, ISA and thread setting; this one is
    /// unchanged.
    #[pyo3(signature = (precision))]
    fn with_precision(&self, precision: Option<&str>) -> PyResult<Conv2d> {
        let precision = self::precision(precision)?;
        let conv = self.conv.clone().with_precision(precision).map_err(errors::lib)?;
        Ok(Conv2d { conv, threads: Threads::new(self.threads.setting())? })
    }

    /// Runs the convolution on `x`, a C-contiguous float32 NCHW array, into
    /// `out` (a C-contiguous float32 array of `output_shape(x.shape)`, written
    /// in place and returned) or into a new array. The GIL is released
    /// during the computation.
    #[pyo3(signature = (x, out=None))]
    fn __call__<'py>(
        &self,
        x: &Bound<'py, PyAny>,
        out: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Ok(self.run(x, out, 1)?.0)
    }

    /// The output shape (n, out_channels, oh, ow) for an input shape.
    fn output_shape(&self, shape: Vec<usize>) -> PyResult<(usize, usize, usize, usize)> {
        let [n, c, h, w] = self.conv.output_shape(array::nchw(&shape)?).map_err(errors::forward)?;
        Ok((n, c, h, w))
    }

    /// For benchmarks: runs `calls` forward passes into `out` from Rust
    /// (one GIL release, no Python between calls) and returns the seconds
    /// they took.
    fn _time_rust(
        &self,
        x: &Bound<'_, PyAny>,
        out: &Bound<'_, PyAny>,
        calls: usize,
    ) -> PyResult<f64> {
        Ok(self.run(x, Some(out), calls)?.1)
    }

    /// The kernel that runs, e.g. "conv1x1_8x48__avx512", or
    /// "conv1x1_bf16_8x48__avx512bf16" for a 1x1 convolution in bf16
    /// ("..__emulated" on the software model).
    #[getter]
    fn kernel_name(&self) -> &'static str {
        self.conv.kernel_name()
    }

    /// The instruction set of the kernel: "avx512", "avx2" or "portable".
    #[getter]
    fn isa(&self) -> &'static str {
        self.conv.isa().name()
    }

    /// Worker threads: 0 (the default) runs on the global pool shared by
    /// every object left at 0; n >= 1 gives this object a private pool of n
    /// threads. Results are bitwise the same for any setting.
    #[getter]
    fn threads(&self) -> usize {
        self.threads.setting()
    }

    #[setter]
    fn set_threads(&self, n: i64) -> PyResult<()> {
        self.threads.set(count(n, "threads")?)
    }

    /// The number of threads a forward pass runs on.
    #[getter]
    fn num_threads(&self) -> usize {
        self.threads.count()
    }

    /// Input channels.
    #[getter]
    fn in_channels(&self) -> usize {
        self.conv.params().in_channels
    }

    /// Output channels.
    #[getter]
    fn out_channels(&self) -> usize {
        self.conv.params().out_channels
    }

    /// (kh, kw).
    #[getter]
    fn kernel_size(&self) -> (usize, usize) {
        let [h, w] = self.conv.params().kernel;
        (h, w)
    }

    /// (stride_h, stride_w).
    #[getter]
    fn stride(&self) -> (usize, usize) {
        let [h, w] = self.conv.params().stride;
        (h, w)
    }

    /// (padding_h, padding_w).
    #[getter]
    fn padding(&self) -> (usize, usize) {
        let [h, w] = self.conv.params().padding;
        (h, w)
    }

    /// (dilation_h, dilation_w).
    #[getter]
    fn dilation(&self) -> (usize, usize) {
        let [h, w] = self.conv.params().dilation;
        (h, w)
    }

    /// Channel groups.
    #[getter]
    fn groups(&self) -> usize {
        self.conv.params().groups
    }

    /// The precision asked for: "f32" or "bf16" (`kernel_name` says whether
    /// the kernel computes in bf16: only 1x1 convolutions have a bf16
    /// kernel).
    #[getter]
    fn precision(&self) -> &'static str {
        self.conv.precision().name()
    }

    /// The fused activation: None or "relu".
    #[getter]
    fn activation(&self) -> Option<&'static str> {
        match self.conv.activation() {
            Activation::Relu => Some("relu"),
            _ => None,
        }
    }

    fn __repr__(&self) -> String {
        let p = self.conv.params();
        format!(
            "repconv.Conv2d({}, {}, kernel_size={:?}, stride={:?}, padding={:?}, dilation={:?}, \
             groups={}, activation={}, isa='{}', precision='{}', kernel='{}')",
            p.in_channels,
            p.out_channels,
            self.kernel_size(),
            self.stride(),
            self.padding(),
            self.dilation(),
            p.groups,
            self.activation().map_or("None".to_string(), |a| format!("'{a}'")),
            self.isa(),
            self.precision(),
            self.kernel_name()
        )
    }
}
