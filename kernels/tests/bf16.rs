//! The bf16 kernels (`repconv_kernels::bf16`) on every bf16 implementation
//! this CPU runs: the AVX512_BF16 hardware path where the CPU has it, and the
//! software model everywhere (so the drivers, layouts, tails and bounds are
//! checked on every machine). Without AVX512_BF16 the hardware path is
//! skipped with a loud message; `REPCONV_REQUIRE_BF16=1` turns that skip into
//! a failure (for runs on bf16 machines).
//!
//! # The reference and its tolerance
//! The oracle (`conv2d_nchw_ref`, f64) gets the *same* bf16-rounded inputs
//! and weights the kernel multiplies, so only the kernel's f32 summation
//! differs from it. Every bf16 x bf16 product is exact in f32 (8 + 8
//! significant bits), so the kernel's error is at most one f32 rounding per
//! addition, `<= (k + 1) · 2^-24 · Σ|terms|`, plus the oracle's final rounding
//! to f32 and denormal flushing (below 1.2e-38). With `k <= 97` here that is
//! below `5.9e-6 · Σ|terms|`, inside the project's
//! `|got - ref| <= 1e-5 · Σ|terms| + 1e-6`. The multi-band test uses small
//! integers, whose sums are exact, and compares exactly.
//!
//! Run with `cargo test --release -p repconv-kernels --test bf16`.

use proptest::prelude::*;
use repconv_kernels::Activation;
use repconv_kernels::bf16::conv1x1::kernel_name;
use repconv_kernels::bf16::{
    Bf16Isa, Bf16Kind, Conv1x1Bf16Args, Conv1x1Bf16PairedArgs, Conv3x3Bf16Args, MR, NR,
    bf16_to_f32, conv1x1_bf16, conv1x1_bf16_paired, conv3x3_bf16, conv3x3_kernel_name,
    conv3x3_output_hw, conv3x3_scratch_len, convert_to_bf16, f32_to_bf16, pack_panel, pack_weights,
    packed_len, panel_len, round_to_bf16, scratch_len,
};
use repconv_kernels::reference::{RefConv, conv2d_nchw_ref};

/// Odd offsets of the input and output windows inside their NaN buffers.
const IN_GUARD: usize = 37;
const OUT_GUARD: usize = 13;
/// NaN elements after each window (more than a tile's 48 columns).
const TAIL_GUARD: usize = 3 * 16 + 5;
/// A NaN pair word (both halves quiet NaN), filling panel gaps and scratch.
const NAN_PAIR: u32 = 0x7fc0_7fc0;

/// The implementations to run, printed once per test binary so a log shows
/// what ran; a loud line when the hardware path is skipped.
fn isas() -> Vec<Bf16Isa> {
    static ONCE: std::sync::Once = std::sync::Once::new();
    let all: Vec<Bf16Isa> = Bf16Isa::available().collect();
    ONCE.call_once(|| {
        // Straight to the process's stderr: the test harness captures
        // `eprintln!` of passing tests, and this must show in every log.
        use std::io::Write;
        let names: Vec<&str> = all.iter().map(|i| i.name()).collect();
        let mut msg = format!("bf16 implementations exercised: {}\n", names.join(", "));
        if let Err(e) = Bf16Isa::native() {
            msg += &format!(
                "!!!!!!!! SKIPPING the AVX512_BF16 kernels: {e}. Only the emulated bf16 \
                 kernels ran; run these tests on an AVX512_BF16 CPU (Zen 4/5, Sapphire \
                 Rapids) to check the hardware path. !!!!!!!!\n"
            );
        }
        let _ = std::io::stderr().lock().write_all(msg.as_bytes());
    });
    all
}

/// A deterministic generator (splitmix64), so cases are reproducible from a seed.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
    /// Uniform integer in [lo, hi] as f32.
    fn int(&mut self, lo: i32, hi: i32) -> f32 {
        (lo + (self.next_u64() % (hi - lo + 1) as u64) as i32) as f32
    }
}

#[derive(Clone, Copy, Debug)]
struct Case {
    m: usize,
    k: usize,
    n: usize,
    /// Extra elements per input row (ldb = n + ldb_extra) and output row.
    ldb_extra: usize,
    ldc_extra: usize,
    relu: bool,
    seed: u64,
    /// Small integers (exact sums) instead of uniform values.
    ints: bool,
}

/// Special values planted into one case.
#[derive(Clone, Copy, Debug, Default)]
struct Plant {
    /// (channel, pixel) of the input and the value put there.
    input: Option<(usize, usize, f32)>,
    /// (row, channel) of the weights and the value.
    weight: Option<(usize, usize, f32)>,
    /// Row of the bias set to NaN.
    bias_nan: Option<usize>,
}

