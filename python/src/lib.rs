//! The Python module `repconv`: numpy arrays in, numpy arrays out.
//!
//! Thin bindings over the Rust crate: argument checks and error mapping
//! only. [`conv::Conv2d`] wraps `repconv::Conv2d`, [`net::MobileOne`] the
//! MobileOne network with its timm safetensors I/O; every forward pass
//! releases the GIL. The typed API is `repconv.pyi`; docs/python.md is the
//! guide.

mod array;
mod bench;
mod conv;
mod errors;
mod net;
mod threads;

use pyo3::prelude::*;
use repconv_rs::Isa;

/// The best instruction set this CPU supports: "avx512", "avx2" or
/// "portable".
#[pyfunction]
fn isa_best() -> &'static str {
    Isa::best().name()
}

/// Every instruction set this CPU supports, best first (always ending with
/// "portable").
#[pyfunction]
fn isa_available() -> Vec<&'static str> {
    Isa::available().map(Isa::name).collect()
}

/// The instruction set used when `isa=None`: the environment variable
/// REPCONV_ISA if set (read once per process), else `isa_best()`.
#[pyfunction]
fn isa_default() -> PyResult<&'static str> {
    Ok(Isa::from_env().map_err(errors::isa)?.name())
}

/// The Python module.
#[pymodule(name = "repconv")]
fn repconv_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    threads::bound_global_pool();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(isa_best, m)?)?;
    m.add_function(wrap_pyfunction!(isa_available, m)?)?;
    m.add_function(wrap_pyfunction!(isa_default, m)?)?;
    m.add_class::<conv::Conv2d>()?;
    m.add_class::<net::MobileOne>()?;
    errors::register(m)?;
    Ok(())
}
