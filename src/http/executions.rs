//! Execution reads: one record, its provenance statement and DSSE envelope (exact stored bytes),
//! filtered lists with cursor pagination, and re-driving failed deliveries.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::auth::Reader;
use super::settled::{self, Body};
use super::views::{ExecutionSummaryView, ExecutionView, json_bytes, json_response};
use crate::app::AppState;
use crate::domain::{AccountId, BuildStatus, ExecutionId};
use crate::error::ApiError;
use crate::store::{
    AttestationState, Document, DynStore, Execution, ExecutionFilter, ExecutionSummary, StoreError,
};

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 200;

/// Query parameters of `GET /v1/executions`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct ListParams {
    /// Admin tokens only; other tokens always see their own account.
    pub account: Option<String>,
    pub pipeline: Option<String>,
    pub repository: Option<String>,
    pub branch: Option<String>,
    pub commit: Option<String>,
    /// succeeded | failed | aborted
    pub status: Option<String>,
    /// skipped | resolving | pending | pushing | attested | failed
    pub attestation: Option<String>,
    pub started_after: Option<String>,
    pub started_before: Option<String>,
    pub finished_after: Option<String>,
    pub finished_before: Option<String>,
    /// `desc` (newest first, default) or `asc`.
    pub order: Option<String>,
    /// 1..=200, default 50.
    pub limit: Option<u32>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
    /// What each item shows (AIP-157): `full` (default) or `basic`.
    #[param(value_type = Option<ListView>, inline)]
    pub view: Option<String>,
}

/// How much of each execution a list page shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum ListView {
    /// Each execution without its artifacts, only their number (`artifactCount`).
    Basic,
    /// Each execution with its artifacts and their delivery state, as `GET /v1/executions/{id}`.
    #[default]
    Full,
}

