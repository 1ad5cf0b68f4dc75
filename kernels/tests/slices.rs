//! The public slice-level entry points against the f64 oracle, on every ISA
//! this CPU has, with the layouts `Conv2d` never passes: `conv1x1` with row
//! strides `ldb > n` and `ldc > n` (odd ones included) and its matrices at
//! odd offsets inside NaN-filled buffers; `conv3x3` on a prepared input at an
//! odd offset, stride 1 and 2, and `conv3x3_rows` in uneven bands (bitwise
//! the whole output); `dw1x1` at both strides with its windows at odd
//! offsets. Every float outside what a call may write must still be NaN
//! afterwards, and NaN in the gaps between rows or around the windows
//! poisons any output that reads it.
//!
//! Run with `cargo test --release -p repconv-kernels --test slices`.

mod common {
    #[allow(dead_code)]
    pub mod isas;
}

use proptest::prelude::*;
use repconv_kernels::conv1x1::{Conv1x1Args, conv1x1, pack_weights, packed_len, scratch_len};
use repconv_kernels::conv3x3::{
    Conv3x3Args, Conv3x3RowsArgs, Geometry, PlaneRowsMut, conv3x3, conv3x3_rows, prepare_input,
    prepare_input_rows, row_bands_supported, tap_offsets, tap_offsets_rows,
};
use repconv_kernels::dwconv1x1::{self, Dw1x1Args, PACKED_PER_CHANNEL, dw1x1};
use repconv_kernels::reference::{RefConv, conv2d_nchw_ref};
use repconv_kernels::{Activation, Isa};

/// Every ISA this CPU has, printed once for `suite` (inside a proptest a
/// failing requirement would be shrunk and recorded as a regression, so
/// [`required_isas_ran`] checks REPCONV_REQUIRE_ISA for every loop here).
fn isas(suite: &str) -> Vec<Isa> {
    let all: Vec<Isa> = Isa::available().collect();
    common::isas::print(suite, &all.iter().map(|i| i.name()).collect::<Vec<_>>());
    all
}

/// The loops above run every ISA of [`Isa::available`]: it must include
/// those REPCONV_REQUIRE_ISA names.
#[test]
fn required_isas_ran() {
    let all: Vec<&str> = Isa::available().map(|i| i.name()).collect();
    common::isas::require("slices", &all);
}

/// Deterministic values in [-1, 1) (splitmix64).
fn values(seed: u64, len: usize) -> Vec<f32> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn activation(relu: bool) -> Activation {
    if relu { Activation::Relu } else { Activation::Identity }
}

/// `|got - want| <= 1e-5 * magnitude + 1e-6`, NaN only against NaN.
fn close(got: f32, want: f32, mag: f32) -> bool {
    if want.is_nan() || got.is_nan() {
        return want.is_nan() && got.is_nan();
    }
    if want.is_infinite() || got.is_infinite() {
        return got == want;
    }
    (f64::from(got) - f64::from(want)).abs() <= 1e-5 * f64::from(mag) + 1e-6
}

/// A 1x1 problem: `m x k` weights, a `k x n` input with row stride `ldb`, an
/// `m x n` output with row stride `ldc`, the input and output windows at
/// `b_off` and `c_off` in NaN buffers.
#[derive(Clone, Copy, Debug)]
struct Gemm {
    m: usize,
    k: usize,
    n: usize,
    ldb_extra: usize,
    ldc_extra: usize,
    b_off: usize,
    c_off: usize,
    relu: bool,
    nan_at: Option<usize>,
    seed: u64,
}

