//! The `repconv` binary given a FIFO where it expects a file: an error
//! saying it is not a regular file, at once (reading a FIFO that has no
//! writer the ordinary way waits for one forever).

#![cfg(unix)]

#[path = "../../tests/common/watchdog.rs"]
#[allow(dead_code)]
mod watchdog;

use std::path::Path;
use std::process::Command;

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name);
    path.to_str().unwrap().to_string()
}

#[test]
fn a_fifo_for_weights_or_input_is_an_error_not_a_hang() {
    let dir = std::env::temp_dir().join(format!("repconv-cli-fifo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("pipe.safetensors");
    watchdog::mkfifo(&fifo);
    let fifo = fifo.to_str().unwrap();
    let out = dir.join("out.safetensors");
    let (weights, input) = (fixture("s0.fused.safetensors"), fixture("s0.io.safetensors"));
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("info --weights FIFO", vec!["info", "--weights", fifo]),
        (
            "run --weights FIFO",
            vec!["run", "--weights", fifo, "--input", &input, "--output", out.to_str().unwrap()],
        ),
        (
            "run --input FIFO",
            vec!["run", "--weights", &weights, "--input", fifo, "--output", out.to_str().unwrap()],
        ),
        (
            "reparam --weights FIFO",
            vec!["reparam", "--weights", fifo, "--out", out.to_str().unwrap()],
        ),
    ];
    for (what, args) in cases {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_repconv"));
        cmd.args(&args);
        let (status, output) = watchdog::run_within(&mut cmd, 60, what);
        assert!(!status.success(), "{what}: succeeded\n{output}");
        assert!(output.contains("not a regular file"), "{what}:\n{output}");
        assert!(output.contains("pipe.safetensors"), "{what}:\n{output}");
    }
    assert!(!out.exists(), "no output was written");
    std::fs::remove_dir_all(&dir).unwrap();
}