struct Data {
    /// `k x n` input, compact.
    x: Vec<f32>,
    /// `m x k` weights.
    w: Vec<f32>,
    bias: Vec<f32>,
}

fn make_data(case: &Case, plant: &Plant) -> Data {
    let Case { m, k, n, seed, ints, .. } = *case;
    let mut rng = Rng(seed);
    // Inputs in [0, 1) like post-ReLU activations, weights in [-1, 1), bias
    // in [-1, 1): about half of the outputs are negative, so ReLU bites.
    let (x, w, bias) = if ints {
        let x = (0..k * n).map(|_| rng.int(-4, 4)).collect();
        let w = (0..m * k).map(|_| rng.int(-4, 4)).collect();
        let b = (0..m).map(|_| rng.int(-64, 64)).collect();
        (x, w, b)
    } else {
        let x = (0..k * n).map(|_| rng.uniform(0.0, 1.0)).collect();
        let w = (0..m * k).map(|_| rng.uniform(-1.0, 1.0)).collect();
        let b = (0..m).map(|_| rng.uniform(-1.0, 1.0) * (k as f32).sqrt() * 0.5).collect();
        (x, w, b)
    };
    let mut d = Data { x, w, bias };
    if let Some((c, j, v)) = plant.input {
        d.x[c * n + j] = v;
    }
    if let Some((r, c, v)) = plant.weight {
        d.w[r * k + c] = v;
    }
    if let Some(r) = plant.bias_nan {
        d.bias[r] = f32::NAN;
    }
    d
}

