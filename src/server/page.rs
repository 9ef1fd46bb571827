//! The buyer page, embedded in the binary: `GET /` (the activities on sale, each a link),
//! `GET /sale/{id}` (one activity's page) and `GET /assets/{file}` (its script and style
//! sheet). Plain HTML, CSS and JavaScript from `src/server/page/`, no build step and nothing
//! loaded from elsewhere, so the Content-Security-Policy can allow this origin alone and no
//! inline script.
//!
//! What the page does (server-clock countdown, one request per click, token at the opening,
//! polling `GET /api/v1/activities/{id}/result`) is described in `page/sale.js`.

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::state::AppState;
use crate::config::AuthMode;

const SALE_HTML: &str = include_str!("page/sale.html");
const HOME_HTML: &str = include_str!("page/home.html");
const SALE_JS: &str = include_str!("page/sale.js");
const SALE_CSS: &str = include_str!("page/sale.css");

/// The page's Content-Security-Policy: everything from this origin only, no inline script or
/// style, no framing (clickjacking a buy button), no plugins, no form posts elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// An asset with its strong validator, computed once.
struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: String,
}

impl Asset {
    fn new(body: &'static str, content_type: &'static str) -> Asset {
        let digest = Sha256::digest(body.as_bytes());
        let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        Asset {
            body,
            content_type,
            etag: format!("\"{hex}\""),
        }
    }
}

static ASSETS: LazyLock<HashMap<&'static str, Asset>> = LazyLock::new(|| {
    HashMap::from([
        ("sale.js", Asset::new(SALE_JS, "text/javascript; charset=utf-8")),
        ("sale.css", Asset::new(SALE_CSS, "text/css; charset=utf-8")),
    ])
});

/// The headers every page answer carries. `no-cache` (revalidate every time) keeps a page
/// that a new release changed from being run against an API it no longer matches.
fn with_page_headers(mut response: Response, content_type: &'static str) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn html(status: StatusCode, body: String) -> Response {
    with_page_headers((status, body).into_response(), "text/html; charset=utf-8")
}

/// `GET /assets/{file}`: `sale.js` or `sale.css`, revalidated by ETag (304 when unchanged).
pub async fn asset(path: Result<Path<String>, PathRejection>, headers: HeaderMap) -> Response {
    let Ok(Path(name)) = path else {
        return ApiError::not_found("no such asset").into_response();
    };
    let Some(asset) = ASSETS.get(name.as_str()) else {
        return ApiError::not_found(format!("no asset {name:?}")).into_response();
    };
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == asset.etag));
    let response = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        asset.body.into_response()
    };
    let mut response = with_page_headers(response, asset.content_type);
    if let Ok(etag) = HeaderValue::from_str(&asset.etag) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

/// `GET /sale/{id}`: the buyer page of a preheated activity (404 otherwise). The page reads
/// everything else from the JSON API; the server only fills in the activity and how buyers
/// are identified.
pub async fn sale(State(state): State<AppState>, path: Result<Path<String>, PathRejection>) -> Response {
    let raw = match path {
        Ok(Path(raw)) => raw,
        Err(e) => return ApiError::bad_request(e.body_text()).into_response(),
    };
    let Ok(id) = raw.parse::<u64>() else {
        return ApiError::not_found(format!("no activity {raw:?}")).into_response();
    };
    let mut conn = state.redis.conn();
    let exists: Result<bool, _> = redis::cmd("EXISTS")
        .arg(state.redis.keys().activity(id))
        .query_async(&mut conn)
        .await;
    match exists {
        Ok(true) => {}
        Ok(false) => return ApiError::not_found(format!("activity {id} is not on sale")).into_response(),
        Err(e) => {
            tracing::warn!(activity = id, error = %e, "sale page: redis failed");
            return ApiError::redis_unavailable().into_response();
        }
    }
    let auth = match state.config.auth.mode {
        AuthMode::None => "none",
        AuthMode::Jwt => "jwt",
        AuthMode::Gateway => "gateway",
    };
    let body = SALE_HTML
        .replace("{{ACTIVITY_ID}}", &id.to_string())
        .replace("{{AUTH_MODE}}", auth);
    html(StatusCode::OK, body)
}

