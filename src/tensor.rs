//! NCHW f32 tensors: the owned, 64-byte aligned [`Tensor`], and the borrowed
//! [`TensorView`] / [`TensorViewMut`] over a caller's own contiguous slices
//! (so a host program runs convolutions on its buffers without copies).
//!
//! Every constructor checks `data.len() == n * c * h * w` with overflow-checked
//! arithmetic and rejects zero-sized dimensions.

use std::fmt;

use crate::MAX_ELEMENTS;
use crate::error::{Error, Result};

/// A 4-D shape `[n, c, h, w]`.
pub type Shape = [usize; 4];

/// Number of elements of `shape`, checking for zero dimensions, overflow and
/// the [`MAX_ELEMENTS`] cap.
pub fn checked_numel(what: &'static str, shape: Shape) -> Result<usize> {
    for (name, d) in ["n", "c", "h", "w"].iter().zip(shape) {
        if d == 0 {
            return Err(Error::invalid(what, format!("dimension {name} is zero in {shape:?}")));
        }
    }
    let n = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or(Error::TooLarge { what })?;
    if n > MAX_ELEMENTS {
        return Err(Error::TooLarge { what });
    }
    Ok(n)
}

/// One 64-byte aligned chunk of storage. `wide::f32x16` is `repr(C, align(64))`
/// plain old data on every build, which lets `bytemuck` view a `Vec` of them as
/// `&[f32]` without `unsafe`.
type Chunk = wide::f32x16;
const CHUNK: usize = 16;

/// An owned, contiguous NCHW f32 tensor whose data starts on a 64-byte boundary.
#[derive(Clone, PartialEq)]
pub struct Tensor {
    shape: Shape,
    len: usize,
    data: Vec<Chunk>,
}

impl Tensor {
    /// A tensor of zeros.
    pub fn zeros(shape: Shape) -> Result<Tensor> {
        let len = checked_numel("tensor", shape)?;
        Ok(Tensor { shape, len, data: vec![Chunk::ZERO; len.div_ceil(CHUNK)] })
    }

    /// A tensor filled with `value`.
    pub fn full(shape: Shape, value: f32) -> Result<Tensor> {
        let mut t = Tensor::zeros(shape)?;
        t.as_mut_slice().fill(value);
        Ok(t)
    }

    /// Takes `data` (NCHW order) as a tensor of `shape`. The values are copied
    /// once into 64-byte aligned storage.
    pub fn from_vec(shape: Shape, data: Vec<f32>) -> Result<Tensor> {
        Tensor::from_slice(shape, &data)
    }

    /// Copies `data` (NCHW order) into a new tensor of `shape`.
    pub fn from_slice(shape: Shape, data: &[f32]) -> Result<Tensor> {
        let len = checked_numel("tensor", shape)?;
        if data.len() != len {
            return Err(Error::LengthMismatch {
                what: "tensor data",
                expected: len,
                got: data.len(),
            });
        }
        let mut t = Tensor::zeros(shape)?;
        t.as_mut_slice().copy_from_slice(data);
        Ok(t)
    }

    /// Reads native-endian f32 bytes. Any alignment of `bytes` is accepted: the
    /// values are copied, never reinterpreted in place.
    pub fn from_bytes(shape: Shape, bytes: &[u8]) -> Result<Tensor> {
        let len = checked_numel("tensor", shape)?;
        let expected = len.checked_mul(4).ok_or(Error::TooLarge { what: "tensor bytes" })?;
        if bytes.len() != expected {
            return Err(Error::LengthMismatch { what: "tensor bytes", expected, got: bytes.len() });
        }
        let mut t = Tensor::zeros(shape)?;
        bytemuck::cast_slice_mut::<f32, u8>(t.as_mut_slice()).copy_from_slice(bytes);
        Ok(t)
    }

    /// The shape `[n, c, h, w]`.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: tensors have no zero-sized dimension.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The data in NCHW order.
    pub fn as_slice(&self) -> &[f32] {
        &bytemuck::cast_slice::<Chunk, f32>(&self.data)[..self.len]
    }

    /// The data in NCHW order, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut bytemuck::cast_slice_mut::<Chunk, f32>(&mut self.data)[..self.len]
    }

    /// The data as native-endian bytes.
    pub fn as_bytes(&self) -> &[u8] {
        bytemuck::cast_slice(self.as_slice())
    }

    /// Copies the data out into a `Vec`.
    pub fn to_vec(&self) -> Vec<f32> {
        self.as_slice().to_vec()
    }

    /// A borrowed view of the whole tensor.
    pub fn view(&self) -> TensorView<'_> {
        TensorView { shape: self.shape, data: self.as_slice() }
    }

    /// A mutable borrowed view of the whole tensor.
    pub fn view_mut(&mut self) -> TensorViewMut<'_> {
        let shape = self.shape;
        TensorViewMut { shape, data: self.as_mut_slice() }
    }

    /// The same data under another shape with the same number of elements.
    pub fn reshape(mut self, shape: Shape) -> Result<Tensor> {
        let len = checked_numel("reshape", shape)?;
        if len != self.len {
            return Err(Error::ShapeMismatch {
                what: "reshape",
                expected: self.shape.to_vec(),
                got: shape.to_vec(),
            });
        }
        self.shape = shape;
        Ok(self)
    }
}

