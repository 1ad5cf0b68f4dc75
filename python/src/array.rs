//! The checks every array argument goes through, each failure a clear
//! exception naming the argument: a numpy.ndarray, dtype float32 (native
//! byte order), the expected rank (and shape, for outputs), C-contiguous
//! and aligned, and (outputs) writeable and not overlapping the input.
//! Nothing is converted or copied: the caller's memory is read and written
//! in place.

use numpy::{
    BorrowError, Element, PyArray, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods,
    PyReadonlyArray, PyReadwriteArray, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use crate::errors::{Kind, raise};

/// A shape as Python prints a tuple: `(1, 3, 224, 224)`, `(5,)`.
pub(crate) fn fmt_shape(shape: &[usize]) -> String {
    match shape {
        [one] => format!("({one},)"),
        _ => {
            let parts: Vec<String> = shape.iter().map(usize::to_string).collect();
            format!("({})", parts.join(", "))
        }
    }
}

/// `obj` as a numpy array of float32 of rank `ndim`, C-contiguous and
/// aligned; `what` names the argument in messages.
fn checked<'py>(
    obj: &Bound<'py, PyAny>,
    what: &str,
    ndim: usize,
    rank_hint: &str,
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    let py = obj.py();
    let Ok(arr) = obj.cast::<PyUntypedArray>() else {
        let type_name = obj.get_type().name().map(|n| n.to_string()).unwrap_or_default();
        return Err(raise(
            Kind::DType,
            format!(
                "{what}: expected a numpy.ndarray of float32, got {type_name} \
                 (convert with numpy.asarray({what}, dtype=numpy.float32))"
            ),
        ));
    };
    let dtype = arr.dtype();
    if !dtype.is_equiv_to(&numpy::dtype::<f32>(py)) {
        return Err(raise(
            Kind::DType,
            format!(
                "{what}: expected dtype float32, got {dtype} (arrays are not converted; \
                 pass {what}.astype(numpy.float32))"
            ),
        ));
    }
    if arr.ndim() != ndim {
        return Err(raise(
            Kind::Shape,
            format!(
                "{what}: expected a {ndim}-D {rank_hint} array, got shape {}",
                fmt_shape(arr.shape())
            ),
        ));
    }
    if !arr.is_c_contiguous() {
        return Err(raise(
            Kind::Layout,
            format!(
                "{what}: expected a C-contiguous array (arrays are not copied; pass \
                 numpy.ascontiguousarray({what}))"
            ),
        ));
    }
    Ok(arr.cast::<PyArrayDyn<f32>>()?.clone())
}

/// A borrow failure as a layout error.
fn borrow_error(what: &str, e: BorrowError) -> PyErr {
    match e {
        BorrowError::NotWriteable => {
            raise(Kind::Layout, format!("{what}: the array is read-only (not writeable)"))
        }
        _ => raise(
            Kind::Layout,
            format!(
                "{what}: the array overlaps another argument of this call, or another \
                 repconv call is writing it"
            ),
        ),
    }
}

/// An input array: float32, rank `ndim`, C-contiguous, borrowed read-only
/// (so no repconv call writes it meanwhile).
pub(crate) fn input<'py>(
    obj: &Bound<'py, PyAny>,
    what: &str,
    ndim: usize,
    rank_hint: &str,
) -> PyResult<PyReadonlyArray<'py, f32, numpy::IxDyn>> {
    let arr = checked(obj, what, ndim, rank_hint)?;
    arr.try_readonly().map_err(|e| borrow_error(what, e))
}

/// An output array: float32 of exactly `shape`, C-contiguous, writeable,
/// borrowed read-write (which fails if it overlaps a borrowed input).
pub(crate) fn output<'py>(
    obj: &Bound<'py, PyAny>,
    what: &str,
    shape: &[usize],
) -> PyResult<PyReadwriteArray<'py, f32, numpy::IxDyn>> {
    let arr = checked(obj, what, shape.len(), "output")?;
    if arr.shape() != shape {
        return Err(raise(
            Kind::Shape,
            format!("{what}: expected shape {}, got {}", fmt_shape(shape), fmt_shape(arr.shape())),
        ));
    }
    arr.try_readwrite().map_err(|e| borrow_error(what, e))
}

/// A new zero-filled C-contiguous array of `shape`.
pub(crate) fn zeros<'py, T: Element>(
    py: Python<'py>,
    shape: &[usize],
) -> Bound<'py, PyArrayDyn<T>> {
    PyArray::zeros(py, shape, false)
}

/// The slice of a checked array (fails only if it is misaligned).
pub(crate) fn slice<'a>(
    arr: &'a PyReadonlyArray<'_, f32, numpy::IxDyn>,
    what: &str,
) -> PyResult<&'a [f32]> {
    arr.as_slice().map_err(|_| misaligned(what))
}

/// The mutable slice of a checked array (fails only if it is misaligned).
pub(crate) fn slice_mut<'a>(
    arr: &'a mut PyReadwriteArray<'_, f32, numpy::IxDyn>,
    what: &str,
) -> PyResult<&'a mut [f32]> {
    arr.as_slice_mut().map_err(|_| misaligned(what))
}

fn misaligned(what: &str) -> PyErr {
    raise(
        Kind::Layout,
        format!("{what}: the array's data is not aligned to 4 bytes (pass {what}.copy())"),
    )
}

/// The shape of a checked 4-D array as an NCHW shape.
pub(crate) fn nchw(shape: &[usize]) -> PyResult<[usize; 4]> {
    shape.try_into().map_err(|_| {
        raise(Kind::Shape, format!("expected a 4-D NCHW shape, got {}", fmt_shape(shape)))
    })
}

/// A copy of any array-like (a numpy array of any real dtype or layout, a
/// nested list, anything with `__array__` such as a CPU torch tensor) as
/// float32 in C order, with its shape: for weights, which are copied into
/// the library's packed layout anyway.
pub(crate) fn to_f32_vec(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<(Vec<usize>, Vec<f32>)> {
    static ASARRAY: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let py = obj.py();
    let asarray = ASARRAY.import(py, "numpy", "asarray")?;
    let converted = asarray
        .call1((obj, numpy::dtype::<f32>(py)))
        .and_then(|a| Ok(a.cast_into::<PyArrayDyn<f32>>()?));
    let arr = match converted {
        Ok(arr) => arr,
        Err(e) => {
            let err = raise(Kind::DType, format!("{what}: cannot convert to a float32 array: {e}"));
            err.set_cause(py, Some(e));
            return Err(err);
        }
    };
    let arr = arr.try_readonly().map_err(|e| borrow_error(what, e))?;
    let view = arr.as_array();
    Ok((view.shape().to_vec(), view.iter().copied().collect()))
}
