//! `repconv.MobileOne`: a MobileOne network from a timm checkpoint (either
//! form), called on numpy batches.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use numpy::PyUntypedArrayMethods;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use repconv_rs::mobileone::{MobileOneConfig, Variant, Workspace};
use repconv_rs::weights::{self, LoadOptions, NamedTensor};
use repconv_rs::{TensorView, TensorViewMut};

use crate::array;
use crate::bench;
use crate::conv::{count, isa, precision};
use crate::errors::{self, Kind, raise};
use crate::threads::Threads;

/// The published variant whose architecture `config` has (the head and
/// branch count may differ), if any.
pub(crate) fn variant_of(config: &MobileOneConfig) -> Option<Variant> {
    Variant::ALL.into_iter().find(|&v| {
        let c = MobileOneConfig::variant(v);
        c.width_multipliers == config.width_multipliers
            && c.depths == config.depths
            && c.se_blocks == config.se_blocks
    })
}

/// The bytes of a checkpoint file. Only a regular file is read (a device
/// such as /dev/zero would never end), into a buffer reserved fallibly.
fn read_checkpoint(path: &Path) -> PyResult<Vec<u8>> {
    let fail = |reason: String| raise(Kind::Io, format!("{}: {reason}", path.display()));
    let mut file = File::open(path).map_err(|e| fail(e.to_string()))?;
    let meta = file.metadata().map_err(|e| fail(e.to_string()))?;
    if !meta.is_file() {
        return Err(fail("not a regular file".to_string()));
    }
    let mut bytes = Vec::new();
    usize::try_from(meta.len())
        .ok()
        .and_then(|len| bytes.try_reserve_exact(len).ok())
        .ok_or_else(|| fail(format!("cannot allocate {} bytes to read it", meta.len())))?;
    // At most the size seen above, should the file grow meanwhile.
    (&mut file).take(meta.len()).read_to_end(&mut bytes).map_err(|e| fail(e.to_string()))?;
    Ok(bytes)
}

/// A MobileOne network (S0..S4, timm's architecture) in either form:
/// multi-branch (train-time) or reparameterized (fused). Load one with
/// `MobileOne.load(path)` or `MobileOne.from_state_dict(mapping)`.
#[pyclass(frozen, module = "repconv")]
pub(crate) struct MobileOne {
    net: repconv_rs::mobileone::MobileOne,
    /// Workspaces not in use: a forward pass takes one (or makes one when
    /// all are in use) and puts it back, so concurrent passes never wait
    /// for each other and steady-state passes allocate nothing.
    workspaces: Mutex<Vec<Workspace>>,
    threads: Threads,
}

impl MobileOne {
    fn new(
        net: repconv_rs::mobileone::MobileOne,
        isa: Option<&str>,
        threads: usize,
        precision: Option<&str>,
    ) -> PyResult<MobileOne> {
        let precision = self::precision(precision)?;
        let net = match self::isa(isa)? {
            Some(isa) => net.with_isa(isa).map_err(errors::lib)?,
            None => net,
        };
        let net = net.with_precision(precision).map_err(errors::lib)?;
        MobileOne::wrap(net, threads)
    }

    /// `net` with no workspace yet and a thread setting of `threads`.
    fn wrap(net: repconv_rs::mobileone::MobileOne, threads: usize) -> PyResult<MobileOne> {
        Ok(MobileOne { net, workspaces: Mutex::new(Vec::new()), threads: Threads::new(threads)? })
    }

    /// Checks `x` (and `out`) and runs the network with the GIL released,
    /// `calls` times back to back with one workspace; returns the logits
    /// array and the seconds the calls took.
    fn run<'py>(
        &self,
        x: &Bound<'py, PyAny>,
        out: Option<&Bound<'py, PyAny>>,
        calls: usize,
    ) -> PyResult<(Bound<'py, PyAny>, f64)> {
        let py = x.py();
        let input = array::input(x, "x", 4, "NCHW")?;
        let shape = array::nchw(input.shape())?;
        let logits_shape = self.net.output_shape(shape).map_err(errors::forward)?;
        let out_shape = [logits_shape[0], logits_shape[1]];
        let out = match out {
            Some(out) => out.clone(),
            None => array::zeros::<f32>(py, &out_shape).into_any(),
        };
        let mut output = array::output(&out, "out", &out_shape)?;
        let (x, y) = (array::slice(&input, "x")?, array::slice_mut(&mut output, "out")?);
        let seconds = py.detach(|| {
            // A poisoned lock only means a pass panicked while pushing or
            // popping; the Vec itself is intact.
            let taken = self.workspaces.lock().unwrap_or_else(PoisonError::into_inner).pop();
            let mut ws = taken.unwrap_or_default();
            let result = self.threads.run(|| -> repconv_rs::Result<f64> {
                let start = Instant::now();
                for _ in 0..calls {
                    let view = TensorView::new(shape, x)?;
                    let logits = TensorViewMut::new(logits_shape, &mut *y)?;
                    self.net.forward_into(view, logits, &mut ws)?;
                }
                Ok(start.elapsed().as_secs_f64())
            });
            self.workspaces.lock().unwrap_or_else(PoisonError::into_inner).push(ws);
            result
        });
        let seconds = seconds.map_err(errors::forward)?;
        drop(output);
        Ok((out, seconds))
    }
}

