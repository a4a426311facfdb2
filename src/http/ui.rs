//! The Supply Chain web view: server-rendered HTML over the same store reads and filters as the
//! API, readable by the same tokens (sent as a cookie by browsers). Pages need no JavaScript;
//! every value reaches the page through an auto-escaping template.

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::auth::Reader;
use super::executions::{self, ListParams, readable_execution};
use super::views::{ExecutionSummaryView, ExecutionView};
use crate::app::AppState;
use crate::error::ApiError;
use crate::store::{AttestationState, PushState};

mod charts;
mod pretty;
mod session;
mod templates;

use session::SameOrigin;
pub use session::{log_in, log_out, show_login_page};

/// The reader of a page; without a valid token the browser is sent to the login form.
pub struct PageReader(pub Reader);

impl FromRequestParts<AppState> for PageReader {
    type Rejection = Redirect;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Redirect> {
        Reader::from_request_parts(parts, state)
            .await
            .map(Self)
            .map_err(|_| Redirect::to("/ui/login"))
    }
}

/// An [`ApiError`] rendered as an HTML page with the same status, code and message as the JSON.
#[derive(Debug)]
pub struct HtmlError(pub ApiError);

impl From<ApiError> for HtmlError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl From<crate::store::StoreError> for HtmlError {
    fn from(e: crate::store::StoreError) -> Self {
        Self(e.into())
    }
}

impl IntoResponse for HtmlError {
    fn into_response(self) -> Response {
        let e = self.0;
        e.log_if_internal();
        let status = e.status();
        let ctx = context! {
            status => status.as_u16(),
            title => status.canonical_reason().unwrap_or("Error"),
            code => e.code(),
            message => e.to_string(),
        };
        match templates::render("error.html", ctx) {
            Ok(body) => html(status, body),
            // Rendering the error page itself failed (logged there): plain text, same code.
            Err(render) => {
                render.log_if_internal();
                (status, format!("{}: {e}", e.code())).into_response()
            }
        }
    }
}

/// A rendered page with the headers every page carries: no caching of account data, and a
/// content security policy that allows no script at all.
fn html(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// Render `template` into a page, or the error page if rendering fails.
fn page(status: StatusCode, template: &str, ctx: minijinja::Value) -> Response {
    match templates::render(template, ctx) {
        Ok(body) => html(status, body),
        Err(e) => HtmlError(e).into_response(),
    }
}

pub async fn redirect_to_executions() -> Redirect {
    Redirect::to("/ui/executions")
}

pub async fn get_stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        templates::STYLESHEET,
    )
        .into_response()
}

/// The filter form's values, as typed (empty when not set).
#[derive(Debug, Default, Serialize)]
struct FilterForm {
    account: String,
    pipeline: String,
    repository: String,
    branch: String,
    commit: String,
    status: String,
    attestation: String,
    started_after: String,
    started_before: String,
}

impl FilterForm {
    fn new(p: &ListParams) -> Self {
        let v = |f: &Option<String>| f.clone().unwrap_or_default();
        Self {
            account: v(&p.account),
            pipeline: v(&p.pipeline),
            repository: v(&p.repository),
            branch: v(&p.branch),
            commit: v(&p.commit),
            status: v(&p.status),
            attestation: v(&p.attestation),
            started_after: v(&p.started_after),
            started_before: v(&p.started_before),
        }
    }
}

/// An empty form field means "no filter", not "equals the empty string".
fn without_empty_fields(p: ListParams) -> ListParams {
    let given = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    ListParams {
        account: given(p.account),
        pipeline: given(p.pipeline),
        repository: given(p.repository),
        branch: given(p.branch),
        commit: given(p.commit),
        status: given(p.status),
        attestation: given(p.attestation),
        started_after: given(p.started_after),
        started_before: given(p.started_before),
        finished_after: given(p.finished_after),
        finished_before: given(p.finished_before),
        order: given(p.order),
        limit: p.limit,
        cursor: given(p.cursor),
        // The page shows its own columns, whatever view is asked for.
        view: None,
    }
}

