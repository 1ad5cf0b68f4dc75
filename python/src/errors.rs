//! The exception hierarchy: `repconv.Error` and one subclass per kind of
//! problem, each also a subclass of the matching built-in exception (so
//! `except ValueError` and `except repconv.ShapeError` both catch a shape
//! mismatch). Messages are the library's own.

use pyo3::exceptions::{PyException, PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};
use repconv_rs::Error;

/// The kinds of error, one Python class each.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    /// A tensor, array or buffer has the wrong shape or size.
    Shape,
    /// An array is not float32.
    DType,
    /// An array is not C-contiguous, not aligned, not writeable, or overlaps
    /// another argument.
    Layout,
    /// A parameter is out of range.
    Param,
    /// An instruction set is unknown or unsupported.
    Isa,
    /// A precision is unknown, or cannot run on this CPU (bf16 without
    /// AVX512_BF16).
    Precision,
    /// A checkpoint's contents cannot be loaded.
    Format,
    /// A file cannot be read or written.
    Io,
}

/// Name, built-in base and docstring of each subclass.
const CLASSES: [(Kind, &str, &str); 8] = [
    (Kind::Shape, "ShapeError", "An array has the wrong rank or shape (also a ValueError)."),
    (Kind::DType, "DTypeError", "An array is not float32 (also a TypeError)."),
    (
        Kind::Layout,
        "LayoutError",
        "An array is not C-contiguous, not aligned, not writeable, or overlaps another \
         argument (also a ValueError).",
    ),
    (Kind::Param, "ParamError", "A parameter is out of range (also a ValueError)."),
    (
        Kind::Isa,
        "IsaError",
        "An instruction set is unknown or this CPU lacks it (also a ValueError).",
    ),
    (
        Kind::Precision,
        "PrecisionError",
        "A precision is unknown, or this CPU cannot run it: bf16 needs AVX512_BF16 and the \
         avx512 kernels, or REPCONV_BF16=emulated for the slow software model (also a \
         ValueError).",
    ),
    (
        Kind::Format,
        "FormatError",
        "A checkpoint is not one this library can load; the message names the tensor \
         (also a ValueError).",
    ),
    (Kind::Io, "IoError", "A file cannot be read or written (also an OSError)."),
];

/// The classes, created once by [`register`].
static BASE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static SUBCLASSES: [PyOnceLock<Py<PyType>>; CLASSES.len()] =
    [const { PyOnceLock::new() }; CLASSES.len()];

impl Kind {
    fn index(self) -> usize {
        self as usize
    }

    fn builtin<'py>(self, py: Python<'py>) -> Bound<'py, PyType> {
        match self {
            Kind::DType => py.get_type::<PyTypeError>(),
            Kind::Io => py.get_type::<PyOSError>(),
            _ => py.get_type::<PyValueError>(),
        }
    }
}

/// Creates `repconv.Error` and its subclasses and adds them to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let make = |name: &str, bases: Bound<'_, PyTuple>, doc: &str| -> PyResult<Py<PyType>> {
        let dict = PyDict::new(py);
        dict.set_item("__doc__", doc)?;
        dict.set_item("__module__", "repconv")?;
        let class = py.get_type::<PyType>().call1((name, bases, dict))?;
        Ok(class.cast_into::<PyType>()?.unbind())
    };
    let base = BASE.get_or_try_init(py, || {
        make(
            "Error",
            PyTuple::new(py, [py.get_type::<PyException>()])?,
            "Base class of every error repconv reports.",
        )
    })?;
    m.add("Error", base.bind(py))?;
    for (kind, name, doc) in CLASSES {
        let class = SUBCLASSES[kind.index()].get_or_try_init(py, || {
            make(name, PyTuple::new(py, [base.bind(py).clone(), kind.builtin(py)])?, doc)
        })?;
        m.add(name, class.bind(py))?;
    }
    Ok(())
}

/// A `repconv` exception of `kind` with `message`.
pub(crate) fn raise(kind: Kind, message: impl Into<String>) -> PyErr {
    let message = message.into();
    Python::attach(|py| match SUBCLASSES[kind.index()].get(py) {
        Some(class) => PyErr::from_type(class.bind(py).clone(), message),
        // Only before the module's initialisation, which creates them.
        None => PyRuntimeError::new_err(message),
    })
}

/// The class of a library error.
fn kind_of(e: &Error) -> Option<Kind> {
    Some(match e {
        Error::ShapeMismatch { .. } | Error::LengthMismatch { .. } => Kind::Shape,
        Error::InvalidParam { .. } | Error::TooLarge { .. } => Kind::Param,
        Error::MissingTensor { .. }
        | Error::UnexpectedTensor { .. }
        | Error::TensorShape { .. }
        | Error::TensorDtype { .. }
        | Error::TensorValue { .. }
        | Error::TruncatedFile { .. }
        | Error::NotSafetensors { .. } => Kind::Format,
        Error::Io { .. } => Kind::Io,
        Error::Isa(_) => Kind::Isa,
        Error::Precision { .. } => Kind::Precision,
        _ => return None,
    })
}

/// A library error as the matching exception (`repconv.Error` itself for
/// a kind this module does not know yet).
pub(crate) fn lib(e: Error) -> PyErr {
    match kind_of(&e) {
        Some(kind) => raise(kind, e.to_string()),
        None => Python::attach(|py| match BASE.get(py) {
            Some(class) => PyErr::from_type(class.bind(py).clone(), e.to_string()),
            None => PyRuntimeError::new_err(e.to_string()),
        }),
    }
}

/// An error from running a layer or network on an input: every problem
/// with the input's geometry (too small for a kernel, wrong channels,
/// too large) is a shape error.
pub(crate) fn forward(e: Error) -> PyErr {
    match e {
        Error::InvalidParam { .. } | Error::TooLarge { .. } => raise(Kind::Shape, e.to_string()),
        e => lib(e),
    }
}

/// An error from loading a checkpoint: anything but I/O and ISA problems
/// means the contents are not loadable.
pub(crate) fn load(e: Error) -> PyErr {
    match e {
        Error::Io { .. } | Error::Isa(_) => lib(e),
        e => raise(Kind::Format, e.to_string()),
    }
}

/// An ISA selection error.
pub(crate) fn isa(e: repconv_rs::IsaError) -> PyErr {
    raise(Kind::Isa, e.to_string())
}
