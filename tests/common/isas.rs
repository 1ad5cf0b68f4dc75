//! What the per-ISA loops ran: every such loop reports its instruction sets
//! here, which prints them (past the test harness's output capture, so they
//! appear in CI logs) and fails the suite when REPCONV_REQUIRE_ISA names one
//! it did not run. `.ci/run` sets REPCONV_REQUIRE_ISA=avx512 on a CPU with
//! AVX-512, so kernels that exist only there cannot go untested silently.

use std::io::Write;

/// The environment variable listing (comma-separated) the ISAs every
/// per-ISA loop must have run.
pub const REQUIRE_ENV: &str = "REPCONV_REQUIRE_ISA";

/// Reports that the per-ISA loop `suite` ran the ISAs `ran` (by name);
/// panics if REPCONV_REQUIRE_ISA names one that is not among them.
pub fn report(suite: &str, ran: &[&str]) {
    let _ = writeln!(std::io::stderr(), "[{suite}] ISAs run: {}", ran.join(", "));
    let required = std::env::var(REQUIRE_ENV).unwrap_or_default();
    for want in required.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        assert!(
            ran.contains(&want),
            "{suite}: {REQUIRE_ENV} requires the {want} kernels, but this run had only [{}]",
            ran.join(", ")
        );
    }
}