#[pymethods]
impl MobileOne {
    /// Loads a timm MobileOne checkpoint (safetensors; train-time,
    /// reparameterized or mixed; F32, F16 or BF16). The variant is inferred
    /// from the tensor shapes, the number of classes from the head.
    /// `precision="bf16"` runs the 1x1 convolutions in bf16.
    #[staticmethod]
    #[pyo3(signature = (path, *, isa=None, threads=0, precision=None))]
    fn load(
        py: Python<'_>,
        path: PathBuf,
        isa: Option<&str>,
        threads: i64,
        precision: Option<&str>,
    ) -> PyResult<MobileOne> {
        let threads = count(threads, "threads")?;
        // Checked before the file is read; an explicit isa never consults
        // REPCONV_ISA.
        self::precision(precision)?;
        let options = LoadOptions::default().with_isa(self::isa(isa)?);
        let net = py.detach(|| -> PyResult<_> {
            let bytes = read_checkpoint(&path)?;
            weights::load_bytes(&bytes, &options).map_err(errors::load)
        })?;
        MobileOne::new(net, isa, threads, precision)
    }

    /// Builds the network from a state dict in timm's names: a mapping from
    /// str to arrays (numpy arrays, or anything with `__array__`, e.g.
    /// `{k: v.numpy() for k, v in model.state_dict().items()}`), in either
    /// form. Values are converted to float32; BatchNorm
    /// `num_batches_tracked` counters are ignored.
    #[staticmethod]
    #[pyo3(signature = (state_dict, *, isa=None, threads=0, precision=None))]
    fn from_state_dict(
        py: Python<'_>,
        state_dict: &Bound<'_, PyAny>,
        isa: Option<&str>,
        threads: i64,
        precision: Option<&str>,
    ) -> PyResult<MobileOne> {
        let threads = count(threads, "threads")?;
        self::precision(precision)?;
        let items = state_dict.call_method0("items").map_err(|_| {
            PyTypeError::new_err(format!(
                "state_dict: expected a mapping of str to arrays, got {}",
                state_dict.get_type().name().map(|n| n.to_string()).unwrap_or_default()
            ))
        })?;
        let mut tensors = Vec::new();
        for item in items.try_iter()? {
            let (key, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item?.extract()?;
            let Ok(name) = key.cast::<PyString>() else {
                return Err(PyTypeError::new_err(format!(
                    "state_dict: keys must be str, got {}",
                    key.repr().map(|r| r.to_string()).unwrap_or_default()
                )));
            };
            let name: String = name.extract()?;
            let (shape, data) = array::to_f32_vec(&value, &format!("state_dict[{name:?}]"))?;
            tensors.push(NamedTensor { name, shape, data });
        }
        let options = LoadOptions::default().with_isa(self::isa(isa)?);
        let net = py.detach(|| -> repconv_rs::Result<_> {
            let bytes = weights::tensors_to_bytes(&tensors)?;
            weights::load_bytes(&bytes, &options)
        });
        MobileOne::new(net.map_err(errors::load)?, isa, threads, precision)
    }

    /// A new network in the fused form: every multi-branch block folded
    /// into one convolution with bias (a fused network is copied). Same ISA,
    /// precision and thread setting; this one is unchanged.
    fn reparameterize(&self, py: Python<'_>) -> PyResult<MobileOne> {
        let fused = py.detach(|| self.net.reparameterize()).map_err(errors::lib)?;
        MobileOne::wrap(fused, self.threads.setting())
    }

    /// A new network computing in `precision` (None/"f32" or "bf16"): with
    /// "bf16" its 1x1 convolutions round weights and inputs to bfloat16 and
    /// sum in f32. Same weights, form, ISA and thread setting; this one is
    /// unchanged.
    #[pyo3(signature = (precision))]
    fn with_precision(&self, py: Python<'_>, precision: Option<&str>) -> PyResult<MobileOne> {
        let precision = self::precision(precision)?;
        let net = py.detach(|| self.net.clone().with_precision(precision)).map_err(errors::lib)?;
        MobileOne::wrap(net, self.threads.setting())
    }

    /// Writes the network to `path` in its current form (safetensors, timm
    /// names, float32) through a temporary file, so `path` never holds a
    /// partial file. An existing file is replaced unless `overwrite=False`.
    #[pyo3(signature = (path, *, overwrite=true))]
    fn save(&self, py: Python<'_>, path: PathBuf, overwrite: bool) -> PyResult<()> {
        if !overwrite && path.exists() {
            return Err(raise(
                Kind::Io,
                format!("{}: already exists (pass overwrite=True to replace it)", path.display()),
            ));
        }
        py.detach(|| weights::save(&self.net, &path, overwrite)).map_err(errors::lib)
    }

    /// Runs the network on a batch `x`, a C-contiguous float32 array
    /// (n, in_channels, h, w), and returns the logits (n, num_classes): in
    /// `out` (a C-contiguous float32 array of that shape, written in place
    /// and returned) or in a new array. The GIL is released during the
    /// computation.
    #[pyo3(signature = (x, out=None))]
    fn __call__<'py>(
        &self,
        x: &Bound<'py, PyAny>,
        out: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Ok(self.run(x, out, 1)?.0)
    }

