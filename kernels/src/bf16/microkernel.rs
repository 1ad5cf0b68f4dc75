//! `conv1x1_bf16_<MR>x<NRV*16>__<isa>`: one full register tile of the bf16 GEMM.
//!
//! ```text
//! out[r][j] = A(bias[r] + Σ_p  w[2p][r]·x[2p][j] + w[2p+1][r]·x[2p+1][j])   r < MR, j < NRV*16
//!
//! accumulators (MR x NRV zmm of 16 f32), 8 x 3 = 24 of 32 zmm:
//!                   panel[p][0..16)  panel[p][16..32)  panel[p][32..48)
//!   wpair[p][0]      acc[0][0]        acc[0][1]         acc[0][2]
//!   ...
//!   wpair[p][7]      acc[7][0]        acc[7][1]         acc[7][2]
//! ```
//! Each panel word holds the (2p, 2p+1) channel pair of one pixel, each
//! weight word the same pair of one output row; one `vdpbf16ps` adds both
//! products to 16 pixels' accumulators. Per reduction *pair*: NRV vector
//! loads of the panel, MR weight-pair broadcasts (folded by LLVM into the
//! `{1to16}` memory operand), MR*NRV `vdpbf16ps`, i.e. 64 FLOPs each.
//! Accumulators start from the bias; ReLU (or nothing) is applied in
//! registers before the f32 store.
//!
//! Packed block: `[bias f32 bits x MR | wpair[0][MR] | ... | wpair[kp-1][MR]]`
//! (`u32` words). Panel row `p` of the tile starts at `p_off + p * ldp`.
//!
//! Preconditions (asserted once at entry, overflow-checked): the block holds
//! `(kp + 1) * MR` words, panel words `p_off + (kp-1)*ldp .. + NRV*16` are in
//! bounds, and `c[c_off + r*ldc .. + NRV*16]` for every `r < MR`.

use super::simd::Simd;

/// Whether `off + len <= slice_len`, without overflow.
#[inline(always)]
pub(crate) fn fits(off: usize, len: usize, slice_len: usize) -> bool {
    off.checked_add(len).is_some_and(|end| end <= slice_len)
}

/// Computes one `MR x (NRV*16)` output tile; see the module docs.
///
/// # Panics
/// If any of the preconditions in the module docs does not hold.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn tile<S: Simd, const MR: usize, const NRV: usize, const RELU: bool>(
    kp: usize,
    block: &[u32],
    panel: &[u32],
    p_off: usize,
    ldp: usize,
    c: &mut [f32],
    c_off: usize,
    ldc: usize,
) {
    const L: usize = super::LANES;
    let nr = NRV * L;
    let words = kp.checked_add(1).and_then(|k1| k1.checked_mul(MR));
    assert!(words.is_some_and(|len| block.len() >= len), "packed block too short");
    assert!(
        kp == 0
            || (kp - 1)
                .checked_mul(ldp)
                .and_then(|last| last.checked_add(p_off))
                .is_some_and(|last| fits(last, nr, panel.len())),
        "panel tile out of bounds"
    );
    assert!(
        (MR - 1)
            .checked_mul(ldc)
            .and_then(|last| last.checked_add(c_off))
            .is_some_and(|last| fits(last, nr, c.len())),
        "c tile out of bounds"
    );

    let mut acc = [[S::zero(); NRV]; MR];
    for (r, row) in acc.iter_mut().enumerate() {
        *row = [S::splat(f32::from_bits(block[r])); NRV];
    }
    let w = &block[MR..(kp + 1) * MR];
    let pp = panel.as_ptr();
    for p in 0..kp {
        let row = p_off + p * ldp;
        let mut x = [S::splat_pair(0); NRV];
        for (j, v) in x.iter_mut().enumerate() {
            // SAFETY: row + NRV*16 <= p_off + (kp-1)*ldp + nr <= panel.len()
            // by the entry assert (p < kp), and j*16 + 16 <= nr.
            *v = unsafe { S::load_pairs(pp.add(row + j * L)) };
        }
        for (r, accs) in acc.iter_mut().enumerate() {
            // SAFETY: `w` holds kp * MR words, p < kp and r < MR.
            let wr = S::splat_pair(unsafe { *w.get_unchecked(p * MR + r) });
            for (a, xj) in accs.iter_mut().zip(x.iter()) {
                *a = S::dot(*a, wr, *xj);
            }
        }
    }
    let cp = c.as_mut_ptr();
    for (r, accs) in acc.iter().enumerate() {
        for (j, a) in accs.iter().enumerate() {
            let v = if RELU { S::relu(*a) } else { *a };
            // SAFETY: c_off + r*ldc + j*16 + 16 <= c_off + (MR-1)*ldc + nr <=
            // c.len() (entry assert, r < MR, (j+1)*16 <= nr); the pointer
            // comes from a unique borrow.
            unsafe { S::store_f32(v, cp.add(c_off + r * ldc + j * L)) };
        }
    }
}