/// The oracle on the bf16-rounded operands: `(want, magnitude)`, `m x n`.
fn reference(case: &Case, d: &Data) -> (Vec<f32>, Vec<f32>) {
    let Case { m, k, n, relu, .. } = *case;
    let p = RefConv {
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
    let x: Vec<f32> = d.x.iter().map(|&v| round_to_bf16(v)).collect();
    let w: Vec<f32> = d.w.iter().map(|&v| round_to_bf16(v)).collect();
    conv2d_nchw_ref(&p, &x, &w, Some(&d.bias))
}

/// Runs the f32-input entry with NaN guards around every buffer; checks the
/// output canaries and returns the `m x n` result.
fn run_f32_entry(isa: Bf16Isa, case: &Case, d: &Data, packed: &[u32]) -> Vec<f32> {
    let Case { m, k, n, ldb_extra, ldc_extra, relu, .. } = *case;
    let (ldb, ldc) = (n + ldb_extra, n + ldc_extra);
    // Input rows inside NaN: the gaps between rows and the tail are NaN, so
    // a read outside the window poisons an output.
    let mut b = vec![f32::NAN; IN_GUARD + (k.max(1) - 1) * ldb + n + TAIL_GUARD];
    for kk in 0..k {
        let at = IN_GUARD + kk * ldb;
        b[at..at + n].copy_from_slice(&d.x[kk * n..(kk + 1) * n]);
    }
    let c_len = (m - 1) * ldc + n;
    let mut c = vec![f32::NAN; OUT_GUARD + c_len + TAIL_GUARD];
    let mut scratch = vec![NAN_PAIR; scratch_len(k, n).unwrap()];
    let act = if relu { Activation::Relu } else { Activation::Identity };
    let args =
        Conv1x1Bf16Args { m, k, n, packed, b: &b[IN_GUARD..], ldb, c: &mut c[OUT_GUARD..], ldc };
    conv1x1_bf16(isa, act, args, &mut scratch);
    collect_output(isa, case, &c, ldc)
}

/// The `m x n` window of an output buffer, after checking that every element
/// outside it (guards and row gaps) is still NaN.
fn collect_output(isa: Bf16Isa, case: &Case, c: &[f32], ldc: usize) -> Vec<f32> {
    let Case { m, n, .. } = *case;
    let mut got = Vec::with_capacity(m * n);
    for (i, v) in c.iter().enumerate() {
        let inside = i >= OUT_GUARD && {
            let off = i - OUT_GUARD;
            off / ldc < m && off % ldc < n
        };
        if inside {
            got.push(*v);
        } else {
            assert!(v.is_nan(), "{isa} {case:?}: element {i} outside the output overwritten: {v}");
        }
    }
    assert_eq!(got.len(), m * n);
    got
}

/// Runs the pre-paired entry on a panel made by `pack_panel` (NaN pair words
/// in the row gaps and after the panel, scratch full of NaN pairs).
fn run_paired_entry(isa: Bf16Isa, case: &Case, d: &Data, packed: &[u32]) -> Vec<f32> {
    let Case { m, k, n, ldb_extra, ldc_extra, relu, .. } = *case;
    let ldp = n + ldb_extra;
    let len = panel_len(k, n, ldp).unwrap();
    let mut panel = vec![NAN_PAIR; IN_GUARD + len + TAIL_GUARD];
    pack_panel(isa, &d.x, n, k, n, &mut panel[IN_GUARD..IN_GUARD + len], ldp);
    let ldc = n + ldc_extra;
    let mut c = vec![f32::NAN; OUT_GUARD + (m - 1) * ldc + n + TAIL_GUARD];
    let mut scratch = vec![NAN_PAIR; scratch_len(k, n).unwrap()];
    let act = if relu { Activation::Relu } else { Activation::Identity };
    let args = Conv1x1Bf16PairedArgs {
        m,
        k,
        n,
        packed,
        panel: &panel[IN_GUARD..],
        ldp,
        c: &mut c[OUT_GUARD..],
        ldc,
    };
    conv1x1_bf16_paired(isa, act, args, &mut scratch);
    collect_output(isa, case, &c, ldc)
}

/// Checks one case on every implementation: both entry points, against the
/// oracle (tolerance in the module docs; exact for integer cases) and against
/// each other bit for bit.
fn check(case: Case, plant: Plant) {
    let Case { m, k, n, .. } = case;
    let d = make_data(&case, &plant);
    let (want, mag) = reference(&case, &d);
    let mut packed = vec![NAN_PAIR; packed_len(m, k).unwrap()];
    pack_weights(&d.w, Some(&d.bias), m, k, &mut packed);
    for isa in isas() {
        let got = run_f32_entry(isa, &case, &d, &packed);
        let paired = run_paired_entry(isa, &case, &d, &packed);
        for (i, (g, p)) in got.iter().zip(&paired).enumerate() {
            assert_eq!(
                g.to_bits(),
                p.to_bits(),
                "{isa} {case:?}: paired entry differs at (row {}, col {})",
                i / n,
                i % n
            );
        }
        let mut bad = Vec::new();
        for (i, ((&g, &r), &mg)) in got.iter().zip(&want).zip(&mag).enumerate() {
            let ok = if r.is_nan() {
                g.is_nan()
            } else if case.ints || r.is_infinite() {
                g == r
            } else {
                (g - r).abs() <= 1e-5 * mg + 1e-6
            };
            if !ok {
                bad.push(format!(
                    "(row {}, col {}): got {g}, want {r}, magnitude {mg}",
                    i / n,
                    i % n
                ));
            }
        }
        assert!(
            bad.is_empty(),
            "{} {case:?} {plant:?} ({} of {} outputs wrong):\n{}",
            kernel_name(isa),
            bad.len(),
            m * n,
            bad.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
        );
    }
}

fn case(m: usize, k: usize, n: usize, relu: bool, seed: u64) -> Case {
    Case { m, k, n, ldb_extra: 3, ldc_extra: 5, relu, seed, ints: false }
}

#[test]
fn implementations_are_reported_and_the_hardware_path_is_required_when_asked() {
    let all = isas();
    assert!(all.contains(&Bf16Isa::emulated()));
    let native = Bf16Isa::native();
    assert_eq!(all.iter().any(|i| i.kind() == Bf16Kind::Avx512Bf16), native.is_ok());
    if std::env::var("REPCONV_REQUIRE_BF16").is_ok_and(|v| v == "1") {
        assert!(native.is_ok(), "REPCONV_REQUIRE_BF16=1 but: {native:?}");
    }
    for isa in all {
        let name = kernel_name(isa);
        assert_eq!(name, format!("conv1x1_bf16_{MR}x{NR}__{isa}"));
    }
}

/// The vector conversion (`vcvtneps2bf16` on the hardware path) and the
/// panel conversion (`vcvtne2ps2bf16` + word permute) agree bit for bit with
/// the scalar definition on specials, ties, denormals and random bits, at
/// every length modulo 16.
#[test]
fn vector_conversions_match_the_scalar_definition() {
    let mut vals: Vec<f32> = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        f32::from_bits(0x7f80_0001), // signalling NaN, payload in the low bits
        f32::from_bits(0xffbf_ffff),
        f32::from_bits(0x7fc0_1234),
        f32::MAX,
        f32::MIN,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
        f32::from_bits(1),           // smallest denormal
        f32::from_bits(0x807f_ffff), // largest negative denormal
        f32::from_bits(0x7f7f_7fff), // just below the overflow tie
        f32::from_bits(0x7f7f_8000), // the overflow tie: rounds to infinity
        1.0 + 1.0 / 256.0,           // tie, to even (down)
        1.0 + 3.0 / 256.0,           // tie, to even (up)
        -(1.0 + 3.0 / 256.0),
        1.0 + 1.0 / 256.0 + f32::EPSILON, // just above a tie
    ];
    let mut rng = Rng(5);
    for _ in 0..5000 {
        vals.push(f32::from_bits(rng.next_u64() as u32));
        // Ties and near-ties of random magnitudes.
        let t = (rng.next_u64() as u32 & 0xffff_0000) | 0x8000;
        vals.push(f32::from_bits(t));
        vals.push(f32::from_bits(t + 1));
        vals.push(f32::from_bits(t - 1));
    }
    let want: Vec<u16> = vals.iter().map(|&v| f32_to_bf16(v)).collect();
    // The scalar definition itself on the specials.
    assert_eq!(want[0], 0x0000);
    assert_eq!(want[1], 0x8000);
    assert_eq!(want[4], 0x7f80);
    assert!(bf16_to_f32(want[6]).is_nan() && bf16_to_f32(want[8]).is_nan());
    assert_eq!(want[8], 0x7fc0);
    assert_eq!(want[15], 0x0000);
    assert_eq!(want[16], 0x8000);
    assert_eq!(want[17], 0x7f7f);
    assert_eq!(want[18], 0x7f80);
    assert_eq!(want[19], 0x3f80);
    assert_eq!(want[20], 0x3f82);
    assert_eq!(want[22], 0x3f81);
    for isa in isas() {
        for start in [0, 1, 7, 15] {
            for len in [0, 1, 15, 16, 17, 33, vals.len() - start] {
                let src = &vals[start..start + len];
                let mut dst = vec![0xdead_u16; len];
                convert_to_bf16(isa, src, &mut dst);
                for (i, (&g, &w)) in dst.iter().zip(&want[start..start + len]).enumerate() {
                    assert_eq!(g, w, "{isa}: {:e} ({:#010x})", src[i], src[i].to_bits());
                }
            }
        }
        // The panel: channels 2p and 2p+1 of pixel j in one word, for odd and
        // even k, any n, any row stride; the gaps are left untouched.
        for (k, n, ldp) in [(1, 1, 1), (2, 17, 20), (3, 33, 33), (5, 40, 47), (6, 1, 3)] {
            let x: Vec<f32> = (0..k * n).map(|i| vals[(i * 7) % vals.len()]).collect();
            let len = panel_len(k, n, ldp).unwrap();
            let mut panel = vec![0xdead_beef_u32; len + 4];
            pack_panel(isa, &x, n, k, n, &mut panel, ldp);
            for p in 0..k.div_ceil(2) {
                for j in 0..ldp {
                    let at = p * ldp + j;
                    if at >= len {
                        break;
                    }
                    let word = panel[at];
                    if j >= n {
                        assert_eq!(word, 0xdead_beef, "{isa}: gap word ({p}, {j}) written");
                        continue;
                    }
                    let lo = f32_to_bf16(x[2 * p * n + j]);
                    let hi = if 2 * p + 1 < k { f32_to_bf16(x[(2 * p + 1) * n + j]) } else { 0 };
                    assert_eq!(
                        word,
                        u32::from(lo) | u32::from(hi) << 16,
                        "{isa}: ({k},{n}) ({p}, {j})"
                    );
                }
            }
            assert!(panel[len..].iter().all(|&w| w == 0xdead_beef), "{isa}: wrote past the panel");
        }
    }
}

