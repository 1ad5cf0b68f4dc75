//! The GEMM under the 1x1, general and direct 3x3 paths: packing its weights
//! and calling it on one group's output rows, split into whole `MR`-row
//! blocks over threads.

use repconv_kernels::conv1x1::{self, Conv1x1Args};
use repconv_kernels::{Activation as KernelAct, Isa};

use super::frame::for_each_row_block;
use crate::error::{Error, Result};
use crate::scratch::with_panel;

/// Packs `groups` groups of OIHW weights (`m` rows of reduction `k` each)
/// and the bias into the GEMM's layout for `isa`.
pub(super) fn pack(
    isa: Isa,
    [groups, m, k]: [usize; 3],
    weights: &[f32],
    bias: Option<&[f32]>,
) -> Result<Vec<f32>> {
    let too_large = Error::TooLarge { what: "packed weights" };
    let per_group = conv1x1::packed_len(isa, m, k).ok_or(too_large.clone())?;
    let total =
        per_group.checked_mul(groups).filter(|&t| t <= crate::MAX_ELEMENTS).ok_or(too_large)?;
    let mut packed = vec![0.0; total];
    for (g, dst) in packed.chunks_exact_mut(per_group.max(1)).enumerate() {
        let w = &weights[g * m * k..(g + 1) * m * k];
        conv1x1::pack_weights(isa, w, bias.map(|b| &b[g * m..(g + 1) * m]), m, k, dst);
    }
    Ok(packed)
}

/// Length of one group's packed weights (`m` rows, reduction `k`) for `isa`.
pub(super) fn packed_len(isa: Isa, m: usize, k: usize) -> Option<usize> {
    conv1x1::packed_len(isa, m, k)
}

/// Pixels per register tile of `isa`: bands of the general path are whole
/// multiples of it where they can be.
pub(super) fn tile_cols(isa: Isa) -> usize {
    conv1x1::tile(isa).1
}

/// One GEMM call on one group: for the `m` output rows `r` and the `n`
/// columns `j` of a column band starting at output column `col0`,
/// `c[r * ldc + col0 + j] = A(bias[r] + Σ_kk W[r][kk] · b[kk * ldb + j])`.
pub(super) struct Gemm<'a> {
    /// The kernels' instruction set (the one `packed` was packed for).
    pub isa: Isa,
    /// The fused activation.
    pub act: KernelAct,
    /// This group's packed weights.
    pub packed: &'a [f32],
    /// Output rows.
    pub m: usize,
    /// Reduction length.
    pub k: usize,
    /// Columns in the band.
    pub n: usize,
    /// The input matrix, `k` rows `ldb` apart.
    pub b: &'a [f32],
    /// Row stride of `b`.
    pub ldb: usize,
    /// Row stride of the output.
    pub ldc: usize,
    /// First output column of the band.
    pub col0: usize,
}

impl Gemm<'_> {
    /// Runs the GEMM into `c` (the group's `m` whole output rows, `ldc`
    /// long), in tasks of whole `MR`-row blocks when `parallel`. Nothing
    /// outside the band is written; the split never changes any element's
    /// arithmetic (that depends only on `k`, `n` and the element's column).
    pub(super) fn run(&self, c: &mut [f32], parallel: bool) {
        let Gemm { isa, act, packed, m, k, n, b, ldb, ldc, col0 } = *self;
        let mr = conv1x1::tile(isa).0;
        let block_len = (k + 1) * mr;
        // `pack` sized the packed weights, k * MR, with checked arithmetic;
        // the panel is k * NR <= 8 k * MR floats.
        let scratch = conv1x1::scratch_len(isa, k).expect("checked when packing");
        for_each_row_block(mr, c, m, ldc, parallel, |first_block, ct| {
            let args = Conv1x1Args {
                m: ct.len() / ldc,
                k,
                n,
                packed: &packed[first_block * block_len..],
                b,
                ldb,
                c: &mut ct[col0..],
                ldc,
            };
            with_panel(scratch, |s| conv1x1::conv1x1(isa, act, args, s));
        });
    }
}
