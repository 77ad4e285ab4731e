//! Builds the web UI (`web/`, TypeScript + Vite) into `web/dist`, which
//! `api::ui` embeds with rust-embed. Runs `npm ci` when `node_modules` is
//! missing or older than `package-lock.json`, then `npm run build`. Cargo
//! reruns this script only when a file of the UI changes, so builds, tests
//! and clippy runs that do not touch `web/` never call npm.
//!
//! `SKIP_TERN_UI_BUILD=1` skips npm and embeds a one-page placeholder that
//! says so (for builds on machines without Node).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets this"));
    let web = root.join("web");
    for p in [
        "src",
        "index.html",
        "package.json",
        "package-lock.json",
        "vite.config.ts",
        "tsconfig.json",
        "public",
    ] {
        // Absolute paths: checkouts at other paths sharing one target
        // directory get the same build-script hash, so a relative path
        // would let this checkout reuse another one's (maybe deleted)
        // `web/dist`.
        println!("cargo:rerun-if-changed={}", web.join(p).display());
    }
    println!("cargo:rerun-if-env-changed=SKIP_TERN_UI_BUILD");

    let skip = std::env::var("SKIP_TERN_UI_BUILD").is_ok_and(|v| !v.is_empty() && v != "0");
    let dir = if skip {
        placeholder()
    } else {
        if let Err(e) = build(&web) {
            eprintln!("error: building the web UI failed: {e}");
            eprintln!(
                "the UI needs Node.js 18+ and npm (Debian: apt-get install nodejs npm); \
                 set SKIP_TERN_UI_BUILD=1 to build without it (the server then shows a placeholder page)"
            );
            std::process::exit(1);
        }
        web.join("dist")
    };
    // Not `TERN_*`: cargo also sets this for `cargo run`/`cargo test`, and
    // `TERN_*` variables are the server's configuration.
    println!("cargo:rustc-env=EMBEDDED_UI_DIR={}", dir.display());
}

fn npm(web: &Path, args: &[&str]) -> Result<(), String> {
    let status = Command::new("npm")
        .args(args)
        .current_dir(web)
        .env("NO_UPDATE_NOTIFIER", "1")
        // Cargo reads the script's stdout for directives; npm talks on stderr.
        .stdout(std::io::stderr())
        .status()
        .map_err(|e| format!("cannot run npm: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`npm {}` failed with {status}", args.join(" ")))
    }
}

fn modified(p: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn build(web: &Path) -> Result<(), String> {
    // npm writes node_modules/.package-lock.json on every install.
    let installed = modified(&web.join("node_modules/.package-lock.json"));
    let lock = modified(&web.join("package-lock.json"));
    if installed.is_none() || lock > installed {
        npm(web, &["ci", "--no-audit", "--no-fund", "--loglevel=error"])?;
    }
    npm(web, &["run", "build", "--silent"])?;
    if !web.join("dist/index.html").is_file() {
        return Err("the build wrote no web/dist/index.html".into());
    }
    Ok(())
}

fn placeholder() -> PathBuf {
    let dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets this")).join("ui");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create OUT_DIR/ui");
    std::fs::write(
        dir.join("index.html"),
        "<!doctype html><meta charset=utf-8><title>tern</title>\
         <p>This tern binary was built with SKIP_TERN_UI_BUILD=1, without the web UI. \
         The HTTP API is under <a href=\"/api/v1/status\">/api/v1/status</a>.</p>\n",
    )
    .expect("write the placeholder page");
    dir
}