fn fmt_preview(f: &mut fmt::Formatter<'_>, kind: &str, shape: Shape, data: &[f32]) -> fmt::Result {
    const SHOW: usize = 6;
    write!(f, "{kind}(shape={shape:?}, data=[")?;
    for (i, v) in data.iter().take(SHOW).enumerate() {
        if i > 0 {
            write!(f, ", ")?;
        }
        write!(f, "{v}")?;
    }
    if data.len() > SHOW {
        write!(f, ", … {} more", data.len() - SHOW)?;
    }
    write!(f, "])")
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_preview(f, "Tensor", self.shape, self.as_slice())
    }
}

/// A borrowed, contiguous NCHW view of a caller's slice.
#[derive(Clone, Copy)]
pub struct TensorView<'a> {
    shape: Shape,
    data: &'a [f32],
}

impl<'a> TensorView<'a> {
    /// Views `data` as a tensor of `shape`; the length must match exactly.
    pub fn new(shape: Shape, data: &'a [f32]) -> Result<Self> {
        let len = checked_numel("tensor view", shape)?;
        if data.len() != len {
            return Err(Error::LengthMismatch {
                what: "tensor view",
                expected: len,
                got: data.len(),
            });
        }
        Ok(TensorView { shape, data })
    }

    /// The shape `[n, c, h, w]`.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// The viewed data in NCHW order.
    pub fn as_slice(&self) -> &'a [f32] {
        self.data
    }

    /// Copies the view into an owned tensor.
    pub fn to_tensor(&self) -> Tensor {
        // `TensorView::new` already checked this shape (non-zero, no overflow,
        // within MAX_ELEMENTS), so `zeros` cannot fail.
        let mut t = Tensor::zeros(self.shape).expect("view shape already validated");
        t.as_mut_slice().copy_from_slice(self.data);
        t
    }
}

impl fmt::Debug for TensorView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_preview(f, "TensorView", self.shape, self.data)
    }
}

/// A mutable borrowed, contiguous NCHW view of a caller's slice.
pub struct TensorViewMut<'a> {
    shape: Shape,
    data: &'a mut [f32],
}

impl<'a> TensorViewMut<'a> {
    /// Views `data` as a mutable tensor of `shape`; the length must match exactly.
    pub fn new(shape: Shape, data: &'a mut [f32]) -> Result<Self> {
        let len = checked_numel("tensor view", shape)?;
        if data.len() != len {
            return Err(Error::LengthMismatch {
                what: "tensor view",
                expected: len,
                got: data.len(),
            });
        }
        Ok(TensorViewMut { shape, data })
    }

    /// The shape `[n, c, h, w]`.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// The viewed data in NCHW order.
    pub fn as_slice(&self) -> &[f32] {
        self.data
    }

    /// The viewed data in NCHW order, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        self.data
    }

    /// Reborrows as a shorter-lived mutable view.
    pub fn reborrow(&mut self) -> TensorViewMut<'_> {
        TensorViewMut { shape: self.shape, data: self.data }
    }

    pub(crate) fn into_slice(self) -> &'a mut [f32] {
        self.data
    }
}

impl fmt::Debug for TensorViewMut<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_preview(f, "TensorViewMut", self.shape, self.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_check_lengths_and_zero_dims() {
        assert!(Tensor::from_vec([1, 2, 3, 4], vec![0.0; 24]).is_ok());
        assert!(matches!(
            Tensor::from_vec([1, 2, 3, 4], vec![0.0; 23]),
            Err(Error::LengthMismatch { expected: 24, got: 23, .. })
        ));
        assert!(matches!(Tensor::zeros([1, 0, 3, 4]), Err(Error::InvalidParam { .. })));
        assert!(matches!(Tensor::zeros([usize::MAX, 2, 1, 1]), Err(Error::TooLarge { .. })));
        assert!(matches!(Tensor::zeros([1 << 16, 1 << 16, 1, 1]), Err(Error::TooLarge { .. })));
        assert!(TensorView::new([1, 1, 2, 2], &[0.0; 5]).is_err());
        let mut buf = [0.0; 4];
        assert!(TensorViewMut::new([1, 1, 2, 2], &mut buf).is_ok());
    }

    #[test]
    fn storage_is_64_byte_aligned_and_round_trips() {
        let data: Vec<f32> = (0..37).map(|i| i as f32 * 0.5).collect();
        let t = Tensor::from_vec([1, 1, 1, 37], data.clone()).unwrap();
        assert_eq!(t.as_slice().as_ptr() as usize % 64, 0);
        assert_eq!(t.to_vec(), data);
        assert_eq!(t.view().to_tensor(), t);
        let r = t.clone().reshape([1, 37, 1, 1]).unwrap();
        assert_eq!(r.shape(), [1, 37, 1, 1]);
        assert!(t.reshape([1, 36, 1, 1]).is_err());
    }

    #[test]
    fn from_bytes_accepts_unaligned_input() {
        let data: Vec<f32> = (0..6).map(|i| i as f32 - 2.5).collect();
        let mut bytes = vec![0u8; 1];
        bytes.extend_from_slice(bytemuck::cast_slice(&data));
        let t = Tensor::from_bytes([1, 2, 1, 3], &bytes[1..]).unwrap();
        assert_eq!(t.to_vec(), data);
        assert_eq!(t.as_bytes(), &bytes[1..]);
        assert!(matches!(
            Tensor::from_bytes([1, 2, 1, 3], &bytes[..10]),
            Err(Error::LengthMismatch { expected: 24, got: 10, .. })
        ));
    }

    #[test]
    fn debug_is_short() {
        let t = Tensor::zeros([1, 64, 100, 100]).unwrap();
        let s = format!("{t:?}");
        assert!(s.len() < 120, "{s}");
        assert!(s.contains("[1, 64, 100, 100]"));
    }
}
