//! The shipped example configuration and the CLI's config handling.

use std::process::Command;

#[test]
fn check_config_prints_the_example_and_rejects_unknown_keys() {
    let bin = env!("CARGO_BIN_EXE_tern");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml");
    let out = Command::new(bin)
        .args([
            "check-config",
            "--config",
            example,
            "--set",
            "wal.sync=never",
        ])
        .env_remove("TERN_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("sync = \"never\""), "{text}");
    assert!(
        text.contains("otlp_grpc_addr = \"127.0.0.1:4317\""),
        "{text}"
    );

    let out = Command::new(bin)
        .args(["check-config"])
        .env("TERN_WAL__SYNK", "never")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("synk"), "{err}");

    let out = Command::new(bin)
        .args([
            "check-config",
            "--data-dir",
            "/tmp/x y",
            "--http-addr",
            "0.0.0.0:9000",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("data_dir = \"/tmp/x y\""), "{text}");
    assert!(text.contains("http_addr = \"0.0.0.0:9000\""), "{text}");
}
