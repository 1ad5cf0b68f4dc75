//! The `repconv` binary run as a process: the checkpoint commands (`reparam`,
//! `run`, `info`) on the golden fixtures of the `repconv` crate
//! (`../tests/fixtures`, made by `tools/make_fixtures.py`), bad input, and
//! `reparam`'s refusal to write a checkpoint whose forms disagree.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use repconv::mobileone::{MobileOne, MobileOneConfig, Variant};
use repconv::weights::{self, LoadOptions, NamedTensor};
use repconv_cli::compare::max_abs_finite;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

/// Relative tolerance against PyTorch's outputs (as in `tests/golden.rs`).
const REL_TOL: f64 = 1e-5;

/// Absolute tolerance for the whole S0's logits; `tests/golden.rs`
/// (`S0_ABS_TOL`) explains the measured errors behind it.
const S0_ABS_TOL: f64 = 2e-4;

fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn io(kind: &str) -> HashMap<String, NamedTensor> {
    weights::read_tensors(&fixture(&format!("{kind}.io.safetensors")))
        .unwrap()
        .into_iter()
        .map(|t| (t.name.clone(), t))
        .collect()
}

fn load_s0_train() -> MobileOne {
    weights::load_bytes(&fixture("s0.train.safetensors"), &LoadOptions::default()).unwrap()
}