#[test]
fn pack_weights_layout() {
    // m = 9 rows (two blocks, the second with one row), k = 3 (odd).
    let (m, k) = (9, 3);
    let w: Vec<f32> = (0..m * k).map(|i| i as f32 + 0.5).collect();
    let bias: Vec<f32> = (0..m).map(|i| -(i as f32)).collect();
    let mut dst = vec![NAN_PAIR; packed_len(m, k).unwrap()];
    assert_eq!(dst.len(), 2 * (2 + 1) * MR);
    pack_weights(&w, Some(&bias), m, k, &mut dst);
    let bf = |x: f32| u32::from(f32_to_bf16(x));
    for r in 0..m {
        let (blk, i) = (r / MR, r % MR);
        let base = blk * 3 * MR;
        assert_eq!(dst[base + i], bias[r].to_bits());
        assert_eq!(dst[base + MR + i], bf(w[r * k]) | bf(w[r * k + 1]) << 16);
        assert_eq!(dst[base + 2 * MR + i], bf(w[r * k + 2]), "odd k pads the high half with 0");
    }
    // Rows past m are zero (bias and weights).
    assert!(dst[3 * MR + 1..4 * MR].iter().all(|&v| v == 0));
    assert!(dst[4 * MR + 1..5 * MR].iter().all(|&v| v == 0));
    pack_weights(&w, None, m, k, &mut dst);
    assert_eq!(dst[0], 0);
    // Weights are rounded to nearest even, not truncated.
    let mut one = vec![0; packed_len(1, 1).unwrap()];
    pack_weights(&[1.0 + 3.0 / 256.0], None, 1, 1, &mut one);
    assert_eq!(one[MR], 0x3f82);
}

