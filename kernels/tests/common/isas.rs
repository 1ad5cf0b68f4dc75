//! What the per-ISA loops ran: every such loop reports its instruction sets
//! here, which prints them (once per suite, past the test harness's output
//! capture, so they appear in CI logs) and fails the suite when
//! REPCONV_REQUIRE_ISA names one it did not run. `.ci/run` sets
//! REPCONV_REQUIRE_ISA=avx512 on a CPU with AVX-512, so kernels that exist
//! only there cannot go untested silently.
//!
//! (A copy of the repository's `tests/common/isas.rs` for the kernels crate's
//! tests: each published crate's tests stay within the crate.)

use std::collections::HashSet;
use std::io::Write;
use std::sync::Mutex;

/// The environment variable listing (comma-separated) the ISAs every
/// per-ISA loop must have run.
pub const REQUIRE_ENV: &str = "REPCONV_REQUIRE_ISA";

/// Reports that the per-ISA loop `suite` ran the ISAs `ran` (by name):
/// [`print`], then [`require`].
pub fn report(suite: &str, ran: &[&str]) {
    print(suite, ran);
    require(suite, ran);
}

/// Prints (the first time for each `suite`) the ISAs the loop `suite` ran.
pub fn print(suite: &str, ran: &[&str]) {
    static PRINTED: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let mut printed = PRINTED.lock().unwrap_or_else(|e| e.into_inner());
    if printed.get_or_insert_with(HashSet::new).insert(suite.to_string()) {
        let _ = writeln!(std::io::stderr(), "[{suite}] ISAs run: {}", ran.join(", "));
    }
}

/// Panics if REPCONV_REQUIRE_ISA names an ISA that is not in `ran`.
pub fn require(suite: &str, ran: &[&str]) {
    let required = std::env::var(REQUIRE_ENV).unwrap_or_default();
    for want in required.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        assert!(
            ran.contains(&want),
            "{suite}: {REQUIRE_ENV} requires the {want} kernels, but this run had only [{}]",
            ran.join(", ")
        );
    }
}