    /// The logits shape (n, num_classes) for an input shape (checks it).
    fn output_shape(&self, shape: Vec<usize>) -> PyResult<(usize, usize)> {
        let [n, classes, _, _] =
            self.net.output_shape(array::nchw(&shape)?).map_err(errors::forward)?;
        Ok((n, classes))
    }

    /// The main job's measurement on this network: multi-branch vs fused
    /// latency (medians) and agreement of their logits, as a dict. See
    /// docs/python.md.
    #[pyo3(signature = (x=None, *, batch=1, size=224, runs=20, threads=None, seed=0, peak=true))]
    #[allow(clippy::too_many_arguments)]
    fn benchmark<'py>(
        &self,
        py: Python<'py>,
        x: Option<&Bound<'py, PyAny>>,
        batch: i64,
        size: i64,
        runs: i64,
        threads: Option<i64>,
        seed: u64,
        peak: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let threads = match threads {
            Some(t) => count(t, "threads")?,
            None => self.threads.count(),
        };
        let input = match x {
            Some(x) => {
                let arr = array::input(x, "x", 4, "NCHW")?;
                let shape = array::nchw(arr.shape())?;
                bench::Input::Given(
                    repconv_rs::Tensor::from_slice(shape, array::slice(&arr, "x")?)
                        .map_err(errors::forward)?,
                )
            }
            None => bench::Input::Random {
                batch: count(batch, "batch")?,
                size: count(size, "size")?,
                seed,
            },
        };
        let options = bench::Options { threads, runs: count(runs, "runs")?, peak };
        let report = py.detach(|| bench::run(&self.net, input, &options))?;
        report.into_dict(py)
    }

    /// For benchmarks: runs `calls` forward passes into `out` from Rust
    /// (one GIL release, one workspace, no Python between calls) and returns
    /// the seconds they took.
    fn _time_rust(
        &self,
        x: &Bound<'_, PyAny>,
        out: &Bound<'_, PyAny>,
        calls: usize,
    ) -> PyResult<f64> {
        Ok(self.run(x, Some(out), calls)?.1)
    }

    /// "s0" .. "s4", or "custom" for another architecture.
    #[getter]
    fn variant(&self) -> &'static str {
        variant_of(self.net.config()).map_or("custom", Variant::name)
    }

    /// "multi-branch", "fused" or "mixed" (some blocks of each).
    #[getter]
    fn form(&self) -> &'static str {
        weights::form(&self.net).name()
    }

    /// Logits per image.
    #[getter]
    fn num_classes(&self) -> usize {
        self.net.config().num_classes
    }

    /// Input channels (3 for images).
    #[getter]
    fn in_channels(&self) -> usize {
        self.net.config().in_channels
    }

    /// The instruction set of the kernels: "avx512", "avx2" or "portable".
    #[getter]
    fn isa(&self) -> &'static str {
        self.net.isa().name()
    }

    /// The precision asked for: "f32" or "bf16" (in bf16, the 1x1
    /// convolutions compute in bf16; every other layer stays f32).
    #[getter]
    fn precision(&self) -> &'static str {
        self.net.precision().name()
    }

    /// Worker threads: 0 (the default) runs on the global pool shared by
    /// every object left at 0; n >= 1 gives this network a private pool of
    /// n threads. Logits are bitwise the same for any setting.
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

    fn __repr__(&self) -> String {
        format!(
            "repconv.MobileOne(variant='{}', form='{}', num_classes={}, isa='{}', precision='{}', \
             threads={})",
            self.variant(),
            self.form(),
            self.num_classes(),
            self.isa(),
            self.precision(),
            self.threads()
        )
    }
}
