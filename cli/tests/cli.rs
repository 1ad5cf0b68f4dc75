//! The `repconv` binary run as a process: the checkpoint commands (`reparam`,
//! `run`, `info`) on the golden fixtures of the `repconv` crate
//! (`../tests/fixtures`, made by `tools/make_fixtures.py`), bad input, and
//! `reparam`'s refusal to write a checkpoint whose forms disagree.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use repconv::mobileone::{MobileOne, MobileOneConfig, Variant};
use repconv::weights::{self, LoadOptions, NamedTensor};
use repconv_cli::compare::{max_abs_diff, max_abs_finite};
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
    let (d, m) = (max_abs_diff(got, want), max_abs_finite(want));
    let rel = d / m.max(f64::MIN_POSITIVE);
    eprintln!("{what}: max |diff| {d:.3e}, max |out| {m:.3e}, relative {rel:.3e}");
    assert!(m > 0.0, "{what}: all-zero reference output");
    assert!(d <= abs_tol && d <= rel_tol * m, "{what}: max |diff| {d:.3e} (relative {rel:.3e})");
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
