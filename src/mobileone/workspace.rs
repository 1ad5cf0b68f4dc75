//! Reusable buffers, so that a steady-state forward pass allocates nothing.

use std::sync::Mutex;

use crate::error::Result;
use crate::tensor::Tensor;

/// Buffers reused across forward passes of blocks and networks: two
/// activation buffers (ping-pong between blocks), a branch buffer for the
/// multi-branch form, and small vectors for squeeze-excitation, pooling and
/// the classifier head.
/// Each grows to the largest size it has been asked for and never shrinks, so
/// after the first pass at a given input shape nothing is allocated.
#[derive(Debug, Default)]
pub struct Workspace {
    pub(crate) act: [Buf; 2],
    pub(crate) scratch: Scratch,
    /// Pooled features of a batch, image after image (the head's input).
    pub(crate) feats: Vec<f32>,
    /// The head's per-block results over a batch (see `ops::matvec_batch`).
    pub(crate) head_tmp: Vec<f32>,
    /// One workspace per worker thread for a batch split by images (each
    /// locked by the one task running on that worker, so never contended).
    pub(crate) per_thread: Vec<Mutex<Workspace>>,
}

impl Workspace {
    /// An empty workspace; buffers are allocated on first use.
    pub fn new() -> Self {
        Workspace::default()
    }
}

/// The scratch one block needs: a branch output buffer and SE vectors.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    pub(crate) tmp: Buf,
    pub(crate) means: Vec<f32>,
    pub(crate) hidden: Vec<f32>,
}

/// A 64-byte aligned growable buffer (a [`Tensor`] underneath).
#[derive(Debug, Default)]
pub(crate) struct Buf(Option<Tensor>);

impl Buf {
    pub(crate) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, Tensor::len)
    }

    /// The first `len` floats, growing the buffer if needed.
    pub(crate) fn get(&mut self, len: usize) -> Result<&mut [f32]> {
        if self.len() < len {
            self.0 = Some(Tensor::zeros([1, 1, 1, len])?);
        }
        match &mut self.0 {
            Some(t) => Ok(&mut t.as_mut_slice()[..len]),
            // len == 0 and nothing allocated yet.
            None => Ok(&mut []),
        }
    }
}

/// `v[..len]`, growing `v` if needed.
pub(crate) fn grow(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    &mut v[..len]
}