/// What a `datetime-local` input sends (`2026-11-25T10:00`, no zone) read as UTC; anything
/// else is passed on for the API's RFC 3339 check.
fn as_rfc3339(v: Option<String>) -> Option<String> {
    v.map(|s| match s.len() {
        16 if s.as_bytes().get(10) == Some(&b'T') => format!("{s}:00Z"),
        19 if s.as_bytes().get(10) == Some(&b'T') => format!("{s}Z"),
        _ => s,
    })
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The query string of the same listing continued after `cursor`.
fn next_page_query(p: &ListParams, cursor: &str) -> String {
    let limit = p.limit.map(|l| l.to_string());
    let cursor = Some(cursor.to_owned());
    [
        ("account", &p.account),
        ("pipeline", &p.pipeline),
        ("repository", &p.repository),
        ("branch", &p.branch),
        ("commit", &p.commit),
        ("status", &p.status),
        ("attestation", &p.attestation),
        ("startedAfter", &p.started_after),
        ("startedBefore", &p.started_before),
        ("finishedAfter", &p.finished_after),
        ("finishedBefore", &p.finished_before),
        ("order", &p.order),
        ("limit", &limit),
        ("cursor", &cursor),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_deref().map(|v| format!("{k}={}", percent_encode(v))))
    .collect::<Vec<_>>()
    .join("&")
}

pub async fn list_executions_page(
    State(state): State<AppState>,
    PageReader(reader): PageReader,
    query: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, HtmlError> {
    let Query(raw) = query.map_err(|e| ApiError::BadRequest("invalid_query", e.body_text()))?;
    let params = without_empty_fields(raw);
    let form = FilterForm::new(&params);
    let admin = reader.sees_all_accounts();
    let mut typed = params.clone();
    typed.started_after = as_rfc3339(typed.started_after);
    typed.started_before = as_rfc3339(typed.started_before);
    let filter = typed.to_filter(&reader);
    let filter = match filter {
        Ok(f) => f,
        // A bad filter is shown above the form that produced it, not on a bare error page.
        Err(e) => {
            return Ok(page(
                e.status(),
                "executions.html",
                context! {
                    signed_in => true, admin, form,
                    error => context! { code => e.code(), message => e.to_string() },
                    items => Vec::<ExecutionSummaryView>::new(),
                },
            ));
        }
    };
    // The table shows no artifacts: the page reads the executions alone (the basic view).
    let executions = state.store.list_execution_summaries(&filter).await?;
    let next_query = (executions.len() == filter.limit as usize)
        .then(|| executions.last())
        .flatten()
        .map(|last| next_page_query(&params, &last.id.to_string()));
    let items: Vec<ExecutionSummaryView> = executions
        .into_iter()
        .map(|e| ExecutionSummaryView::new(e, &state.public_url))
        .collect();
    Ok(page(
        StatusCode::OK,
        "executions.html",
        context! { signed_in => true, admin, form, items, next_query, continued => params.cursor.is_some() },
    ))
}
#[derive(Debug, Default, Deserialize)]
pub struct ShowParams {
    /// Set by the retry form's redirect: how many deliveries were re-queued.
    retried: Option<u64>,
    /// Set by the verify form's redirect: how many images were verified.
    verified: Option<u64>,
}

pub async fn show_execution_page(
    State(state): State<AppState>,
    PageReader(reader): PageReader,
    Path(execution_id): Path<String>,
    Query(params): Query<ShowParams>,
) -> Result<Response, HtmlError> {
    let e = readable_execution(&state, &reader, &execution_id).await?;
    let provenance = state.store.statement(e.id).await?.map(|bytes| {
        pretty::pretty_json(&bytes).unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned())
    });
    let signed = state.store.envelope(e.id).await?.is_some();
    let can_retry = reader.may_act()
        && (e.attestation == AttestationState::Failed
            || e.artifacts
                .iter()
                .any(|a| matches!(a.push_state, PushState::Dead | PushState::Retrying)));
    let verifications = state.store.verifications(e.id).await?;
    let can_verify = reader.may_act()
        && signed
        && e.key_id.is_some()
        && e.artifacts
            .iter()
            .any(|a| a.push_state == PushState::Pushed);
    Ok(page(
        StatusCode::OK,
        "execution.html",
        context! {
            signed_in => true,
            admin => reader.sees_all_accounts(),
            may_act => reader.may_act(),
            e => ExecutionView::new(e, &state.public_url),
            provenance,
            signed,
            can_retry,
            retried => params.retried,
            verifications,
            can_verify,
            verified => params.verified,
        },
    ))
}

pub async fn retry_execution_page(
    State(state): State<AppState>,
    _: SameOrigin,
    PageReader(reader): PageReader,
    Path(execution_id): Path<String>,
) -> Result<Redirect, HtmlError> {
    reader.require_token()?;
    let e = readable_execution(&state, &reader, &execution_id).await?;
    let requeued = state.store.retry_execution(e.id).await?;
    if requeued > 0 {
        tracing::info!(execution.id = %e.id, jobs = requeued, "deliveries re-driven from the web view");
        state.notify_worker();
    }
    Ok(Redirect::to(&format!(
        "/ui/executions/{}?retried={requeued}",
        e.id
    )))
}

/// Verify every pushed image of the execution in its registry with the key that signed it,
/// record the results, and show them.
pub async fn verify_execution_page(
    State(state): State<AppState>,
    _: SameOrigin,
    PageReader(reader): PageReader,
    Path(execution_id): Path<String>,
) -> Result<Redirect, HtmlError> {
    reader.require_token()?;
    let e = readable_execution(&state, &reader, &execution_id).await?;
    let key_id = e.key_id.clone().ok_or_else(|| {
        ApiError::BadRequest(
            "not_signed",
            format!("execution {} has not been signed yet", e.id),
        )
    })?;
    let keys = crate::http::verify::trusted_keys(&state, None, Some(&key_id)).await?;
    let mut verified = 0u64;
    for a in e
        .artifacts
        .iter()
        .filter(|a| a.push_state == PushState::Pushed)
    {
        let target = crate::verification::ImageToVerify {
            image: crate::domain::ImageRef {
                registry: a.registry.clone(),
                repository: a.repository.clone(),
                tag: None,
            },
            digest: a.digest.clone(),
        };
        crate::http::verify::run_verification(&state, &reader, &target, &keys, &[], Some(&e))
            .await?;
        verified += 1;
    }
    Ok(Redirect::to(&format!(
        "/ui/executions/{}?verified={verified}",
        e.id
    )))
}

#[derive(Debug, Default, Deserialize)]
pub struct DashboardParams {
    /// The window: the last `days` UTC days, today included (7, 14, 30 or 90).
    days: Option<u32>,
}

/// The windows the dashboard offers.
const DASHBOARD_WINDOWS: &[u32] = &[7, 14, 30, 90];

/// `/ui/dashboard`: executions per day by attestation state, time-to-attest percentiles per
/// day, the current backlog and failures by reason — SVG drawn on the server, the numbers in
/// tables beside them and in `GET /v1/stats` (linked) for the same window.
pub async fn dashboard_page(
    State(state): State<AppState>,
    PageReader(reader): PageReader,
    query: Result<Query<DashboardParams>, QueryRejection>,
) -> Result<Response, HtmlError> {
    let Query(params) = query.map_err(|e| ApiError::BadRequest("invalid_query", e.body_text()))?;
    let days = params.days.unwrap_or(14);
    if !DASHBOARD_WINDOWS.contains(&days) {
        return Err(ApiError::BadRequest(
            "invalid_query",
            format!("`days` must be one of {DASHBOARD_WINDOWS:?}"),
        )
        .into());
    }
    let now = time::OffsetDateTime::now_utc();
    let first = now.date() - time::Duration::days(i64::from(days) - 1);
    let from = first.midnight().assume_utc();
    let account = executions::scoped_account(&reader, None)?;
    let stats = state.store.stats(account.as_ref(), from, now).await?;
    let day_count = days as usize;
    let per_day = charts::executions_per_day(&stats, first, day_count);
    let latency = charts::time_to_attest(&stats, first, day_count);
    let backlog_rows: Vec<(String, i64)> = stats
        .backlog
        .iter()
        .map(|b| (format!("{} {}", b.kind, b.state), b.count))
        .collect();
    let failure_rows: Vec<(String, i64)> = stats
        .failures
        .iter()
        .map(|f| (f.reason.clone(), f.count))
        .collect();
    let rfc3339 = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    let stats_url = format!(
        "/v1/stats?from={}&to={}",
        percent_encode(&rfc3339(from)),
        percent_encode(&rfc3339(now))
    );
    Ok(page(
        StatusCode::OK,
        "dashboard.html",
        context! {
            signed_in => true,
            admin => reader.sees_all_accounts(),
            days,
            windows => DASHBOARD_WINDOWS,
            states => charts::STATES.iter().map(|(s, l)| context! { state => s, label => l }).collect::<Vec<_>>(),
            per_day,
            latency,
            backlog => charts::rows(&backlog_rows, "backlog"),
            failures => charts::rows(&failure_rows, "failure"),
            stats => minijinja::Value::from_serialize(&stats),
            stats_url,
        },
    ))
}

/// The stored statement, exactly as the API serves it; errors as HTML.
pub async fn download_provenance(
    state: State<AppState>,
    PageReader(reader): PageReader,
    id: Path<String>,
) -> Result<Response, HtmlError> {
    Ok(executions::get_provenance(state, reader, id).await?)
}

/// The stored DSSE envelope, exactly as the API serves it; errors as HTML.
pub async fn download_attestation(
    state: State<AppState>,
    PageReader(reader): PageReader,
    id: Path<String>,
) -> Result<Response, HtmlError> {
    Ok(executions::get_attestation(state, reader, id).await?)
}

#[cfg(test)]
mod tests {
    use super::{ListParams, as_rfc3339, next_page_query};

    #[test]
    fn next_page_keeps_the_filters_and_encodes_them() {
        let p = ListParams {
            branch: Some("feature/a b&c=d".into()),
            status: Some("failed".into()),
            limit: Some(20),
            cursor: Some("old".into()),
            ..Default::default()
        };
        assert_eq!(
            next_page_query(&p, "0193-ab"),
            "branch=feature%2Fa%20b%26c%3Dd&status=failed&limit=20&cursor=0193-ab"
        );
    }

    #[test]
    fn datetime_local_values_are_read_as_utc() {
        let f = |s: &str| as_rfc3339(Some(s.into())).unwrap();
        assert_eq!(f("2026-11-25T10:00"), "2026-11-25T10:00:00Z");
        assert_eq!(f("2026-11-25T10:00:30"), "2026-11-25T10:00:30Z");
        assert_eq!(f("2026-11-25T10:00:00+01:00"), "2026-11-25T10:00:00+01:00");
    }
}