fn check_conv1x1(p: Gemm) -> Result<(), TestCaseError> {
    let Gemm { m, k, n, ldb_extra, ldc_extra, b_off, c_off, relu, nan_at, seed } = p;
    let (ldb, ldc) = (n + ldb_extra, n + ldc_extra);
    let weights = values(seed, m * k);
    let bias = values(seed + 1, m);
    let mut x = values(seed + 2, k * n); // contiguous k x n
    if let Some(i) = nan_at {
        x[i % (k * n)] = f32::NAN;
    }
    let rc = RefConv {
        n: 1,
        cin: k,
        h: 1,
        w: n,
        cout: m,
        kernel: [1, 1],
        stride: [1, 1],
        padding: [0, 0],
        dilation: [1, 1],
        groups: 1,
        relu,
    };
    let (want, mag) = conv2d_nchw_ref(&rc, &x, &weights, Some(&bias));

    // B: rows at stride ldb; the gaps between rows and the floats around
    // the window are NaN. The slice ends at the last row's last column.
    let b_len = (k - 1) * ldb + n;
    let mut b_buf = vec![f32::NAN; b_off + b_len + 64];
    for kk in 0..k {
        let row = b_off + kk * ldb;
        b_buf[row..row + n].copy_from_slice(&x[kk * n..(kk + 1) * n]);
    }
    let b = &b_buf[b_off..b_off + b_len];
    let c_len = (m - 1) * ldc + n;
    for isa in isas("slices::conv1x1") {
        let mut packed = vec![f32::NAN; packed_len(isa, m, k).unwrap()];
        pack_weights(isa, &weights, Some(&bias), m, k, &mut packed);
        let mut scratch = vec![f32::NAN; scratch_len(isa, k).unwrap()];
        let mut c_buf = vec![f32::NAN; c_off + c_len + 64];
        let args = Conv1x1Args {
            m,
            k,
            n,
            packed: &packed,
            b,
            ldb,
            c: &mut c_buf[c_off..c_off + c_len],
            ldc,
        };
        conv1x1(isa, activation(relu), args, &mut scratch);
        for (i, &v) in c_buf.iter().enumerate() {
            let inside = i >= c_off && (i - c_off) / ldc < m && (i - c_off) % ldc < n;
            if !inside {
                prop_assert!(v.is_nan(), "{isa}: {p:?}: float {i} outside the output written");
                continue;
            }
            let (r, j) = ((i - c_off) / ldc, (i - c_off) % ldc);
            let (w, g) = (want[r * n + j], mag[r * n + j]);
            prop_assert!(close(v, w, g), "{isa}: {p:?}: c[{r}][{j}] = {v}, want {w} (mag {g})");
        }
    }
    Ok(())
}

/// A direct 3x3 problem: `m` output channels over a `cin x h x w` input at
/// `stride`, the prepared input at `prep_off` and the output at `out_off`
/// in NaN buffers; `cuts` picks the band borders for `conv3x3_rows`.
#[derive(Clone, Copy, Debug)]
struct Direct {
    cin: usize,
    h: usize,
    w: usize,
    stride: usize,
    m: usize,
    prep_off: usize,
    out_off: usize,
    relu: bool,
    cuts: (usize, usize),
    seed: u64,
}

