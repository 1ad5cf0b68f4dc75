//! Time limits for tests whose failure mode is a hang: a closure on a
//! thread of its own, a command, or one test of the current test binary
//! run again in a child process with environment variables set before
//! anything in it reads them (the library reads REPCONV_ISA once per
//! process). Each fails the test, instead of hanging it, when time is up.
//!
//! A child test is `#[ignore]`d, so a plain `cargo test` runs it only
//! through its parent; it checks that its variables are set
//! ([`expect_env`]), so running it by hand without them fails instead of
//! testing nothing.

use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Runs `f` on a thread of its own and returns its result; panics if `f`
/// has not returned after `secs` seconds (the thread is left behind) or if
/// it panicked.
pub fn within<T: Send + 'static>(
    secs: u64,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => v,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: still running after {secs} s (hung)")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: panicked"),
    }
}

/// Runs `cmd` (stdin closed; stdout and stderr together into the returned
/// text); kills it and panics if it has not ended after `secs` seconds.
pub fn run_within(cmd: &mut Command, secs: u64, what: &str) -> (ExitStatus, String) {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let log = std::env::temp_dir().join(format!(
        "repconv-watchdog-{}-{}.log",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let file = std::fs::File::create(&log).expect("a log file for the command");
    cmd.stdin(Stdio::null()).stdout(file.try_clone().expect("the log file, again")).stderr(file);
    let mut child = cmd.spawn().expect("the command starts");
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(status) = child.try_wait().expect("the command's status") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    match status {
        Some(status) => (status, output),
        None => panic!("{what}: still running after {secs} s (killed)\n{output}"),
    }
}

/// Runs the test `name` of this binary in a child process with `env` added
/// to the environment; panics if it fails or has not ended after `secs`
/// seconds. Returns its output.
pub fn run_child(name: &str, env: &[(&str, &str)], secs: u64) -> String {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", name, "--ignored", "--nocapture", "--test-threads=1"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let what = format!("{name} with {env:?}");
    let (status, output) = run_within(&mut cmd, secs, &what);
    assert!(status.success(), "{what} failed ({status}):\n{output}");
    assert!(output.contains("1 passed"), "{what} did not run in the child:\n{output}");
    output
}

/// In a child test: fails unless `var` is `value`, i.e. unless the test runs
/// through [`run_child`].
pub fn expect_env(var: &str, value: &str) {
    assert_eq!(
        std::env::var(var).ok().as_deref(),
        Some(value),
        "this test runs in a child process with {var}={value}, started by its parent test"
    );
}

/// Makes a FIFO (named pipe) at `path` with the system's `mkfifo`.
#[cfg(unix)]
pub fn mkfifo(path: &std::path::Path) {
    let status = Command::new("mkfifo").arg(path).status().expect("mkfifo runs");
    assert!(status.success(), "mkfifo {} failed", path.display());
}
