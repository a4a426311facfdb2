//! Row shapes of executions and artifacts as both dialects read them (times already decoded),
//! and their conversion into domain records.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use time::OffsetDateTime;
use uuid::Uuid;

use super::{ArtifactRecord, AttestationState, Execution, PushState, StoreError};
use crate::domain::ExecutionId;

/// Columns selected for an execution, in this order: every select of executions lists them first,
/// and its rows are read by position.
pub const EXECUTION_COLUMNS: &str = "id, account_id, pipeline_execution_id, pipeline_identifier, \
    repository_url, branch, commit_sha, trigger_type, triggered_by, builder_id, builder_version, \
    started_on, finished_on, status, received_at, attestation_state, key_id, signed_at, \
    attested_at, last_error, signed_by";

/// How many [`EXECUTION_COLUMNS`] there are: where a joined row's artifact columns start.
pub const EXECUTION_COLUMN_COUNT: usize = 21;

/// Columns selected for an artifact, in this order ([`ARTIFACT_COLUMNS`]).
pub const ARTIFACT_NAMES: [&str; 15] = [
    "execution_id",
    "position",
    "registry",
    "repository",
    "tag",
    "digest",
    "push_state",
    "push_attempts",
    "next_attempt_at",
    "last_error",
    "pushed_reference",
    "manifest_digest",
    "pushed_at",
    "resolved_at",
    "pushed_by",
];

pub static ARTIFACT_COLUMNS: LazyLock<String> = LazyLock::new(|| ARTIFACT_NAMES.join(", "));

/// An execution's columns (`e.`) beside its artifacts' (`a.`, renamed `a_<column>`), for reads
/// that join the two so a page and its artifacts come back in one query. Built once.
pub static JOINED_COLUMNS: LazyLock<String> = LazyLock::new(|| {
    let execution = EXECUTION_COLUMNS
        .split(',')
        .map(|c| format!("e.{}", c.trim()));
    let artifact = ARTIFACT_NAMES.iter().map(|c| format!("a.{c} AS a_{c}"));
    execution.chain(artifact).collect::<Vec<_>>().join(", ")
});

pub struct ExecutionRow {
    pub id: Uuid,
    pub account_id: String,
    pub pipeline_execution_id: String,
    pub pipeline_identifier: String,
    pub repository_url: String,
    pub branch: String,
    pub commit_sha: String,
    pub trigger_type: String,
    pub triggered_by: String,
    pub builder_id: String,
    pub builder_version: BTreeMap<String, String>,
    pub started_on: OffsetDateTime,
    pub finished_on: OffsetDateTime,
    pub status: String,
    pub received_at: OffsetDateTime,
    pub attestation_state: String,
    pub key_id: Option<String>,
    pub signed_at: Option<OffsetDateTime>,
    pub attested_at: Option<OffsetDateTime>,
    pub last_error: Option<String>,
    pub signed_by: Option<String>,
}

pub struct ArtifactRow {
    pub execution_id: Uuid,
    pub position: i32,
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: String,
    pub push_state: String,
    pub push_attempts: i32,
    pub next_attempt_at: Option<OffsetDateTime>,
    pub last_error: Option<String>,
    pub pushed_reference: Option<String>,
    pub manifest_digest: Option<String>,
    pub pushed_at: Option<OffsetDateTime>,
    pub resolved_at: Option<OffsetDateTime>,
    pub pushed_by: Option<String>,
}

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} {value:?}"))
}

impl ArtifactRow {
    fn into_record(self) -> Result<ArtifactRecord, StoreError> {
        Ok(ArtifactRecord {
            position: self.position,
            // '' while the tag of an image from a template is being resolved.
            digest: match self.digest.as_str() {
                "" => None,
                d => Some(d.parse().map_err(|_| corrupt("digest", d))?),
            },
            resolved_at: self.resolved_at,
            push_state: PushState::parse(&self.push_state)
                .ok_or_else(|| corrupt("push_state", &self.push_state))?,
            registry: self.registry,
            repository: self.repository,
            tag: self.tag,
            push_attempts: self.push_attempts,
            next_attempt_at: self.next_attempt_at,
            last_error: self.last_error,
            pushed_reference: self.pushed_reference,
            manifest_digest: self.manifest_digest,
            pushed_at: self.pushed_at,
            pushed_by: self.pushed_by,
        })
    }
}

/// Join executions with their artifacts (fetched in one query), keeping the executions' order.
pub fn assemble(
    rows: Vec<ExecutionRow>,
    artifacts: Vec<ArtifactRow>,
) -> Result<Vec<Execution>, StoreError> {
    let mut by_execution: BTreeMap<Uuid, Vec<ArtifactRecord>> = BTreeMap::new();
    for a in artifacts {
        by_execution
            .entry(a.execution_id)
            .or_default()
            .push(a.into_record()?);
    }
    rows.into_iter()
        .map(|r| {
            let mut artifacts = by_execution.remove(&r.id).unwrap_or_default();
            artifacts.sort_by_key(|a| a.position);
            r.into_execution(artifacts)
        })
        .collect()
}

impl ExecutionRow {
    /// The execution of this row with `artifacts` (their records, or their count).
    pub fn into_execution<A>(self, artifacts: A) -> Result<Execution<A>, StoreError> {
        Ok(Execution {
            id: ExecutionId(self.id),
            account: self
                .account_id
                .parse()
                .map_err(|_| corrupt("account_id", &self.account_id))?,
            status: self
                .status
                .parse()
                .map_err(|_| corrupt("status", &self.status))?,
            attestation: AttestationState::parse(&self.attestation_state)
                .ok_or_else(|| corrupt("attestation_state", &self.attestation_state))?,
            pipeline_identifier: self.pipeline_identifier,
            pipeline_execution_id: self.pipeline_execution_id,
            repository_url: self.repository_url,
            branch: self.branch,
            commit_sha: self.commit_sha,
            trigger_type: self.trigger_type,
            triggered_by: self.triggered_by,
            builder_id: self.builder_id,
            builder_version: self.builder_version,
            started_on: self.started_on,
            finished_on: self.finished_on,
            received_at: self.received_at,
            key_id: self.key_id,
            signed_at: self.signed_at,
            attested_at: self.attested_at,
            last_error: self.last_error,
            signed_by: self.signed_by,
            artifacts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_column_counts_read_by_position_match_the_column_lists() {
        assert_eq!(EXECUTION_COLUMNS.split(',').count(), EXECUTION_COLUMN_COUNT);
        assert!(
            JOINED_COLUMNS
                .split(", ")
                .nth(EXECUTION_COLUMN_COUNT)
                .is_some_and(|c| c.starts_with("a.execution_id ")),
            "{}",
            *JOINED_COLUMNS
        );
    }
}
