//! The geometry of a prepared direct-3x3 input (phase planes, slack, the
//! reduction) and the tap offsets the implicit GEMM reads at.

use core::ops::Range;

/// The widest register tile of any ISA, in pixels: the prepared input's slack
/// covers a whole tile of reads past the last flat position.
pub(super) const MAX_NR: usize = 48;

/// Geometry of one prepared 3x3 convolution input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub(super) cin: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) stride: usize,
}

/// Why a [`Geometry`] could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeometryError {
    /// A dimension is zero.
    Empty,
    /// The stride is not 1 or 2.
    Stride,
    /// The prepared input's length does not fit in `usize` (or in
    /// `isize::MAX` bytes).
    TooLarge,
}

impl core::fmt::Display for GeometryError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            GeometryError::Empty => "a dimension of the 3x3 input is zero",
            GeometryError::Stride => "the direct 3x3 kernels take stride 1 or 2",
            GeometryError::TooLarge => "the prepared 3x3 input would not fit in memory",
        })
    }
}

impl std::error::Error for GeometryError {}

impl Geometry {
    /// The geometry of a `cin x h x w` input at `stride`, checked: every
    /// length the methods below compute then fits in memory, so none of them
    /// can divide by zero or wrap.
    pub fn new(cin: usize, h: usize, w: usize, stride: usize) -> Result<Geometry, GeometryError> {
        if cin == 0 || h == 0 || w == 0 {
            return Err(GeometryError::Empty);
        }
        if stride != 1 && stride != 2 {
            return Err(GeometryError::Stride);
        }
        // hq * wq * s^2 * cin + slack, and the input cin * h * w, in bytes.
        let hq = h.checked_add(2).ok_or(GeometryError::TooLarge)?.div_ceil(stride);
        let wq = w.checked_add(2).ok_or(GeometryError::TooLarge)?.div_ceil(stride);
        let prepared = hq
            .checked_mul(wq)
            .and_then(|n| n.checked_mul(stride * stride))
            .and_then(|n| n.checked_mul(cin))
            .and_then(|n| n.checked_add(wq.checked_mul(2)?.checked_add(2 + MAX_NR)?))
            .and_then(|n| n.checked_mul(size_of::<f32>()))
            .filter(|&bytes| bytes <= isize::MAX as usize);
        let input = cin.checked_mul(h).and_then(|n| n.checked_mul(w));
        if prepared.is_none() || input.is_none() {
            return Err(GeometryError::TooLarge);
        }
        Ok(Geometry { cin, h, w, stride })
    }

    /// Input channels.
    pub fn cin(&self) -> usize {
        self.cin
    }

    /// Input height.
    pub fn h(&self) -> usize {
        self.h
    }

    /// Input width.
    pub fn w(&self) -> usize {
        self.w
    }

    /// Stride (1 or 2).
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Floats of one input image, `cin * h * w`.
    pub fn input_len(&self) -> usize {
        self.cin * self.h * self.w
    }

    /// Phase plane size `(hq, wq)`.
    pub fn phase_hw(&self) -> (usize, usize) {
        ((self.h + 2).div_ceil(self.stride), (self.w + 2).div_ceil(self.stride))
    }

    /// Output size `(oh, ow)`.
    pub fn output_hw(&self) -> (usize, usize) {
        ((self.h - 1) / self.stride + 1, (self.w - 1) / self.stride + 1)
    }

    /// Flat output positions per channel: `oh * wq`.
    pub fn flat_len(&self) -> usize {
        self.output_hw().0 * self.phase_hw().1
    }

    /// Number of prepared planes, `stride^2 * cin`.
    pub fn planes(&self) -> usize {
        self.stride * self.stride * self.cin
    }

    /// Floats per prepared plane, `hq * wq`.
    pub fn plane_len(&self) -> usize {
        let (hq, wq) = self.phase_hw();
        hq * wq
    }

    /// The zero slack after the planes, as a range of the prepared buffer.
    pub fn slack_range(&self) -> std::ops::Range<usize> {
        self.planes() * self.plane_len()..self.prepared_len()
    }

    /// Reduction length `cin * 9`.
    pub fn k(&self) -> usize {
        self.cin * 9
    }

    /// Length of the prepared input, slack included.
    pub fn prepared_len(&self) -> usize {
        let (hq, wq) = self.phase_hw();
        self.stride * self.stride * self.cin * hq * wq + self.slack()
    }

    /// Prepared phase rows that output rows `rows` read: `rows.len()` plus
    /// the taps' reach below them (`2 / stride` rows).
    pub fn band_phase_rows(&self, rows: &Range<usize>) -> usize {
        rows.len().saturating_add(2 / self.stride)
    }

    /// Length of the prepared input of output rows `rows`
    /// ([`prepare_input_rows`](super::prepare_input_rows)), slack included.
    pub fn rows_prepared_len(&self, rows: &Range<usize>) -> usize {
        let (_, wq) = self.phase_hw();
        // Saturating: `rows` comes from the caller and may be any range.
        self.planes()
            .saturating_mul(self.band_phase_rows(rows))
            .saturating_mul(wq)
            .saturating_add(self.slack())
    }

    fn slack(&self) -> usize {
        // The last flat position plus the largest in-plane tap shift can pass
        // the end of the last plane by up to 2*wq + 2; round up generously.
        let (_, wq) = self.phase_hw();
        2 * wq + 2 + MAX_NR
    }

    pub(super) fn check(&self) {
        assert!(self.cin > 0 && self.h > 0 && self.w > 0, "empty input");
        assert!(self.stride == 1 || self.stride == 2, "stride must be 1 or 2");
    }
}

/// Writes the `cin * 9` tap offsets (order `(ci, ky, kx)`) into `dst`.
///
/// # Panics
/// If `dst.len() != g.k()`.
pub fn tap_offsets(g: &Geometry, dst: &mut [usize]) {
    let (hq, _) = g.phase_hw();
    tap_offsets_for(g, hq, dst)
}

/// [`tap_offsets`] for the prepared input of output rows `rows`
/// ([`prepare_input_rows`](super::prepare_input_rows)).
///
/// # Panics
/// If `dst.len() != g.k()`.
pub fn tap_offsets_rows(g: &Geometry, rows: &Range<usize>, dst: &mut [usize]) {
    tap_offsets_for(g, g.band_phase_rows(rows), dst)
}

/// The tap offsets over planes of `hq` phase rows.
fn tap_offsets_for(g: &Geometry, hq: usize, dst: &mut [usize]) {
    g.check();
    assert_eq!(dst.len(), g.k(), "offset table length");
    let (_, wq) = g.phase_hw();
    let s = g.stride;
    for ci in 0..g.cin {
        for ky in 0..3 {
            for kx in 0..3 {
                let phase = (ky % s) * s + kx % s;
                dst[ci * 9 + ky * 3 + kx] =
                    phase * g.cin * hq * wq + ci * hq * wq + (ky / s) * wq + kx / s;
            }
        }
    }
}