/// An activity listed on the home page.
struct Listed {
    id: u64,
    name: String,
    status: String,
    start_ms: i64,
    end_ms: i64,
}

/// `GET /`: the preheated activities that have not ended, soonest first, each a link to its
/// page.
pub async fn home(State(state): State<AppState>) -> Response {
    match listed(&state).await {
        Ok((activities, now_ms)) => html(StatusCode::OK, render_home(&activities, now_ms)),
        Err(e) => {
            tracing::warn!(error = %e, "home page: redis failed");
            ApiError::redis_unavailable().into_response()
        }
    }
}

async fn listed(state: &AppState) -> Result<(Vec<Listed>, i64), redis::RedisError> {
    let keys = state.redis.keys();
    let mut conn = state.redis.conn();
    let (ids, (secs, micros)): (Vec<u64>, (i64, i64)) = redis::pipe()
        .smembers(keys.activities())
        .cmd("TIME")
        .query_async(&mut conn)
        .await?;
    let now_ms = secs * 1000 + micros / 1000;
    let mut pipe = redis::pipe();
    for id in &ids {
        pipe.hmget(keys.activity(*id), &["name", "status", "start_ms", "end_ms"]);
    }
    type Row = (Option<String>, Option<String>, Option<i64>, Option<i64>);
    let rows: Vec<Row> = pipe.query_async(&mut conn).await?;
    let mut activities: Vec<Listed> = ids
        .into_iter()
        .zip(rows)
        .filter_map(|(id, (name, status, start_ms, end_ms))| {
            Some(Listed {
                id,
                name: name?,
                status: status.unwrap_or_default(),
                start_ms: start_ms.unwrap_or(0),
                end_ms: end_ms.unwrap_or(0),
            })
        })
        .filter(|a| a.status != "ended" && a.end_ms > now_ms)
        .collect();
    activities.sort_by_key(|a| (a.start_ms, a.id));
    Ok((activities, now_ms))
}

fn render_home(activities: &[Listed], now_ms: i64) -> String {
    let items: String = if activities.is_empty() {
        "<li>Nothing is on sale right now.</li>".to_string()
    } else {
        activities
            .iter()
            .map(|a| {
                let when = if a.start_ms > now_ms {
                    format!("opens in {}", plain_duration((a.start_ms - now_ms + 999) / 1000))
                } else if a.status == "online" {
                    "on sale now".to_string()
                } else {
                    escape(&a.status)
                };
                format!(
                    "<li><a href=\"/sale/{id}\">{name}</a> <span class=\"when\">{when}</span></li>",
                    id = a.id,
                    name = escape(&a.name),
                )
            })
            .collect()
    };
    HOME_HTML.replace("{{ACTIVITIES}}", &items)
}

/// `secs` as people say it: `3 s`, `4 min 5 s`, `2 h 10 min`.
fn plain_duration(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min {} s", s / 60, s % 60),
        s => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

/// `text` safe inside HTML text and double-quoted attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_and_times_said_plainly() {
        let listed = [Listed {
            id: 7,
            name: "<script>alert('x')</script> & co".into(),
            status: "draft".into(),
            start_ms: 65_000,
            end_ms: 100_000,
        }];
        let page = render_home(&listed, 0);
        assert!(
            page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; co"),
            "{page}"
        );
        assert!(!page.contains("<script>alert"));
        assert!(page.contains("href=\"/sale/7\""));
        assert!(page.contains("opens in 1 min 5 s"));
        assert!(render_home(&[], 0).contains("Nothing is on sale"));
    }

    #[test]
    fn the_page_has_no_inline_script_and_loads_only_its_own_assets() {
        for page in [SALE_HTML, HOME_HTML] {
            for tag in page.split("<script").skip(1) {
                let head = &tag[..tag.find('>').unwrap()];
                assert!(
                    head.contains("src=\"/assets/"),
                    "inline or foreign script: <script{head}>"
                );
            }
            assert!(!page.contains("style=\""), "inline style");
            assert!(!page.contains("http://") && !page.contains("https://"), "foreign URL");
        }
        assert!(SALE_JS.contains("/api/v1/time"));
    }
}
