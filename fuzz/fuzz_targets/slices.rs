//! The kernels' public slice API with arbitrary layouts, on any ISA this CPU
//! has: `conv1x1` with row strides past the row length and its matrices at
//! offsets inside NaN buffers, `conv3x3` on a prepared input at an offset
//! (and `conv3x3_rows` in bands, bitwise the whole output), `dw1x1` at both
//! strides. Each output equals the f64 reference within
//! `1e-5 * Σ|terms| + 1e-6` (NaN only where the reference has NaN), and
//! every float outside what the call may write is still NaN.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use repconv_kernels::conv1x1::{Conv1x1Args, conv1x1, pack_weights, packed_len, scratch_len};
use repconv_kernels::conv3x3::{
    Conv3x3Args, Conv3x3RowsArgs, Geometry, PlaneRowsMut, conv3x3, conv3x3_rows, prepare_input,
    prepare_input_rows, row_bands_supported, tap_offsets, tap_offsets_rows,
};
use repconv_kernels::dwconv1x1::{self, Dw1x1Args, PACKED_PER_CHANNEL, dw1x1};
use repconv_kernels::reference::{RefConv, conv2d_nchw_ref};
use repconv_kernels::{Activation, Isa};

#[derive(Arbitrary, Debug)]
struct Input {
    op: u8,
    isa: u8,
    relu: bool,
    /// m (output rows or channels), k or cin, n or w, h.
    dims: [u8; 4],
    /// Extra row stride of B and C (conv1x1), stride (others).
    extra: [u8; 2],
    /// Offsets of the two windows in their NaN buffers.
    offsets: [u8; 2],
    cuts: [u8; 2],
    nan_at: Option<u16>,
    data: Vec<i8>,
}

fn close(got: f32, want: f32, mag: f32) -> bool {
    if want.is_nan() || got.is_nan() {
        return want.is_nan() && got.is_nan();
    }
    if want.is_infinite() || got.is_infinite() {
        return got == want;
    }
    (f64::from(got) - f64::from(want)).abs() <= 1e-5 * f64::from(mag) + 1e-6
}

/// Checks `buf`: inside `window` (flat positions of the output, in order)
/// against the reference; everything else still NaN.
fn check(
    what: &str,
    buf: &[f32],
    inside: impl Fn(usize) -> Option<usize>,
    want: &[f32],
    mag: &[f32],
) {
    for (i, &v) in buf.iter().enumerate() {
        match inside(i) {
            Some(j) => assert!(
                close(v, want[j], mag[j]),
                "{what}: [{j}] got {v} want {} (mag {})",
                want[j],
                mag[j]
            ),
            None => assert!(v.is_nan(), "{what}: float {i} outside the output was written"),
        }
    }
}

