//! Static pages and the page module: `{{sri:/path}}` placeholders in HTML are replaced with the
//! Subresource Integrity hash of that file, computed once at start, and every response carries a
//! strict Content-Security-Policy (the page module runs only if its bytes are the ones signed here).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha384};

use crate::state::AppState;

pub const CSP: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

#[derive(Debug)]
pub struct Assets {
    root: PathBuf,
    /// Rendered HTML pages by request path.
    pages: HashMap<String, String>,
}

impl Assets {
    /// Render every `.html` under `root`. A missing page module is reported, not fatal: pages then
    /// show that the module is missing.
    pub fn load(root: &Path) -> Assets {
        let mut pages = HashMap::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "html") {
                    if let (Ok(text), Ok(rel)) = (std::fs::read_to_string(&path), path.strip_prefix(root)) {
                        let key = format!("/{}", rel.to_string_lossy().replace('\\', "/"));
                        pages.insert(key, render_sri(&text, root));
                    }
                }
            }
        }
        if !root.join("pkg/cardbridge_web_bg.wasm").exists() {
            tracing::warn!(root = %root.display(), "the page module is not built (run `cargo xtask demo` or `cargo xtask wasm`)");
        }
        Assets { root: root.to_path_buf(), pages }
    }
}

fn render_sri(text: &str, root: &Path) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{sri:") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 6..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let path = after[..end].trim_start_matches('/');
        match std::fs::read(root.join(path)) {
            Ok(bytes) => {
                out.push_str("sha384-");
                out.push_str(&base64::engine::general_purpose::STANDARD.encode(Sha384::digest(&bytes)));
            }
            // An integrity value that matches nothing: the browser refuses the file, loudly.
            Err(_) => out.push_str("sha384-missing"),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "wasm" => "application/wasm",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "json" => "application/json",
        "md" | "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Serve `www/`: rendered pages from memory, other files from disk.
pub async fn serve(State(state): State<AppState>, uri: Uri) -> Response {
    let mut path = uri.path().to_string();
    if path.ends_with('/') {
        path.push_str("index.html");
    }
    if let Some(html) = state.assets.pages.get(&path) {
        return ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], html.clone())
            .into_response();
    }
    if path.split('/').any(|seg| seg == ".." || seg.starts_with('.')) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let file = state.assets.root.join(path.trim_start_matches('/'));
    match tokio::fs::read(&file).await {
        Ok(bytes) => {
            let mut response = Response::new(Body::from(bytes));
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(&path)));
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sri_placeholders_become_hashes() {
        let dir = std::env::temp_dir().join(format!("cb-sri-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("js")).unwrap();
        std::fs::write(dir.join("js/a.js"), b"alert(1)").unwrap();
        let html = render_sri(r#"<script src="/js/a.js" integrity="{{sri:/js/a.js}}"></script>{{sri:/none}}"#, &dir);
        let expected = base64::engine::general_purpose::STANDARD.encode(Sha384::digest(b"alert(1)"));
        assert!(html.contains(&format!("integrity=\"sha384-{expected}\"")));
        assert!(html.ends_with("sha384-missing"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
