//! The web UI is built into the binary: the real `tern serve` answers `/`
//! with the built index, its content-hashed assets with the right types and
//! cache headers (gzipped on request), unknown UI paths with the index, and
//! unknown API paths with the API's JSON 404.

use std::path::Path;

use tern::loadgen::bench::{spawn_server, ServerProc};

struct Running(ServerProc);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.child.kill();
        let _ = self.0.child.wait();
    }
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_binary_serves_the_built_ui() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Running(
        spawn_server(Path::new(env!("CARGO_BIN_EXE_tern")), tmp.path(), &[]).expect("tern starts"),
    );
    let base = format!("http://{}", p.0.http);
    // No automatic decompression: the test looks at what is on the wire.
    let client = reqwest::Client::builder().no_gzip().build().unwrap();
    let get = |path: &str| client.get(format!("{base}{path}")).send();

    let r = get("/").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&r, "cache-control"), "no-cache");
    let etag = header(&r, "etag").to_string();
    let index = r.text().await.unwrap();
    if index.contains("SKIP_TERN_UI_BUILD") && std::env::var_os("SKIP_TERN_UI_BUILD").is_some() {
        eprintln!("SKIPPED ui test: built with SKIP_TERN_UI_BUILD, without the UI");
        return;
    }
    assert!(index.contains(r#"<div id="app">"#), "{index}");
    let script = index
        .split('"')
        .find(|s| s.starts_with("/assets/index-") && s.ends_with(".js"))
        .unwrap_or_else(|| panic!("no hashed script in the index: {index}"))
        .to_string();
    let css = index
        .split('"')
        .find(|s| s.starts_with("/assets/index-") && s.ends_with(".css"))
        .expect("a hashed stylesheet");

    // Revalidation of the index by its ETag.
    let r = client
        .get(format!("{base}/"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);

    // The hashed script: JavaScript of the app, cached for good.
    let r = get(&script).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "text/javascript; charset=utf-8");
    assert_eq!(
        header(&r, "cache-control"),
        "public, max-age=31536000, immutable"
    );
    assert_eq!(header(&r, "content-encoding"), "");
    let js = r.bytes().await.unwrap();
    let text = std::str::from_utf8(&js).unwrap();
    for needle in [
        "/api/v1/logs/search",
        "/api/v1/traces",
        "/api/v1/query_range",
    ] {
        assert!(text.contains(needle), "the bundle lacks {needle}");
    }

    // The same, gzipped on request.
    let r = client
        .get(format!("{base}{script}"))
        .header("accept-encoding", "gzip, br")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "content-encoding"), "gzip");
    let gz = r.bytes().await.unwrap();
    assert!(gz.len() < js.len() / 2, "{} vs {}", gz.len(), js.len());
    let mut plain = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut plain).unwrap();
    assert_eq!(plain, js);

    let r = get(css).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "text/css; charset=utf-8");

    // UI routes get the index; the API keeps its JSON 404 and its routes.
    for path in ["/traces/0123abcd", "/logs", "/services/checkout"] {
        let r = get(path).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.text().await.unwrap(), index, "{path}");
    }
    for path in ["/api/v1/nope", "/assets/index-missing.js"] {
        let r = get(path).await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert_eq!(header(&r, "content-type"), "application/json");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "not_found", "{path}");
    }
    let r = client.post(format!("{base}/logs")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(get("/healthz").await.unwrap().text().await.unwrap(), "ok\n");
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(metrics.contains("# TYPE"), "{metrics}");
}