/// Checks `got` against PyTorch's `want` at `abs_tol` and `rel_tol` of
/// `max |want|`.
fn assert_matches(what: &str, got: &[f32], want: &[f32], abs_tol: f64, rel_tol: f64) {
    let (d, rel) = repconv::compare::check_matches(got, want, abs_tol, rel_tol)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    eprintln!("{what}: max |diff| {d:.3e}, relative {rel:.3e}");
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("repconv-cli-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn repconv(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_repconv")).args(args).output().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn cli_reparam_run_info_round_trip() {
    let dir = TempDir::new("roundtrip");
    let train = fixture_path("s0.train.safetensors");
    let fused = dir.path("fused.safetensors");
    let out = repconv(&[
        "reparam",
        "--weights",
        s(&train),
        "--out",
        s(&fused),
        "--size",
        "64",
        "--threads",
        "1",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("stages.3.1") && stdout.contains("logits"), "{stdout}");

    // The fused file holds exactly our own fusion of the train file.
    let ours = load_s0_train().reparameterize().unwrap();
    let written = weights::load(&fused, &LoadOptions::default()).unwrap();
    assert_eq!(weights::to_bytes(&written).unwrap(), weights::to_bytes(&ours).unwrap());

    // `run` on it, and on the train file in both forms, against PyTorch.
    let io = io("s0");
    let input = dir.path("x.safetensors");
    let x = NamedTensor { name: "images".into(), ..io["input"].clone() };
    std::fs::write(&input, weights::tensors_to_bytes(&[x]).unwrap()).unwrap();
    for (i, (w, form, want)) in [
        (&fused, "fused", "output_fused"),
        (&train, "multi", "output_multi"),
        (&train, "fused", "output_fused"),
    ]
    .into_iter()
    .enumerate()
    {
        let y = dir.path(&format!("y{i}.safetensors"));
        let out = repconv(&[
            "run",
            "--weights",
            s(w),
            "--input",
            s(&input),
            "--output",
            s(&y),
            "--form",
            form,
            "--threads",
            "2",
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let t = weights::read_tensors(&std::fs::read(&y).unwrap()).unwrap();
        assert_eq!((t.len(), t[0].name.as_str(), &t[0].shape[..]), (1, "logits", &[2, 10][..]));
        assert_matches(&format!("cli run {form}"), &t[0].data, &io[want].data, S0_ABS_TOL, REL_TOL);
    }
    // The multi-branch form of a fused file does not exist.
    let out = repconv(&[
        "run",
        "--weights",
        s(&fused),
        "--input",
        s(&input),
        "--output",
        s(&dir.path("z.safetensors")),
        "--form",
        "multi",
    ]);
    assert!(!out.status.success());
    assert!(!dir.path("z.safetensors").exists());

    let out = repconv(&["info", "--weights", s(&fused), "--threads", "1"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("mobileone_s0") && text.contains("fused") && text.contains("FLOP"),
        "{text}"
    );
    let params = weights::parameter_count(&ours).to_string();
    assert!(text.contains(&params), "{text}");
}

#[test]
fn cli_reparam_refuses_to_overwrite_without_force() {
    let dir = TempDir::new("overwrite");
    let train = fixture_path("s0.train.safetensors");
    let out_path = dir.path("fused.safetensors");
    std::fs::write(&out_path, b"precious").unwrap();
    let out = repconv(&[
        "reparam",
        "--weights",
        s(&train),
        "--out",
        s(&out_path),
        "--size",
        "32",
        "--threads",
        "1",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("exists") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(&out_path).unwrap(), b"precious");
    assert_eq!(dir.files(), ["fused.safetensors"]);

    let out = repconv(&[
        "reparam",
        "--weights",
        s(&train),
        "--out",
        s(&out_path),
        "--size",
        "32",
        "--threads",
        "1",
        "--force",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(weights::load(&out_path, &LoadOptions::default()).is_ok());
    assert_eq!(dir.files(), ["fused.safetensors"]);
}

#[test]
fn cli_bad_files_fail_with_one_line_and_leave_nothing() {
    let dir = TempDir::new("bad");
    let garbage = dir.path("garbage.safetensors");
    std::fs::write(&garbage, b"this is not a checkpoint at all").unwrap();
    let truncated = dir.path("truncated.safetensors");
    let bytes = fixture("s0.train.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let input = dir.path("x.safetensors");
    std::fs::write(&input, weights::tensors_to_bytes(&[io("s0")["input"].clone()]).unwrap())
        .unwrap();
    let out_path = dir.path("out.safetensors");
    let before = dir.files();
    for (args, needle) in [
        (
            vec!["reparam", "--weights", s(&garbage), "--out", s(&out_path)],
            "not a safetensors file",
        ),
        (vec!["reparam", "--weights", s(&truncated), "--out", s(&out_path)], "truncated"),
        (
            vec!["run", "--weights", s(&garbage), "--input", s(&input), "--output", s(&out_path)],
            "not a safetensors file",
        ),
        (
            vec![
                "run",
                "--weights",
                s(&fixture_path("s0.fused.safetensors")),
                "--input",
                s(&garbage),
                "--output",
                s(&out_path),
            ],
            "not a safetensors file",
        ),
        (vec!["info", "--weights", s(&truncated)], "truncated"),
        (vec!["info", "--weights", s(&dir.path("missing.safetensors"))], "missing.safetensors"),
    ] {
        let out = repconv(&args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: ") && err.contains(needle), "{args:?}: {err}");
        assert_eq!(dir.files(), before, "{args:?} left files behind");
    }
}

#[test]
fn cli_bad_input_is_one_line_and_a_nonzero_exit() {
    let dir = std::env::temp_dir().join(format!("repconv-bad-input-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let garbage = dir.join("garbage.safetensors");
    std::fs::write(&garbage, b"not a checkpoint").unwrap();
    let out = dir.join("out.safetensors");
    let g = garbage.to_str().unwrap();
    let o = out.to_str().unwrap();
    let cases: Vec<Vec<&str>> = vec![
        vec!["info", "--weights", g],
        vec!["reparam", "--weights", g, "--out", o],
        vec!["run", "--weights", g, "--input", g, "--output", o],
        vec!["info", "--weights", "/nonexistent/model.safetensors"],
        vec!["--variant", "s9"],
        vec!["layers", "--threads", "many"],
    ];
    for args in cases {
        let run =
            std::process::Command::new(env!("CARGO_BIN_EXE_repconv")).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{args:?} succeeded");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.trim().is_empty(), "{args:?}: no message");
        assert!(!out.exists(), "{args:?} left an output file behind");
        if args[0] != "--variant" && args[0] != "layers" {
            // Our own errors are one line; clap's usage errors are clap's.
            assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `bytes` (a safetensors file) with every element of the named F32 tensors
/// set to the given value; the other tensors (I64 BatchNorm counters
/// included) are copied as they are.
fn with_filled(bytes: &[u8], fills: &[(&str, f32)]) -> Vec<u8> {
    let st = SafeTensors::deserialize(bytes).unwrap();
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
        .iter()
        .map(|(n, v)| (n.to_string(), v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    for &(name, value) in fills {
        let (_, dtype, _, data) = owned.iter_mut().find(|t| t.0 == name).expect(name);
        assert_eq!(*dtype, Dtype::F32, "{name}");
        *data = value.to_le_bytes().repeat(data.len() / 4);
    }
    let views =
        owned.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()));
    safetensors::serialize(views, None).unwrap()
}

/// A NaN in one form only is a disagreement, not something a max |diff| may
/// drop. The stem's first conv branch gets weights of `f32::MAX` and a
/// BatchNorm weight of 0: the multi-branch form overflows the conv to ±inf
/// and the BN turns it into `inf * 0 = NaN`, while the fused form folds the
/// branch into `f32::MAX * 0 = 0` and stays finite. `reparam` must name the
/// layer and write nothing; the same checkpoint untouched is written.
#[test]
fn cli_reparam_refuses_to_write_when_one_form_has_nan() {
    let dir = TempDir::new("nan");
    let config = MobileOneConfig::variant(Variant::S0).with_num_classes(10);
    let net = MobileOne::random(config, 11).unwrap();
    let good_bytes = weights::to_bytes(&net).unwrap();
    let bad = dir.path("nan.train.safetensors");
    std::fs::write(
        &bad,
        with_filled(
            &good_bytes,
            &[("stem.conv_kxk.0.conv.weight", f32::MAX), ("stem.conv_kxk.0.bn.weight", 0.0)],
        ),
    )
    .unwrap();
    let good = dir.path("good.train.safetensors");
    std::fs::write(&good, &good_bytes).unwrap();

    let fused = dir.path("fused.safetensors");
    let reparam = |w: &Path| {
        repconv(&[
            "reparam",
            "--weights",
            s(w),
            "--out",
            s(&fused),
            "--size",
            "32",
            "--threads",
            "1",
        ])
    };
    let out = reparam(&bad);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(!out.status.success(), "wrote a checkpoint whose forms disagree:\n{stdout}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: layer stem:"), "{stderr}");
    assert!(!fused.exists(), "{stderr}");
    assert_eq!(dir.files(), ["good.train.safetensors", "nan.train.safetensors"]);

    // The control: the unedited network passes the same check and is written.
    let out = reparam(&good);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(weights::load(&fused, &LoadOptions::default()).unwrap().is_reparameterized());
}

// --- bf16 (`--precision bf16` and the main job's bf16 row) ------------------

/// bf16 logits against f32 logits, relative to the largest f32 |logit|.
/// bf16 keeps 8 significant bits (a relative rounding of at most 2^-8, about
/// 4e-3, per weight and input), and the errors of S0's 1x1 layers add up
/// through the network: measured 2.8e-2 for the fused S0 fixture and 5.1e-2
/// for its multi-branch form (whose branches round separately before their
/// BatchNorms and sum), 2.0e-2 for the main job's random S0 at 32-64 pixels
/// (tests/bf16.rs: 0.5-0.9e-2 at 96x96). 0.1 leaves a margin of two over
/// the worst; a broken bf16 kernel is off by the logits' own size, and an
/// f32 run passed off as bf16 fails the "differs" checks.
const BF16_REL_TOL: f64 = 0.1;

/// Whether a child process with this environment runs bf16 on the hardware
/// (AVX512_BF16 and the avx512 kernels), not only on the software model.
fn native_bf16() -> bool {
    use repconv_kernels::bf16::Bf16Isa;
    let isa = repconv::Isa::from_env().map(|i| i.kind() == repconv::IsaKind::Avx512);
    Bf16Isa::native().is_ok() && isa.unwrap_or(false)
}

/// The bf16 implementation a child with `REPCONV_BF16=emulated` runs.
fn bf16_impl() -> &'static str {
    if native_bf16() { "avx512bf16" } else { "emulated" }
}

/// `repconv args` with `REPCONV_BF16` set to `bf16` (`Some("emulated")`: the
/// software model where the CPU lacks AVX512_BF16) or removed (`None`).
fn repconv_bf16(bf16: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_repconv"));
    match bf16 {
        Some(v) => cmd.env(repconv::BF16_ENV, v),
        None => cmd.env_remove(repconv::BF16_ENV),
    };
    cmd.args(args).output().unwrap()
}

fn stdout_ok(out: &std::process::Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what}: {stderr}");
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Whether `message` is the library's reason for refusing bf16: the CPU
/// lacks AVX512_BF16 (naming `REPCONV_BF16=emulated`), or it has it but
/// `REPCONV_ISA` chose other kernels than avx512.
fn is_bf16_reason(message: &str) -> bool {
    message.contains("REPCONV_BF16=emulated") || message.contains("bf16 needs the avx512 kernels")
}

/// A failure of ours: non-zero exit, one line, no panic, the reason.
fn assert_bf16_refused(out: &std::process::Output, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what}: ran bf16 without the hardware");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{what}: {stderr}");
    assert!(stderr.starts_with("error: ") && !stderr.contains("panicked"), "{what}: {stderr}");
    assert!(is_bf16_reason(&stderr), "{what}: {stderr}");
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// `run --precision bf16` on the S0 fixtures (both forms): logits of the
/// right shape, within `BF16_REL_TOL` of the f32 run's and of PyTorch's, the
/// same top classes, and not the f32 logits (the 1x1 layers did round).
/// Without the hardware and without `REPCONV_BF16`, a one-line error and no
/// file.
#[test]
fn cli_run_bf16_logits_agree_with_f32() {
    let dir = TempDir::new("run-bf16");
    let io = io("s0");
    let input = dir.path("x.safetensors");
    let x = NamedTensor { name: "images".into(), ..io["input"].clone() };
    std::fs::write(&input, weights::tensors_to_bytes(&[x]).unwrap()).unwrap();
    let train = fixture_path("s0.train.safetensors");
    let run = |form: &str, precision: &str, env: Option<&str>| {
        let y = dir.path(&format!("{form}-{precision}-{}.safetensors", env.is_some()));
        let out = repconv_bf16(
            env,
            &[
                "run",
                "--weights",
                s(&train),
                "--input",
                s(&input),
                "--output",
                s(&y),
                "--form",
                form,
                "--precision",
                precision,
                "--threads",
                "2",
            ],
        );
        (out, y)
    };
    let logits = |out: &std::process::Output, y: &Path, what: &str| {
        stdout_ok(out, what);
        let t = weights::read_tensors(&std::fs::read(y).unwrap()).unwrap();
        assert_eq!((t.len(), t[0].name.as_str(), &t[0].shape[..]), (1, "logits", &[2, 10][..]));
        t[0].data.clone()
    };
    for (form, torch) in [("fused", "output_fused"), ("multi", "output_multi")] {
        let (out, y) = run(form, "f32", Some("emulated"));
        let f32_logits = logits(&out, &y, form);
        let (out, y) = run(form, "bf16", Some("emulated"));
        let bf16_logits = logits(&out, &y, form);
        for (what, want) in [("f32 run", &f32_logits), ("PyTorch", &io[torch].data)] {
            let scale = max_abs_finite(want);
            let agree = repconv_cli::compare::agreement(want, &bf16_logits, 10);
            eprintln!(
                "{form} bf16 vs {what}: max |diff| {:.3e}, relative {:.3e}",
                agree.max_abs_diff, agree.max_rel_diff
            );
            assert!(scale > 0.0);
            assert!(agree.max_rel_diff <= BF16_REL_TOL, "{form} vs {what}: {agree:?}");
            assert!(agree.max_abs_diff > 0.0, "{form}: bf16 logits equal {what}'s");
            assert!(agree.argmax_equal, "{form} vs {what}: {agree:?}");
        }
    }
    if !native_bf16() {
        let (out, y) = run("fused", "bf16", None);
        assert_bf16_refused(&out, "run");
        assert!(!y.exists());
    }
}

/// The main job's bf16 row, in the JSON and the table: with
/// `REPCONV_BF16=emulated` it runs everywhere (on the hardware where the CPU
/// has it) and agrees with the multi-branch f32 logits within
/// `BF16_REL_TOL`, less closely than the fused f32 form; without it, on a
/// CPU without AVX512_BF16, the reason instead of the row.
#[test]
fn cli_main_job_reports_bf16_or_why_not() {
    let args = ["--size", "32", "--runs", "1", "--threads", "1", "--seed", "5"];
    let json = |env| {
        let text = stdout_ok(&repconv_bf16(env, &[&args[..], &["--json"]].concat()), "main job");
        let mut v = json_lines(&text);
        assert_eq!(v.len(), 1, "{text}");
        v.pop().unwrap()
    };
    let r = json(Some("emulated"));
    let b = &r["bf16"];
    assert!(r["bf16_unavailable"].is_null(), "{r}");
    let implementation = bf16_impl();
    assert_eq!(b["implementation"], implementation, "{r}");
    assert_eq!(b["emulated"], implementation == "emulated", "{r}");
    assert_eq!(b["kernel"], format!("conv1x1_bf16_8x48__{implementation}"), "{r}");
    // The stem stays f32: every bf16 convolution of S0 is a 1x1.
    let (n, convs) = (b["bf16_convs"].as_u64().unwrap(), b["convs"].as_u64().unwrap());
    assert!(0 < n && n < convs, "{r}");
    assert_eq!(b["runs"], 1);
    assert!(b["ms"].as_f64().unwrap() > 0.0 && b["gflops"].as_f64().unwrap() > 0.0, "{r}");
    assert_eq!(b["pct_peak"].is_null(), implementation == "emulated", "{r}");
    let (rel, rel_f32) = (b["max_rel_diff"].as_f64().unwrap(), r["max_rel_diff"].as_f64().unwrap());
    assert!(rel <= BF16_REL_TOL && rel > rel_f32, "bf16 {rel:e}, fused f32 {rel_f32:e}");
    assert_eq!(b["argmax_equal"], true, "{r}");

    let table = stdout_ok(&repconv_bf16(Some("emulated"), &args), "main job table");
    let row = if implementation == "emulated" { "fused bf16 (emulated)" } else { "fused bf16 " };
    assert!(table.lines().any(|l| l.starts_with(row)), "{table}");
    assert!(table.contains("bf16 agreement with multi-branch f32"), "{table}");

    if !native_bf16() {
        let r = json(None);
        assert!(r["bf16"].is_null(), "{r}");
        let reason = r["bf16_unavailable"].as_str().unwrap();
        assert!(is_bf16_reason(reason), "{reason}");
        // The f32 rows are all there.
        assert!(r["fused_ms"].as_f64().unwrap() > 0.0);
        let table = stdout_ok(&repconv_bf16(None, &args), "main job table");
        let line: Vec<&str> = table.lines().filter(|l| l.contains("bf16")).collect();
        assert_eq!(line, [format!("fused bf16: not run: {reason}")], "{table}");
    }
}

/// `layers --precision bf16`: the 1x1 layer on the bf16 kernel, against the
/// vdpbf16ps peak on the hardware or against no peak on the software model;
/// the depthwise layers on their f32 kernels against the FMA peak. Without
/// the hardware and without `REPCONV_BF16`, a one-line error.
#[test]
fn cli_layers_bf16_rows_say_which_peak() {
    let args = ["layers", "--filter", "48@56", "--runs", "1", "--json", "--precision"];
    let rows = |precision: &str| {
        let out = repconv_bf16(Some("emulated"), &[&args[..], &[precision]].concat());
        json_lines(&stdout_ok(&out, "layers"))
    };
    let implementation = bf16_impl();
    let bf16 = rows("bf16");
    let names: Vec<&str> = bf16.iter().map(|r| r["layer"].as_str().unwrap()).collect();
    assert_eq!(names, ["s0.pw.48x48@56", "s0.dw.48@56", "s0.dw.48@56/2"]);
    for r in &bf16 {
        assert_eq!(r["precision"], "bf16", "{r}");
        assert!(r["gflops"].as_f64().unwrap() > 0.0, "{r}");
        let pct = r["pct_peak"].as_f64();
        if r["k"] == 1 {
            assert_eq!(r["kernel"], format!("conv1x1_bf16_8x48__{implementation}"), "{r}");
            assert_eq!(r["compute"], "bf16", "{r}");
            if implementation == "emulated" {
                assert_eq!((r["peak"].as_str(), pct), (Some("none"), None), "{r}");
                assert!(r["peak_gflops"].is_null(), "{r}");
            } else {
                assert_eq!(r["peak"], "vdpbf16ps", "{r}");
                assert!(pct.unwrap() > 0.0, "{r}");
            }
        } else {
            assert!(!r["kernel"].as_str().unwrap().contains("bf16"), "{r}");
            assert_eq!((r["compute"].as_str(), r["peak"].as_str()), (Some("f32"), Some("fma_f32")));
            assert!(pct.unwrap() > 0.0 && r["peak_gflops"].as_f64().unwrap() > 0.0, "{r}");
        }
    }
    // The same layer in f32: the f32 kernel against the FMA peak.
    let f32_rows = rows("f32");
    let pw = &f32_rows[0];
    assert_eq!((pw["precision"].as_str(), pw["compute"].as_str()), (Some("f32"), Some("f32")));
    assert!(!pw["kernel"].as_str().unwrap().contains("bf16") && pw["peak"] == "fma_f32", "{pw}");

    if !native_bf16() {
        let out = repconv_bf16(None, &[&args[..], &["bf16"]].concat());
        assert_bf16_refused(&out, "layers");
        assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
    }
}

/// `batch --precision bf16`: the row says which precision and implementation
/// ran, against no peak on the software model.
#[test]
fn cli_batch_bf16_row() {
    let args = ["batch", "--batches", "2", "--threads", "1", "--runs", "1", "--size", "32"];
    let out =
        repconv_bf16(Some("emulated"), &[&args[..], &["--json", "--precision", "bf16"]].concat());
    let rows = json_lines(&stdout_ok(&out, "batch"));
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    let implementation = bf16_impl();
    assert_eq!((r["precision"].as_str(), r["bf16"].as_str()), (Some("bf16"), Some(implementation)));
    assert_eq!((r["batch"].as_u64(), r["threads"].as_u64()), (Some(2), Some(1)));
    assert!(r["images_per_s"].as_f64().unwrap() > 0.0, "{r}");
    assert_eq!(r["peak_fraction"].is_null(), implementation == "emulated", "{r}");
    if !native_bf16() {
        assert_bf16_refused(
            &repconv_bf16(None, &[&args[..], &["--precision", "bf16"]].concat()),
            "batch",
        );
    }
}

/// A `--precision` that does not exist is clap's usage error naming the
/// values, for every command that takes one.
#[test]
fn cli_bad_precision_is_a_usage_error() {
    let fused = fixture_path("s0.fused.safetensors");
    for args in [
        vec!["layers", "--precision", "fp16"],
        vec!["batch", "--precision", "BF16x"],
        vec![
            "run",
            "--weights",
            s(&fused),
            "--input",
            s(&fused),
            "--output",
            "/nonexistent/y",
            "--precision",
            "",
        ],
    ] {
        let out = repconv_bf16(Some("emulated"), &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("--precision") && stderr.contains("possible values: f32, bf16"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked") && out.stdout.is_empty(), "{args:?}: {stderr}");
    }
}