#[test]
fn canonical_tile_borders() {
    let mut seed = 1;
    for m in [1, MR - 1, MR, MR + 1, 2 * MR, 3 * MR + 1] {
        for n in [1, 4, 15, 16, 17, 32, 47, 48, 49, 64, 95, 96, 97, 3 * NR + 2] {
            for k in [1, 2, 3, 16, 17] {
                seed += 1;
                check(case(m, k, n, seed % 2 == 0, seed), Plant::default());
            }
        }
    }
}

#[test]
fn mobileone_plane_sizes_and_tight_strides() {
    let mut seed = 100;
    for hw in [7, 14, 28] {
        for (m, k) in [(16, 8), (9, 13)] {
            seed += 1;
            let c = Case { ldb_extra: 0, ldc_extra: 0, ..case(m, k, hw * hw, true, seed) };
            check(c, Plant::default());
        }
    }
}

/// Several column bands (the band narrows as k grows): integer data, so
/// the sums are exact and the comparison is exact.
#[test]
fn several_bands_exact() {
    // k = 2000: bands of 96 columns; n = 200 -> 96 + 96 + 8.
    let c = Case {
        m: 9,
        k: 2000,
        n: 200,
        ldb_extra: 1,
        ldc_extra: 2,
        relu: false,
        seed: 9,
        ints: true,
    };
    check(c, Plant::default());
    let c =
        Case { m: 17, k: 7, n: 130, ldb_extra: 0, ldc_extra: 1, relu: true, seed: 10, ints: true };
    check(c, Plant::default());
}

#[test]
fn k_zero_gives_the_activated_bias() {
    for relu in [false, true] {
        check(case(11, 0, 50, relu, 3), Plant::default());
    }
}

/// NaN and infinity in an input, a weight or the bias reach exactly the
/// outputs they contribute to, as in the f32 kernels (also through ReLU).
#[test]
fn nan_and_inf_propagate_like_f32() {
    let mut seed = 200;
    for (m, k, n) in [(9, 5, 50), (8, 16, 48), (3, 1, 17), (17, 6, 97)] {
        let spots = [(0, 0), (k - 1, n - 1), (k / 2, n / 2), (k - 1, 0)];
        for (c, j) in spots {
            for v in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                for relu in [false, true] {
                    seed += 1;
                    check(
                        case(m, k, n, relu, seed),
                        Plant { input: Some((c, j, v)), ..Default::default() },
                    );
                    let r = (c + j) % m;
                    check(
                        case(m, k, n, relu, seed),
                        Plant { weight: Some((r, c, v)), ..Default::default() },
                    );
                }
            }
            seed += 1;
            check(
                case(m, k, n, false, seed),
                Plant { bias_nan: Some(j % m), ..Default::default() },
            );
        }
    }
}

#[test]
fn relu_bites_about_half() {
    let c = case(16, 24, 96, false, 77);
    let d = make_data(&c, &Plant::default());
    let mut packed = vec![0; packed_len(c.m, c.k).unwrap()];
    pack_weights(&d.w, Some(&d.bias), c.m, c.k, &mut packed);
    let out = run_f32_entry(Bf16Isa::emulated(), &c, &d, &packed);
    let neg = out.iter().filter(|v| **v < 0.0).count() as f64 / out.len() as f64;
    assert!((0.2..=0.8).contains(&neg), "fraction of negative outputs {neg}");
    let relu = run_f32_entry(Bf16Isa::emulated(), &Case { relu: true, ..c }, &d, &packed);
    for (a, b) in out.iter().zip(&relu) {
        assert_eq!(b.to_bits(), if *a < 0.0 { 0 } else { a.to_bits() });
    }
}

