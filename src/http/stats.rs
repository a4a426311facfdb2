//! `GET /v1/stats`: counts per day by build status and attestation state, and time-to-attest
//! percentiles (webhook received → attestation in every registry), for dashboards.

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::auth::Reader;
use super::executions::{scoped_account, time_param};
use crate::app::AppState;
use crate::error::ApiError;
use crate::store::Stats;

/// Longest window one request may cover.
const MAX_WINDOW: Duration = Duration::days(366);

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct StatsParams {
    /// RFC 3339; default 30 days before `to`.
    pub from: Option<String>,
    /// RFC 3339, exclusive; default now.
    pub to: Option<String>,
    /// Admin tokens only; other tokens always see their own account.
    pub account: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatsView {
    #[serde(with = "time::serde::rfc3339")]
    pub from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub to: OffsetDateTime,
    pub account: Option<String>,
    #[serde(flatten)]
    pub stats: Stats,
}

#[utoipa::path(
    get,
    path = "/v1/stats",
    tag = "executions",
    params(StatsParams),
    responses(
        (status = 200, description = "Dashboard figures", body = StatsView),
        (status = 400, description = "Bad time range", body = crate::error::ErrorResponse),
        (status = 401, description = "No valid token", body = crate::error::ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn get_stats(
    State(state): State<AppState>,
    reader: Reader,
    Query(params): Query<StatsParams>,
) -> Result<Json<StatsView>, ApiError> {
    let to = time_param("to", &params.to)?.unwrap_or_else(OffsetDateTime::now_utc);
    let from = time_param("from", &params.from)?.unwrap_or(to - Duration::days(30));
    if from >= to || to - from > MAX_WINDOW {
        return Err(ApiError::BadRequest(
            "invalid_query",
            "`from` must be before `to` and the window at most 366 days".into(),
        ));
    }
    let account = scoped_account(&reader, params.account.as_deref())?;
    let stats = state.store.stats(account.as_ref(), from, to).await?;
    Ok(Json(StatsView {
        from,
        to,
        account: account.map(|a| a.to_string()),
        stats,
    }))
}