fuzz_target!(|inp: Input| {
    let isas: Vec<Isa> = Isa::available().collect();
    let isa = isas[inp.isa as usize % isas.len()];
    let act = if inp.relu { Activation::Relu } else { Activation::Identity };
    let val = |i: usize| inp.data.get(i % inp.data.len().max(1)).map_or(0.5, |&v| v as f32 / 64.0);
    let [d0, d1, d2, d3] = inp.dims.map(usize::from);
    let [off0, off1] = inp.offsets.map(|o| usize::from(o % 32));
    let reference = |rc: &RefConv, x: &mut Vec<f32>, weights: &[f32], bias: &[f32]| {
        if let Some(i) = inp.nan_at {
            let len = x.len();
            x[usize::from(i) % len] = f32::NAN;
        }
        conv2d_nchw_ref(rc, x, weights, Some(bias))
    };
    match inp.op % 3 {
        0 => {
            let (m, k, n) = (1 + d0 % 26, 1 + d1 % 40, 1 + d2 % 150);
            let (ldb, ldc) =
                (n + usize::from(inp.extra[0] % 12), n + usize::from(inp.extra[1] % 12));
            let weights: Vec<f32> = (0..m * k).map(|i| val(7 * i + 1)).collect();
            let bias: Vec<f32> = (0..m).map(|i| val(3 * i + 2)).collect();
            let mut x: Vec<f32> = (0..k * n).map(val).collect();
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
                relu: inp.relu,
            };
            let (want, mag) = reference(&rc, &mut x, &weights, &bias);
            let b_len = (k - 1) * ldb + n;
            let mut b_buf = vec![f32::NAN; off0 + b_len + 64];
            for kk in 0..k {
                let row = off0 + kk * ldb;
                b_buf[row..row + n].copy_from_slice(&x[kk * n..(kk + 1) * n]);
            }
            let mut packed = vec![f32::NAN; packed_len(isa, m, k).unwrap()];
            pack_weights(isa, &weights, Some(&bias), m, k, &mut packed);
            let mut scratch = vec![f32::NAN; scratch_len(isa, k).unwrap()];
            let c_len = (m - 1) * ldc + n;
            let mut c_buf = vec![f32::NAN; off1 + c_len + 64];
            conv1x1(
                isa,
                act,
                Conv1x1Args {
                    m,
                    k,
                    n,
                    packed: &packed,
                    b: &b_buf[off0..off0 + b_len],
                    ldb,
                    c: &mut c_buf[off1..off1 + c_len],
                    ldc,
                },
                &mut scratch,
            );
            let inside = |i: usize| {
                let j = i.checked_sub(off1)?;
                (j / ldc < m && j % ldc < n).then(|| j / ldc * n + j % ldc)
            };
            check(
                &format!("conv1x1 {isa} m={m} k={k} n={n} ldb={ldb} ldc={ldc}"),
                &c_buf,
                inside,
                &want,
                &mag,
            );
        }
        1 => {
            let (m, cin, w, h) = (1 + d0 % 20, 1 + d1 % 6, 1 + d2 % 80, 1 + d3 % 12);
            let stride = 1 + usize::from(inp.extra[0] % 2);
            let g = Geometry::new(cin, h, w, stride).unwrap();
            let (oh, ow) = g.output_hw();
            let k = g.k();
            let weights: Vec<f32> = (0..m * k).map(|i| val(7 * i + 1)).collect();
            let bias: Vec<f32> = (0..m).map(|i| val(3 * i + 2)).collect();
            let mut x: Vec<f32> = (0..cin * h * w).map(val).collect();
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
                relu: inp.relu,
            };
            let (want, mag) = reference(&rc, &mut x, &weights, &bias);
            let mut packed = vec![f32::NAN; packed_len(isa, m, k).unwrap()];
            pack_weights(isa, &weights, Some(&bias), m, k, &mut packed);
            let mut prepared = vec![f32::NAN; off0 + g.prepared_len() + 64];
            prepare_input(isa, &g, &x, &mut prepared[off0..off0 + g.prepared_len()]);
            let mut offsets = vec![0; k];
            tap_offsets(&g, &mut offsets);
            let n_out = m * oh * ow;
            let mut out = vec![f32::NAN; off1 + n_out + 64];
            conv3x3(
                isa,
                act,
                Conv3x3Args {
                    geometry: g,
                    m,
                    packed: &packed,
                    prepared: &prepared[off0..off0 + g.prepared_len()],
                    offsets: &offsets,
                    output: &mut out[off1..off1 + n_out],
                },
            );
            let inside = |i: usize| i.checked_sub(off1).filter(|&j| j < n_out);
            check(&format!("conv3x3 {isa} {g:?} m={m}"), &out, inside, &want, &mag);
            if row_bands_supported(isa, &g) {
                let mut cuts = inp.cuts.map(|c| usize::from(c) % (oh + 1));
                cuts.sort_unstable();
                let mut banded = vec![f32::NAN; n_out];
                let (top, rest) = PlaneRowsMut::new(&mut banded, m, oh, ow).split_at(cuts[0]);
                let (middle, bottom) = rest.split_at(cuts[1]);
                for band in [top, middle, bottom] {
                    let rows = band.rows();
                    if rows.is_empty() {
                        continue;
                    }
                    let mut prep = vec![f32::NAN; g.rows_prepared_len(&rows)];
                    prepare_input_rows(isa, &g, &x, rows.clone(), &mut prep);
                    let mut offs = vec![0; k];
                    tap_offsets_rows(&g, &rows, &mut offs);
                    conv3x3_rows(
                        isa,
                        act,
                        Conv3x3RowsArgs {
                            geometry: g,
                            m,
                            packed: &packed,
                            prepared: &prep,
                            offsets: &offs,
                            output: band,
                        },
                    );
                }
                let whole = &out[off1..off1 + n_out];
                for (j, (a, b)) in banded.iter().zip(whole).enumerate() {
                    assert_eq!(
                        a.to_bits(),
                        b.to_bits(),
                        "conv3x3_rows {isa} {g:?} bands {cuts:?}: [{j}]"
                    );
                }
            }
        }
        _ => {
            let (channels, h, w) = (1 + d0 % 24, 1 + d3 % 10, 1 + d2 % 50);
            let stride = 1 + usize::from(inp.extra[0] % 2);
            let (oh, ow) = ((h - 1) / stride + 1, (w - 1) / stride + 1);
            let (n_in, n_out) = (channels * h * w, channels * oh * ow);
            let weights: Vec<f32> = (0..channels).map(|i| val(7 * i + 1)).collect();
            let bias: Vec<f32> = (0..channels).map(|i| val(3 * i + 2)).collect();
            let mut x: Vec<f32> = (0..n_in).map(val).collect();
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
                relu: inp.relu,
            };
            let (want, mag) = reference(&rc, &mut x, &weights, &bias);
            let mut packed = vec![f32::NAN; channels * PACKED_PER_CHANNEL];
            dwconv1x1::pack_weights(&weights, Some(&bias), channels, &mut packed);
            let mut input = vec![f32::NAN; off0 + n_in + 64];
            input[off0..off0 + n_in].copy_from_slice(&x);
            let slack = usize::from(inp.extra[1] % 20);
            let mut out = vec![f32::NAN; off1 + n_out + slack + 64];
            dw1x1(
                isa,
                act,
                Dw1x1Args {
                    channels,
                    h,
                    w,
                    stride,
                    packed: &packed,
                    input: &input[off0..off0 + n_in],
                    output: &mut out[off1..off1 + n_out + slack],
                },
            );
            let inside = |i: usize| i.checked_sub(off1).filter(|&j| j < n_out);
            check(
                &format!("dw1x1 {isa} c={channels} {h}x{w} s{stride}"),
                &out,
                inside,
                &want,
                &mag,
            );
        }
    }
});