fn check_conv3x3(p: Direct) -> Result<(), TestCaseError> {
    let Direct { cin, h, w, stride, m, prep_off, out_off, relu, cuts, seed } = p;
    let g = Geometry::new(cin, h, w, stride).unwrap();
    let (oh, ow) = g.output_hw();
    let k = g.k();
    let weights = values(seed, m * k); // OIHW: per channel (ci, ky, kx) = tap order
    let bias = values(seed + 1, m);
    let x = values(seed + 2, cin * h * w);
    let rc = RefConv {
        n: 1,
        cin,
        h,
        w,
        cout: m,
        kernel: [3, 3],
        stride: [stride, stride],
        padding: [1, 1],
        dilation: [1, 1],
        groups: 1,
        relu,
    };
    let (want, mag) = conv2d_nchw_ref(&rc, &x, &weights, Some(&bias));
    let mut offsets = vec![0usize; k];
    tap_offsets(&g, &mut offsets);
    let n_out = m * oh * ow;
    for isa in isas("slices::conv3x3") {
        let mut packed = vec![f32::NAN; packed_len(isa, m, k).unwrap()];
        pack_weights(isa, &weights, Some(&bias), m, k, &mut packed);
        let mut prepared = vec![f32::NAN; g.prepared_len()];
        prepare_input(isa, &g, &x, &mut prepared);
        // The prepared input at an odd offset (unaligned loads), NaN around.
        let mut prep_buf = vec![f32::NAN; prep_off + prepared.len() + 64];
        prep_buf[prep_off..prep_off + prepared.len()].copy_from_slice(&prepared);
        let mut out_buf = vec![f32::NAN; out_off + n_out + 64];
        let args = Conv3x3Args {
            geometry: g,
            m,
            packed: &packed,
            prepared: &prep_buf[prep_off..prep_off + prepared.len()],
            offsets: &offsets,
            output: &mut out_buf[out_off..out_off + n_out],
        };
        conv3x3(isa, activation(relu), args);
        for (i, &v) in out_buf.iter().enumerate() {
            if i < out_off || i >= out_off + n_out {
                prop_assert!(v.is_nan(), "{isa}: {p:?}: float {i} outside the output written");
                continue;
            }
            let j = i - out_off;
            prop_assert!(
                close(v, want[j], mag[j]),
                "{isa}: {p:?}: output[{j}] = {v}, want {} (mag {})",
                want[j],
                mag[j]
            );
        }
        let whole = &out_buf[out_off..out_off + n_out];

        if !row_bands_supported(isa, &g) {
            continue;
        }
        // The same rows in up to three bands, each from its own prepared rows.
        let mut borders = [cuts.0 % (oh + 1), cuts.1 % (oh + 1)];
        borders.sort_unstable();
        let mut banded = vec![f32::NAN; n_out];
        let all = PlaneRowsMut::new(&mut banded, m, oh, ow);
        let (top, rest) = all.split_at(borders[0]);
        let (middle, bottom) = rest.split_at(borders[1]);
        for band in [top, middle, bottom] {
            let rows = band.rows();
            if rows.is_empty() {
                continue;
            }
            let mut prep = vec![f32::NAN; g.rows_prepared_len(&rows)];
            prepare_input_rows(isa, &g, &x, rows.clone(), &mut prep);
            let mut offs = vec![0usize; k];
            tap_offsets_rows(&g, &rows, &mut offs);
            let args = Conv3x3RowsArgs {
                geometry: g,
                m,
                packed: &packed,
                prepared: &prep,
                offsets: &offs,
                output: band,
            };
            conv3x3_rows(isa, activation(relu), args);
        }
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        prop_assert_eq!(
            bits(&banded),
            bits(whole),
            "{}: {:?}: bands {:?} differ from the whole output",
            isa,
            p,
            borders
        );
    }
    Ok(())
}

/// A depthwise 1x1 problem, the input window at `in_off` and the output at
/// `out_off` in NaN buffers (the output slice handed over runs 19 floats
/// past the output, which must stay NaN).
#[derive(Clone, Copy, Debug)]
struct Depthwise {
    channels: usize,
    h: usize,
    w: usize,
    stride: usize,
    in_off: usize,
    out_off: usize,
    relu: bool,
    nan_at: Option<usize>,
    seed: u64,
}