/// The hardware path agrees with the software model within the tolerance
/// (only the rounding inside one `vdpbf16ps` may differ) on a MobileOne-like
/// shape; the check above already compares each to the oracle.
#[test]
fn hardware_and_emulation_agree_on_a_layer() {
    let Ok(native) = Bf16Isa::native() else {
        isas();
        return;
    };
    let c = Case {
        m: 40,
        k: 96,
        n: 196,
        ldb_extra: 0,
        ldc_extra: 0,
        relu: false,
        seed: 8,
        ints: false,
    };
    let d = make_data(&c, &Plant::default());
    let mut packed = vec![0; packed_len(c.m, c.k).unwrap()];
    pack_weights(&d.w, Some(&d.bias), c.m, c.k, &mut packed);
    let hw = run_f32_entry(native, &c, &d, &packed);
    let emu = run_f32_entry(Bf16Isa::emulated(), &c, &d, &packed);
    let (_, mag) = reference(&c, &d);
    for ((a, b), m) in hw.iter().zip(&emu).zip(&mag) {
        assert!((a - b).abs() <= 2e-5 * m + 2e-6, "{a} vs {b}");
    }
}

fn small_problem() -> (Vec<u32>, Vec<f32>, Vec<f32>) {
    let mut packed = vec![0; packed_len(3, 5).unwrap()];
    pack_weights(&[0.5; 15], None, 3, 5, &mut packed);
    (packed, vec![1.0; 5 * 20], vec![0.0; 3 * 20])
}

#[test]
#[should_panic(expected = "scratch too short")]
fn short_scratch_panics() {
    let (packed, b, mut c) = small_problem();
    let mut scratch = vec![0; scratch_len(5, 20).unwrap() - 1];
    let args =
        Conv1x1Bf16Args { m: 3, k: 5, n: 20, packed: &packed, b: &b, ldb: 20, c: &mut c, ldc: 20 };
    conv1x1_bf16(Bf16Isa::emulated(), Activation::Identity, args, &mut scratch);
}

#[test]
#[should_panic(expected = "output too short")]
fn short_output_panics() {
    let (packed, b, mut c) = small_problem();
    let mut scratch = vec![0; scratch_len(5, 20).unwrap()];
    let args = Conv1x1Bf16Args {
        m: 3,
        k: 5,
        n: 20,
        packed: &packed,
        b: &b,
        ldb: 20,
        c: &mut c[1..],
        ldc: 20,
    };
    conv1x1_bf16(Bf16Isa::emulated(), Activation::Identity, args, &mut scratch);
}

#[test]
#[should_panic(expected = "input too short")]
fn short_input_panics() {
    let (packed, b, mut c) = small_problem();
    let mut scratch = vec![0; scratch_len(5, 20).unwrap()];
    let args = Conv1x1Bf16Args {
        m: 3,
        k: 5,
        n: 20,
        packed: &packed,
        b: &b[1..],
        ldb: 20,
        c: &mut c,
        ldc: 20,
    };
    conv1x1_bf16(Bf16Isa::emulated(), Activation::Identity, args, &mut scratch);
}

#[test]
#[should_panic(expected = "pad halves of the last panel row must be +0")]
fn paired_odd_k_with_a_nonzero_pad_half_panics() {
    let (packed, b, mut c) = small_problem();
    let mut panel = vec![0; panel_len(5, 20, 20).unwrap()];
    pack_panel(Bf16Isa::emulated(), &b, 20, 5, 20, &mut panel, 20);
    panel[2 * 20 + 7] |= 0x3f80 << 16;
    let mut scratch = vec![0; scratch_len(5, 20).unwrap()];
    let args = Conv1x1Bf16PairedArgs {
        m: 3,
        k: 5,
        n: 20,
        packed: &packed,
        panel: &panel,
        ldp: 20,
        c: &mut c,
        ldc: 20,
    };
    conv1x1_bf16_paired(Bf16Isa::emulated(), Activation::Identity, args, &mut scratch);
}

#[test]
#[should_panic(expected = "panel too short")]
fn paired_short_panel_panics() {
    let (packed, _, mut c) = small_problem();
    let panel = vec![0; panel_len(5, 20, 20).unwrap() - 1];
    let mut scratch = vec![0; scratch_len(5, 20).unwrap()];
    let args = Conv1x1Bf16PairedArgs {
        m: 3,
        k: 5,
        n: 20,
        packed: &packed,
        panel: &panel,
        ldp: 20,
        c: &mut c,
        ldc: 20,
    };
    conv1x1_bf16_paired(Bf16Isa::emulated(), Activation::Identity, args, &mut scratch);
}