impl ListParams {
    /// The `view` asked for (`full` when absent), or a 400 naming it.
    pub fn view(&self) -> Result<ListView, ApiError> {
        match self.view.as_deref() {
            None | Some("full") => Ok(ListView::Full),
            Some("basic") => Ok(ListView::Basic),
            Some(_) => Err(bad("view", "must be basic or full")),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionPage {
    pub items: ExecutionItems,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A page's executions in the view asked for.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum ExecutionItems {
    /// `view=full` (the default).
    Full(Vec<ExecutionView>),
    /// `view=basic`.
    Basic(Vec<ExecutionSummaryView>),
}

/// A 400 `invalid_query` naming the parameter.
pub fn bad(param: &str, message: &str) -> ApiError {
    ApiError::BadRequest(
        "invalid_query",
        format!("query parameter `{param}` {message}"),
    )
}

/// An optional RFC 3339 query parameter.
pub fn time_param(name: &str, v: &Option<String>) -> Result<Option<OffsetDateTime>, ApiError> {
    v.as_deref()
        .map(|s| {
            OffsetDateTime::parse(s, &Rfc3339)
                .map_err(|_| bad(name, "must be an RFC 3339 timestamp"))
        })
        .transpose()
}

/// The account a query covers: always the reader's own for account tokens; for admins, the
/// `account` parameter if given (else every account).
pub fn scoped_account(
    reader: &Reader,
    requested: Option<&str>,
) -> Result<Option<AccountId>, ApiError> {
    let requested = requested
        .map(|a| {
            a.parse::<AccountId>()
                .map_err(|_| bad("account", "is not a valid account id"))
        })
        .transpose()?;
    Ok(reader.scope().cloned().or(requested))
}

impl ListParams {
    /// The store filter for `reader`, or a 400 naming the bad parameter.
    pub fn to_filter(&self, reader: &Reader) -> Result<ExecutionFilter, ApiError> {
        let account = scoped_account(reader, self.account.as_deref())?;
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(bad("limit", "must be between 1 and 200"));
        }
        Ok(ExecutionFilter {
            account,
            pipeline: self.pipeline.clone(),
            repository: self.repository.clone(),
            branch: self.branch.clone(),
            commit: self.commit.clone(),
            status: self
                .status
                .as_deref()
                .map(|s| {
                    s.parse::<BuildStatus>()
                        .map_err(|_| bad("status", "must be succeeded, failed or aborted"))
                })
                .transpose()?,
            attestation: self
                .attestation
                .as_deref()
                .map(|s| {
                    AttestationState::parse(s).ok_or_else(|| {
                        bad(
                            "attestation",
                            "must be skipped, resolving, pending, pushing, attested or failed",
                        )
                    })
                })
                .transpose()?,
            started_after: time_param("startedAfter", &self.started_after)?,
            started_before: time_param("startedBefore", &self.started_before)?,
            finished_after: time_param("finishedAfter", &self.finished_after)?,
            finished_before: time_param("finishedBefore", &self.finished_before)?,
            ascending: match self.order.as_deref() {
                None | Some("desc") => false,
                Some("asc") => true,
                Some(_) => return Err(bad("order", "must be asc or desc")),
            },
            after: self
                .cursor
                .as_deref()
                .map(|c| {
                    c.parse::<ExecutionId>()
                        .map_err(|_| bad("cursor", "is not a cursor this API returned"))
                })
                .transpose()?,
            limit,
        })
    }
}

#[utoipa::path(
    get,
    path = "/v1/executions",
    tag = "executions",
    params(ListParams),
    responses(
        (status = 200, description = "A page of executions", body = ExecutionPage),
        (status = 400, description = "Bad query parameter", body = crate::error::ErrorResponse),
        (status = 401, description = "No valid token", body = crate::error::ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn list_executions(
    State(state): State<AppState>,
    reader: Reader,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    let filter = params.to_filter(&reader)?;
    let view = params.view()?;
    // A filter on the attestation state is read in one query: the items of a page read in two
    // could have moved on to another state in between.
    if state.settled.is_on() && filter.attestation.is_none() {
        return page_of_kept_items(&state, &reader, &filter, view).await;
    }
    let base = &state.public_url;
    // The response's buffer: about 1.5 KB per item in full, 1 KB in basic (a page is 40–60 KB).
    let (page, capacity) = match view {
        ListView::Full => {
            let executions = state.store.list_executions(&filter).await?;
            let capacity = 64 + executions.len() * 1536;
            let page = ExecutionPage {
                next_cursor: next_cursor(&executions, filter.limit),
                items: ExecutionItems::Full(
                    executions
                        .into_iter()
                        .map(|e| ExecutionView::new(e, base))
                        .collect(),
                ),
            };
            (page, capacity)
        }
        ListView::Basic => {
            let executions = state.store.list_execution_summaries(&filter).await?;
            let capacity = 64 + executions.len() * 1024;
            let page = ExecutionPage {
                next_cursor: next_cursor(&executions, filter.limit),
                items: ExecutionItems::Basic(
                    executions
                        .into_iter()
                        .map(|e| ExecutionSummaryView::new(e, base))
                        .collect(),
                ),
            };
            (page, capacity)
        }
    };
    json_response(&page, capacity)
}

/// The page `filter` selects, its settled items as kept and the others read: the page's ids
/// first, then the executions not kept, in a second query only if there are any. The bytes are
/// those of the page read in one query ([`ExecutionPage`] serialized).
async fn page_of_kept_items(
    state: &AppState,
    reader: &Reader,
    filter: &ExecutionFilter,
    view: ListView,
) -> Result<Response, ApiError> {
    let ids = state.store.list_execution_ids(filter).await?;
    let next_cursor = ids.last().filter(|_| ids.len() == filter.limit as usize);
    let page = match view {
        ListView::Full => kept_or_read::<Execution>(state, reader, &ids, next_cursor).await?,
        ListView::Basic => {
            kept_or_read::<ExecutionSummary>(state, reader, &ids, next_cursor).await?
        }
    };
    Ok(json_bytes(Bytes::from(page)))
}

/// An execution as a list page shows it, in either view.
trait PageItem: Sized {
    /// Which kept response it is.
    const BODY: Body;
    /// About how long its JSON is, to size buffers.
    const TYPICAL_BYTES: usize;
    fn id(&self) -> ExecutionId;
    fn account(&self) -> &AccountId;
    fn is_settled(&self) -> bool;
    /// Its JSON, appended to `out`.
    fn write(self, base: &Arc<str>, out: &mut Vec<u8>) -> Result<(), ApiError>;
    /// Its JSON alone.
    fn to_bytes(self, base: &Arc<str>) -> Result<Bytes, ApiError> {
        let mut out = Vec::with_capacity(Self::TYPICAL_BYTES);
        self.write(base, &mut out)?;
        Ok(Bytes::from(out))
    }
    /// The executions of `ids`, read in this view.
    async fn read_in(store: &DynStore, ids: &[ExecutionId]) -> Result<Vec<Self>, StoreError>;
}

impl PageItem for Execution {
    const BODY: Body = Body::Execution;
    const TYPICAL_BYTES: usize = 1536;
    fn id(&self) -> ExecutionId {
        self.id
    }
    fn account(&self) -> &AccountId {
        &self.account
    }
    fn is_settled(&self) -> bool {
        Execution::is_settled(self)
    }
    fn write(self, base: &Arc<str>, out: &mut Vec<u8>) -> Result<(), ApiError> {
        write_json(&ExecutionView::new(self, base), out)
    }
    async fn read_in(store: &DynStore, ids: &[ExecutionId]) -> Result<Vec<Self>, StoreError> {
        store.executions_in(ids).await
    }
}

impl PageItem for ExecutionSummary {
    const BODY: Body = Body::Summary;
    const TYPICAL_BYTES: usize = 1024;
    fn id(&self) -> ExecutionId {
        self.id
    }
    fn account(&self) -> &AccountId {
        &self.account
    }
    fn is_settled(&self) -> bool {
        ExecutionSummary::is_settled(self)
    }
    fn write(self, base: &Arc<str>, out: &mut Vec<u8>) -> Result<(), ApiError> {
        write_json(&ExecutionSummaryView::new(self, base), out)
    }
    async fn read_in(store: &DynStore, ids: &[ExecutionId]) -> Result<Vec<Self>, StoreError> {
        store.execution_summaries_in(ids).await
    }
}

/// A page of `ids` serialized: each item as kept, or read (in one query for all of them) and
/// kept if settled; then the cursor of the next page.
async fn kept_or_read<T: PageItem>(
    state: &AppState,
    reader: &Reader,
    ids: &[ExecutionId],
    next_cursor: Option<&ExecutionId>,
) -> Result<Vec<u8>, ApiError> {
    let kept: Vec<Option<Bytes>> = ids
        .iter()
        .map(|id| state.settled.get(*id, T::BODY, reader))
        .collect();
    let missing: Vec<ExecutionId> = ids
        .iter()
        .zip(&kept)
        .filter_map(|(id, kept)| kept.is_none().then_some(*id))
        .collect();
    let mut read: HashMap<ExecutionId, T> = if missing.is_empty() {
        HashMap::new()
    } else {
        T::read_in(&state.store, &missing)
            .await?
            .into_iter()
            .map(|e| (e.id(), e))
            .collect()
    };
    let base = &state.public_url;
    let mut page = Vec::with_capacity(64 + ids.len() * T::TYPICAL_BYTES);
    page.extend_from_slice(b"{\"items\":[");
    let mut first = true;
    for (id, kept) in ids.iter().zip(kept) {
        let item = match kept {
            Some(bytes) => Ok(bytes),
            // Executions are never deleted; one gone since its id was read is left out. The
            // page's filter is scoped to the reader's account; checked again all the same.
            None => match read.remove(id) {
                Some(e) if reader.can_read(e.account()) => Err(e),
                _ => continue,
            },
        };
        if !first {
            page.push(b',');
        }
        first = false;
        match item {
            Ok(kept) => page.extend_from_slice(&kept),
            Err(e) if e.is_settled() => {
                let account = e.account().clone();
                let bytes = e.to_bytes(base)?;
                page.extend_from_slice(&bytes);
                state.settled.keep(*id, T::BODY, &account, &bytes);
            }
            Err(e) => e.write(base, &mut page)?,
        }
    }
    page.extend_from_slice(b"],\"nextCursor\":");
    match next_cursor {
        Some(id) => page.extend_from_slice(format!("\"{id}\"").as_bytes()),
        None => page.extend_from_slice(b"null"),
    }
    page.push(b'}');
    Ok(page)
}

/// A view's JSON appended to `out`.
fn write_json<T: Serialize>(view: &T, out: &mut Vec<u8>) -> Result<(), ApiError> {
    serde_json::to_writer(out, view).map_err(|e| ApiError::Internal(e.into()))
}

/// The cursor of the page after `page`: its last execution's id, when the page is full.
fn next_cursor<A>(page: &[Execution<A>], limit: u32) -> Option<String> {
    (page.len() == limit as usize)
        .then(|| page.last().map(|e| e.id.to_string()))
        .flatten()
}

/// The execution, if it exists and `reader` may see it; otherwise the same 404 either way.
pub async fn readable_execution(
    state: &AppState,
    reader: &Reader,
    id: &str,
) -> Result<Execution, ApiError> {
    let id: ExecutionId = id.parse().map_err(|_| ApiError::execution_not_found())?;
    match state.store.execution(id).await? {
        Some(e) if reader.can_read(&e.account) => Ok(e),
        _ => Err(ApiError::execution_not_found()),
    }
}

/// An execution's statement or envelope (exact stored bytes) with its content type and file
/// name, kept once read (both are written once), if the execution exists, has the document and
/// `reader` may see it; otherwise the 404 of a missing execution or of a missing document.
async fn document_response(
    state: &AppState,
    reader: &Reader,
    id: &str,
    which: Document,
) -> Result<Response, ApiError> {
    let id: ExecutionId = id.parse().map_err(|_| ApiError::execution_not_found())?;
    let (body, content_type, filename) = match which {
        Document::Statement => (
            Body::Statement,
            "application/vnd.in-toto+json",
            format!("{id}.intoto.json"),
        ),
        Document::Envelope => (
            Body::Envelope,
            "application/vnd.dsse.envelope.v1+json",
            format!("{id}.dsse.json"),
        ),
    };
    if let Some(bytes) = state.settled.get(id, body, reader) {
        return Ok(settled::document(bytes, content_type, &filename));
    }
    let doc = match state.store.document(id, which).await? {
        Some(doc) if reader.can_read(&doc.account) => doc,
        _ => return Err(ApiError::execution_not_found()),
    };
    let Some(bytes) = doc.bytes else {
        return Err(match which {
            Document::Statement => ApiError::NotFound(
                "provenance_not_found",
                format!(
                    "execution {id} has no provenance: the build {}",
                    doc.status.as_str()
                ),
            ),
            Document::Envelope => ApiError::NotFound(
                "attestation_not_found",
                format!(
                    "execution {id} has no signed attestation yet (state: {})",
                    doc.attestation.as_str()
                ),
            ),
        });
    };
    let bytes = Bytes::from(bytes);
    state.settled.keep(id, body, &doc.account, &bytes);
    Ok(settled::document(bytes, content_type, &filename))
}

#[utoipa::path(
    get,
    path = "/v1/executions/{execution_id}",
    tag = "executions",
    params(("execution_id" = String, Path, description = "attestd execution id")),
    responses(
        (status = 200, description = "The execution with artifacts and delivery state", body = ExecutionView),
        (status = 404, description = "No such execution (or another account's)", body = crate::error::ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn get_execution(
    State(state): State<AppState>,
    reader: Reader,
    Path(execution_id): Path<String>,
) -> Result<Response, ApiError> {
    let id: ExecutionId = execution_id
        .parse()
        .map_err(|_| ApiError::execution_not_found())?;
    if let Some(bytes) = state.settled.get(id, Body::Execution, &reader) {
        return Ok(json_bytes(bytes));
    }
    let e = readable_execution(&state, &reader, &execution_id).await?;
    let (id, account, is_settled) = (e.id, e.account.clone(), e.is_settled());
    let bytes = e.to_bytes(&state.public_url)?;
    if is_settled {
        state.settled.keep(id, Body::Execution, &account, &bytes);
    }
    Ok(json_bytes(bytes))
}

#[utoipa::path(
    get,
    path = "/v1/executions/{execution_id}/provenance",
    tag = "executions",
    params(("execution_id" = String, Path, description = "attestd execution id")),
    responses(
        (status = 200, description = "The in-toto statement, byte for byte as stored", content_type = "application/vnd.in-toto+json", body = String),
        (status = 404, description = "No such execution, or no provenance (unsuccessful build)", body = crate::error::ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn get_provenance(
    State(state): State<AppState>,
    reader: Reader,
    Path(execution_id): Path<String>,
) -> Result<Response, ApiError> {
    document_response(&state, &reader, &execution_id, Document::Statement).await
}

#[utoipa::path(
    get,
    path = "/v1/executions/{execution_id}/attestation",
    tag = "executions",
    params(("execution_id" = String, Path, description = "attestd execution id")),
    responses(
        (status = 200, description = "The DSSE envelope, byte for byte as signed", content_type = "application/vnd.dsse.envelope.v1+json", body = String),
        (status = 404, description = "No such execution, or not signed yet", body = crate::error::ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn get_attestation(
    State(state): State<AppState>,
    reader: Reader,
    Path(execution_id): Path<String>,
) -> Result<Response, ApiError> {
    document_response(&state, &reader, &execution_id, Document::Envelope).await
}

/// Re-drive dead or backing-off jobs of an execution with the same stored envelope.
#[utoipa::path(
    post,
    path = "/v1/executions/{execution_id}/retry",
    tag = "executions",
    params(("execution_id" = String, Path, description = "attestd execution id")),
    responses(
        (status = 202, description = "Failed or waiting deliveries re-queued with the stored envelope", body = ExecutionView),
        (status = 400, description = "Nothing to retry", body = crate::error::ErrorResponse),
        (status = 401, description = "No token (anonymous reads may not retry)", body = crate::error::ErrorResponse),
        (status = 404, description = "No such execution", body = crate::error::ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn retry_execution(
    State(state): State<AppState>,
    reader: Reader,
    Path(execution_id): Path<String>,
) -> Result<(StatusCode, Json<ExecutionView>), ApiError> {
    reader.require_token()?;
    let e = readable_execution(&state, &reader, &execution_id).await?;
    let requeued = state.store.retry_execution(e.id).await?;
    if requeued == 0 {
        return Err(ApiError::BadRequest(
            "nothing_to_retry",
            format!(
                "execution {} has no failed or waiting deliveries (state: {})",
                e.id,
                e.attestation.as_str()
            ),
        ));
    }
    tracing::info!(execution.id = %e.id, jobs = requeued, "deliveries re-driven");
    state.notify_worker();
    let e = state
        .store
        .execution(e.id)
        .await?
        .ok_or_else(ApiError::execution_not_found)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(ExecutionView::new(e, &state.public_url)),
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    #[test]
    fn the_openapi_document_names_both_list_views_and_their_item_shapes() {
        let doc = serde_json::to_value(crate::http::openapi()).unwrap();
        let list = &doc["paths"]["/v1/executions"]["get"];
        let view = list["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "view")
            .expect("a view parameter");
        assert!(
            view.to_string().contains(r#""enum":["basic","full"]"#),
            "{view}"
        );
        let schemas = &doc["components"]["schemas"];
        let items: Vec<&Value> = schemas["ExecutionItems"]["oneOf"]
            .as_array()
            .unwrap()
            .iter()
            .map(|shape| &shape["items"]["$ref"])
            .collect();
        assert_eq!(
            items,
            [
                &json!("#/components/schemas/ExecutionView"),
                &json!("#/components/schemas/ExecutionSummaryView"),
            ]
        );
        let own = |name: &str| schemas[name]["allOf"][1]["required"].clone();
        assert_eq!(own("ExecutionView"), json!(["artifacts", "links"]));
        assert_eq!(
            own("ExecutionSummaryView"),
            json!(["artifactCount", "links"])
        );
    }
}
