//! The web dashboard: one page and its script and style, compiled into the binary so it works
//! offline. It reads only the REST API; every route here answers the same page, which draws
//! the view its URL names.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const PAGE: &str = include_str!("../web/index.html");
const SCRIPT: &str = include_str!("../web/app.js");
const STYLE: &str = include_str!("../web/app.css");

/// Scripts and styles only from this server; SVG charts are drawn inline and exported as data.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data: blob:; \
     style-src 'self' 'unsafe-inline'; frame-src 'self'; object-src 'none'; base-uri 'none'";

/// The one page; its script draws what the URL names.
pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        ],
        PAGE,
    )
}

/// The dashboard's routes: the experiments list, one experiment, the fleet, bisections, and
/// the assets.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(page))
        .route("/experiments/{id}", get(page))
        .route("/fleet", get(page))
        .route("/bisections", get(page))
        .route("/bisections/{id}", get(page))
        .route(
            "/assets/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/assets/app.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}

/// Revalidated on every load, so a new binary's assets are never mixed with an old page.
fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}