#[test]
fn sizes_overflow_to_none() {
    assert_eq!(packed_len(usize::MAX, 4), None);
    assert_eq!(packed_len(8, usize::MAX), None);
    assert_eq!(scratch_len(usize::MAX, usize::MAX), None);
    assert_eq!(panel_len(usize::MAX, 2, usize::MAX), None);
    assert_eq!(packed_len(9, 3), Some(2 * 3 * MR));
    assert_eq!(panel_len(5, 20, 30), Some(2 * 30 + 20));
}

/// One bf16 3x3 case on every implementation against the oracle on the
/// bf16-rounded operands; the input slice runs into a NaN tail (an
/// over-read poisons an output), the output sits in a NaN buffer whose tail
/// must stay NaN, and both scratch buffers start as NaN.
#[allow(clippy::too_many_arguments)]
fn check3x3(
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
    stride: usize,
    relu: bool,
    seed: u64,
    nan_at: Option<usize>,
    inf_weight_at: Option<usize>,
) {
    let mut rng = Rng(seed);
    let mut x: Vec<f32> = (0..cin * h * w).map(|_| rng.uniform(0.0, 1.0)).collect();
    if let Some(i) = nan_at {
        let len = x.len();
        x[i % len] = f32::NAN;
    }
    let k = cin * 9;
    let mut wts: Vec<f32> = (0..cout * k).map(|_| rng.uniform(-1.0, 1.0)).collect();
    if let Some(i) = inf_weight_at {
        // A non-finite weight meets the zero padding at the borders: NaN
        // there (Inf * 0), as in PyTorch and the oracle; Inf inside.
        let len = wts.len();
        wts[i % len] = f32::INFINITY;
    }
    let bias: Vec<f32> =
        (0..cout).map(|_| rng.uniform(-1.0, 1.0) * (k as f32).sqrt() * 0.3).collect();
    let p = RefConv {
        n: 1,
        cin,
        h,
        w,
        cout,
        kernel: [3, 3],
        stride: [stride, stride],
        padding: [1, 1],
        dilation: [1, 1],
        groups: 1,
        relu,
    };
    let xr: Vec<f32> = x.iter().map(|&v| round_to_bf16(v)).collect();
    let wr: Vec<f32> = wts.iter().map(|&v| round_to_bf16(v)).collect();
    let (want, mag) = conv2d_nchw_ref(&p, &xr, &wr, Some(&bias));
    let (oh, ow) = conv3x3_output_hw(h, w, stride);
    assert_eq!(want.len(), cout * oh * ow);
    let mut packed = vec![0; packed_len(cout, k).unwrap()];
    pack_weights(&wts, Some(&bias), cout, k, &mut packed);
    let mut input = x.clone();
    input.extend(std::iter::repeat_n(f32::NAN, TAIL_GUARD));
    let (pl, pnl) = conv3x3_scratch_len(cin, h, w, stride).unwrap();
    for isa in isas() {
        let mut out = vec![f32::NAN; want.len() + TAIL_GUARD];
        let mut prepared = vec![f32::NAN; pl];
        let mut panel = vec![NAN_PAIR; pnl];
        let act = if relu { Activation::Relu } else { Activation::Identity };
        let args = Conv3x3Bf16Args {
            cin,
            h,
            w,
            cout,
            stride,
            packed: &packed,
            input: &input,
            output: &mut out,
        };
        conv3x3_bf16(isa, act, args, &mut prepared, &mut panel);
        let name = conv3x3_kernel_name(isa, stride);
        assert!(out[want.len()..].iter().all(|v| v.is_nan()), "{name}: wrote past the output");
        let mut bad = Vec::new();
        for (i, ((&g, &r), &mg)) in out.iter().zip(&want).zip(&mag).enumerate() {
            let ok = if r.is_nan() {
                g.is_nan()
            } else if r.is_infinite() {
                g == r
            } else {
                (g - r).abs() <= 1e-5 * mg + 1e-6
            };
            if !ok {
                let (c, y, xx) = (i / (oh * ow), i / ow % oh, i % ow);
                bad.push(format!("(c {c}, y {y}, x {xx}): got {g}, want {r}, magnitude {mg}"));
            }
        }
        assert!(
            bad.is_empty(),
            "{name} cin {cin} cout {cout} {h}x{w} s{stride} relu {relu} nan {nan_at:?} ({} of {} wrong):\n{}",
            bad.len(),
            want.len(),
            bad.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
        );
    }
}

#[test]
fn conv3x3_canonical_shapes() {
    let mut seed = 500;
    for stride in [1, 2] {
        for (cin, cout) in [(1, 1), (1, 9), (2, 8), (3, 17), (4, 5)] {
            for (h, w) in
                [(1, 1), (1, 7), (7, 1), (2, 2), (3, 5), (8, 8), (9, 17), (16, 16), (5, 33)]
            {
                seed += 1;
                check3x3(cin, cout, h, w, stride, seed % 2 == 0, seed, None, None);
            }
        }
    }
}

