//! Helpers shared by unit tests.

use std::io::Write;
use std::path::PathBuf;

/// Environment variable naming the shared conformance test data directory.
pub const TESTDATA_ENV: &str = "SHARED_TESTDATA";

/// The directory of third-party conformance data (`otlp/`, `promql/`).
///
/// Taken from `SHARED_TESTDATA` when set (and then it must exist), else
/// `../shared/testdata` beside the checkout. When neither exists, the
/// calling test is reported as skipped by name on the terminal (bypassing
/// the test harness's output capture) and `None` is returned.
pub fn conformance_dir(test: &str) -> Option<PathBuf> {
    if let Ok(dir) = std::env::var(TESTDATA_ENV) {
        let p = PathBuf::from(dir);
        assert!(
            p.is_dir(),
            "{TESTDATA_ENV}={} is not a directory",
            p.display()
        );
        return Some(p);
    }
    let beside = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata");
    if beside.is_dir() {
        return Some(beside);
    }
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED conformance test {test}: no shared test data (set {TESTDATA_ENV})"
    );
    None
}