fn check_dw1x1(p: Depthwise) -> Result<(), TestCaseError> {
    let Depthwise { channels, h, w, stride, in_off, out_off, relu, nan_at, seed } = p;
    let (oh, ow) = ((h - 1) / stride + 1, (w - 1) / stride + 1);
    let (n_in, n_out) = (channels * h * w, channels * oh * ow);
    let weights = values(seed, channels);
    let bias = values(seed + 1, channels);
    let mut x = values(seed + 2, n_in);
    if let Some(i) = nan_at {
        x[i % n_in] = f32::NAN;
    }
    let rc = RefConv {
        n: 1,
        cin: channels,
        h,
        w,
        cout: channels,
        kernel: [1, 1],
        stride: [stride, stride],
        padding: [0, 0],
        dilation: [1, 1],
        groups: channels,
        relu,
    };
    let (want, mag) = conv2d_nchw_ref(&rc, &x, &weights, Some(&bias));
    let mut packed = vec![f32::NAN; channels * PACKED_PER_CHANNEL];
    dwconv1x1::pack_weights(&weights, Some(&bias), channels, &mut packed);
    let mut in_buf = vec![f32::NAN; in_off + n_in + 64];
    in_buf[in_off..in_off + n_in].copy_from_slice(&x);
    const SLACK: usize = 19;
    for isa in isas("slices::dw1x1") {
        let mut out_buf = vec![f32::NAN; out_off + n_out + SLACK + 64];
        let args = Dw1x1Args {
            channels,
            h,
            w,
            stride,
            packed: &packed,
            input: &in_buf[in_off..in_off + n_in],
            output: &mut out_buf[out_off..out_off + n_out + SLACK],
        };
        dw1x1(isa, activation(relu), args);
        for (i, &v) in out_buf.iter().enumerate() {
            if i < out_off || i >= out_off + n_out {
                prop_assert!(v.is_nan(), "{isa}: {p:?}: float {i} outside the output written");
                continue;
            }
            let j = i - out_off;
            prop_assert!(
                close(v, want[j], mag[j]),
                "{isa}: {p:?}: output[{j}] = {v}, want {} (mag {})",
                want[j],
                mag[j]
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// `conv1x1` with strided rows: `m` straddles every ISA's `MR` (up to
    /// 3 x 8 + 1), `n` every `NR` (up to 3 x 48 + 2) including the GEMV
    /// tails of 1-4 columns, `ldb`/`ldc` up to 9 past `n`.
    #[test]
    fn conv1x1_with_strides_and_offsets(
        m in 1usize..=25,
        k in 1usize..=40,
        n in 1usize..=146,
        ldb_extra in 0usize..=9,
        ldc_extra in 0usize..=9,
        b_off in 0usize..=17,
        c_off in 0usize..=17,
        relu: bool,
        nan_at in proptest::option::weighted(0.2, 0usize..10_000),
        seed: u64,
    ) {
        check_conv1x1(Gemm { m, k, n, ldb_extra, ldc_extra, b_off, c_off, relu, nan_at, seed })?;
    }

    /// `conv3x3` and `conv3x3_rows`: both strides, widths around the
    /// row-aligned tile sizes, channel counts off the register tile.
    #[test]
    fn conv3x3_whole_and_in_bands(
        cin in 1usize..=7,
        h in 1usize..=11,
        w in 1usize..=70,
        stride in 1usize..=2,
        m in 1usize..=19,
        prep_off in 0usize..=7,
        out_off in 0usize..=13,
        relu: bool,
        cuts: (usize, usize),
        seed: u64,
    ) {
        check_conv3x3(Direct { cin, h, w, stride, m, prep_off, out_off, relu, cuts, seed })?;
    }

    /// `dw1x1` at both strides, planes around the vector widths.
    #[test]
    fn dw1x1_with_offsets(
        channels in 1usize..=20,
        h in 1usize..=9,
        w in 1usize..=40,
        stride in 1usize..=2,
        in_off in 0usize..=17,
        out_off in 0usize..=17,
        relu: bool,
        nan_at in proptest::option::weighted(0.2, 0usize..10_000),
        seed: u64,
    ) {
        check_dw1x1(Depthwise { channels, h, w, stride, in_off, out_off, relu, nan_at, seed })?;
    }
}

/// Shapes the random sweep may miss: exact multiples of every tile, one
/// column, the widest row strides, an empty band of rows.
#[test]
fn edge_shapes() {
    for (m, k, n) in [(1, 1, 1), (8, 3, 48), (6, 5, 16), (24, 2, 96), (7, 1, 147), (2, 33, 4)] {
        for (ldb_extra, ldc_extra) in [(0, 0), (1, 7), (31, 2)] {
            let p = Gemm {
                m,
                k,
                n,
                ldb_extra,
                ldc_extra,
                b_off: 3,
                c_off: 5,
                relu: true,
                nan_at: None,
                seed: (m * 1000 + k * 10 + n) as u64,
            };
            check_conv1x1(p).unwrap();
        }
    }
    for (cin, h, w, stride) in [(1, 1, 1, 1), (3, 8, 64, 1), (3, 9, 127, 2), (4, 2, 48, 1)] {
        let p = Direct {
            cin,
            h,
            w,
            stride,
            m: 9,
            prep_off: 1,
            out_off: 3,
            relu: false,
            cuts: (0, usize::MAX),
            seed: 7,
        };
        check_conv3x3(p).unwrap();
    }
    for (channels, h, w, stride) in [(1, 1, 1, 1), (16, 4, 16, 1), (3, 7, 33, 2), (2, 1, 1, 2)] {
        let p = Depthwise {
            channels,
            h,
            w,
            stride,
            in_off: 1,
            out_off: 1,
            relu: true,
            nan_at: Some(5),
            seed: 11,
        };
        check_dw1x1(p).unwrap();
    }
}
