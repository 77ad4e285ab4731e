//! The embedded web dashboard: the files that `build.rs` built from `web/`
//! (Vite's `dist/`), compiled into the binary with rust-embed and served by
//! the API router's fallback.
//!
//! - `/assets/*` are content-hashed: `Cache-Control: immutable` for a year.
//! - Every other GET/HEAD path that is not an API path answers `index.html`
//!   (`no-cache`, revalidated by ETag): the UI routes in the browser.
//! - `/api/...` and unknown assets keep the API's JSON 404.
//! - Text assets are gzipped once, off the async workers, and cached.
//!
//! This module owns the static files only; it must not call stores or
//! queries (the UI reads the same HTTP API as any other client).

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write;
use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use parking_lot::Mutex;
use rust_embed::RustEmbed;

use super::error::{ApiError, ErrorKind};

#[derive(RustEmbed)]
#[folder = "$EMBEDDED_UI_DIR"]
struct Assets;

const INDEX: &str = "index.html";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const NO_CACHE: &str = "no-cache";
/// Smaller files are not worth compressing.
const GZIP_MIN_BYTES: usize = 1024;

/// Whether `path` belongs to the API (or the server's own endpoints), where
/// an unknown route must stay a JSON 404 rather than become the UI.
fn is_api_path(path: &str) -> bool {
    path == "/api"
        || path.starts_with("/api/")
        || path.starts_with("/v1/")
        || matches!(path, "/metrics" | "/healthz" | "/readyz")
}

fn not_found() -> Response {
    ApiError::new(ErrorKind::NotFound, "not_found", "no such route").into_response()
}

/// The API router's fallback: UI files, the SPA's index, or the JSON 404.
pub async fn fallback(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path();
    if (method != Method::GET && method != Method::HEAD) || is_api_path(path) {
        return not_found();
    }
    let name = path.trim_start_matches('/');
    let name = if name.is_empty() { INDEX } else { name };
    match Assets::get(name) {
        Some(file) => serve(name, file, &headers).await,
        // A missing hashed asset is an error, not a page of the UI.
        None if name.starts_with("assets/") => not_found(),
        None => match Assets::get(INDEX) {
            Some(file) => serve(INDEX, file, &headers).await,
            None => not_found(),
        },
    }
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map_or("", |(_, ext)| ext) {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn compressible(ct: &str) -> bool {
    ct.starts_with("text/") || ct == "application/json" || ct == "image/svg+xml"
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| {
            let mut parts = e.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    == Some(0.0)
            });
            (name == "gzip" || name == "*") && !refused
        })
}

/// Gzipped copies of the embedded files, made on first request.
fn gzip_cache() -> &'static Mutex<HashMap<String, Bytes>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Bytes>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

async fn gzipped(name: &str, data: Bytes) -> Option<Bytes> {
    if let Some(b) = gzip_cache().lock().get(name) {
        return Some(b.clone());
    }
    let gz = tokio::task::spawn_blocking(move || {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&data).ok()?;
        enc.finish().ok()
    })
    .await
    .ok()??;
    let gz = Bytes::from(gz);
    gzip_cache().lock().insert(name.to_string(), gz.clone());
    Some(gz)
}

async fn serve(name: &str, file: rust_embed::EmbeddedFile, headers: &HeaderMap) -> Response {
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..16]));
    let ct = content_type(name);
    let cache = if name.starts_with("assets/") {
        IMMUTABLE
    } else {
        NO_CACHE
    };
    let mut builder = Response::builder()
        .header(header::CACHE_CONTROL, cache)
        .header(header::ETAG, &etag);
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if matches {
        return builder
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .unwrap_or_else(|_| StatusCode::NOT_MODIFIED.into_response());
    }
    builder = builder.header(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    let data = match file.data {
        Cow::Borrowed(b) => Bytes::from_static(b),
        Cow::Owned(v) => Bytes::from(v),
    };
    let mut body = data.clone();
    if compressible(ct) && data.len() >= GZIP_MIN_BYTES {
        builder = builder.header(header::VARY, "accept-encoding");
        if accepts_gzip(headers) {
            if let Some(gz) = gzipped(name, data).await {
                builder = builder.header(header::CONTENT_ENCODING, "gzip");
                body = gz;
            }
        }
    }
    builder
        .body(Body::from(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        m
    }

    #[test]
    fn gzip_negotiation() {
        assert!(accepts_gzip(&h("gzip, deflate, br")));
        assert!(accepts_gzip(&h("br;q=1.0, gzip;q=0.8")));
        assert!(!accepts_gzip(&h("gzip;q=0")));
        assert!(!accepts_gzip(&h("br")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn api_paths_are_not_the_ui() {
        assert!(is_api_path("/api/v1/nope"));
        assert!(is_api_path("/api"));
        assert!(is_api_path("/metrics"));
        assert!(!is_api_path("/apis"));
        assert!(!is_api_path("/traces/abc"));
        assert!(!is_api_path("/"));
    }

    #[test]
    fn content_types() {
        assert_eq!(
            content_type("assets/index-x.js"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("favicon.svg"), "image/svg+xml");
        assert_eq!(content_type("x"), "application/octet-stream");
    }

    #[test]
    fn index_is_embedded() {
        let index = Assets::get(INDEX).expect("index.html is embedded");
        assert!(std::str::from_utf8(&index.data)
            .unwrap()
            .contains("<title>tern</title>"));
    }
}