/// The MobileOne stem (3 -> 48, stride 2) at full size: k = 27 (odd, 14
/// pairs), 112 x 112 outputs in two bands of rows.
#[test]
fn conv3x3_mobileone_stem() {
    check3x3(3, 48, 224, 224, 2, true, 42, None, None);
    check3x3(3, 48, 57, 61, 2, false, 43, None, None);
    check3x3(48, 16, 14, 14, 1, false, 44, None, None);
}

#[test]
fn conv3x3_nan_reaches_its_window_only() {
    let mut seed = 600;
    for stride in [1, 2] {
        for (cin, h, w) in [(2, 5, 5), (3, 9, 17), (1, 16, 16)] {
            let n_in = cin * h * w;
            for at in [0, n_in - 1, w - 1, h * w - 1, n_in / 2] {
                seed += 1;
                check3x3(cin, 9, h, w, stride, seed % 2 == 0, seed, Some(at), None);
            }
        }
    }
}

#[test]
fn conv3x3_inf_weight_meets_padding_as_in_pytorch() {
    let mut seed = 700;
    for stride in [1, 2] {
        for (cin, h, w) in [(1, 5, 5), (2, 9, 17), (3, 6, 1)] {
            for at in [0, 4, 8, 9 * cin - 1] {
                seed += 1;
                check3x3(cin, 9, h, w, stride, seed % 2 == 0, seed, None, Some(at));
            }
        }
    }
}

#[test]
#[should_panic(expected = "stride must be 1 or 2")]
fn conv3x3_stride_3_panics() {
    let packed = vec![0; packed_len(1, 9).unwrap()];
    let mut out = vec![0.0; 4];
    let args = Conv3x3Bf16Args {
        cin: 1,
        h: 4,
        w: 4,
        cout: 1,
        stride: 3,
        packed: &packed,
        input: &[0.0; 16],
        output: &mut out,
    };
    conv3x3_bf16(Bf16Isa::emulated(), Activation::Identity, args, &mut [0.0; 64], &mut [0; 64]);
}

#[test]
#[should_panic(expected = "output too short")]
fn conv3x3_short_output_panics() {
    let packed = vec![0; packed_len(2, 9).unwrap()];
    let (pl, pnl) = conv3x3_scratch_len(1, 4, 4, 2).unwrap();
    let mut out = vec![0.0; 2 * 4 - 1];
    let args = Conv3x3Bf16Args {
        cin: 1,
        h: 4,
        w: 4,
        cout: 2,
        stride: 2,
        packed: &packed,
        input: &[0.0; 16],
        output: &mut out,
    };
    conv3x3_bf16(
        Bf16Isa::emulated(),
        Activation::Identity,
        args,
        &mut vec![0.0; pl],
        &mut vec![0; pnl],
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]

    #[test]
    fn prop_matches_reference_across_tile_borders(
        m in 1usize..=3 * MR + 1,
        n in 1usize..=3 * NR + 2,
        k in 1usize..=41,
        ldb_extra in 0usize..=5,
        ldc_extra in 0usize..=5,
        relu in any::<bool>(),
        seed in any::<u64>(),
    ) {
        check(Case { m, k, n, ldb_extra, ldc_extra, relu, seed, ints: false }, Plant::default());
    }

    #[test]
    fn prop_conv3x3_matches_reference(
        cin in 1usize..=4,
        cout in 1usize..=2 * MR + 1,
        h in 1usize..=20,
        w in 1usize..=40,
        stride in 1usize..=2,
        relu in any::<bool>(),
        seed in any::<u64>(),
    ) {
        check3x3(cin, cout, h, w, stride, relu, seed, None, None);
    }

    #[test]
    fn prop_nan_reaches_exactly_its_outputs(
        m in 1usize..=2 * MR + 1,
        n in 1usize..=2 * NR + 2,
        k in 1usize..=20,
        relu in any::<bool>(),
        seed in any::<u64>(),
        at in any::<(usize, usize)>(),
        in_weights in any::<bool>(),
    ) {
        let c = case(m, k, n, relu, seed);
        let plant = if in_weights {
            Plant { weight: Some((at.0 % m, at.1 % k, f32::NAN)), ..Default::default() }
        } else {
            Plant { input: Some((at.0 % k, at.1 % n, f32::NAN)), ..Default::default() }
        };
        check(c, plant);
    }
}
