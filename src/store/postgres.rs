//! (in progress)
use super::*;
pub struct PgStore;
impl PgStore {
    pub async fn connect(_url: &str, _max: u32) -> Result<Self, StoreError> {
        unimplemented!()
    }
}
#[async_trait::async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }
    async fn migrate(&self) -> Result<(), StoreError> {
        unimplemented!()
    }
    async fn ping(&self) -> Result<(), StoreError> {
        unimplemented!()
    }
    async fn record_build(&self, _new: NewExecution) -> Result<Recorded, StoreError> {
        unimplemented!()
    }
    async fn execution(&self, _id: ExecutionId) -> Result<Option<Execution>, StoreError> {
        unimplemented!()
    }
    async fn list_executions(
        &self,
        _filter: &ExecutionFilter,
    ) -> Result<Vec<Execution>, StoreError> {
        unimplemented!()
    }
    async fn statement(&self, _id: ExecutionId) -> Result<Option<Vec<u8>>, StoreError> {
        unimplemented!()
    }
    async fn envelope(&self, _id: ExecutionId) -> Result<Option<Vec<u8>>, StoreError> {
        unimplemented!()
    }
    async fn executions_by_digest(
        &self,
        _digest: &Digest,
        _account: Option<&AccountId>,
    ) -> Result<Vec<DigestMatch>, StoreError> {
        unimplemented!()
    }
    async fn claim_job(&self, _owner: &str, _lease: Duration) -> Result<Option<Job>, StoreError> {
        unimplemented!()
    }
    async fn complete_sign(
        &self,
        _job: &Job,
        _envelope: &[u8],
        _key_id: &str,
    ) -> Result<Vec<u8>, StoreError> {
        unimplemented!()
    }
    async fn complete_push(&self, _job: &Job, _record: &PushRecord) -> Result<(), StoreError> {
        unimplemented!()
    }
    async fn fail_job(
        &self,
        _job: &Job,
        _error: &str,
        _retry_at: Option<OffsetDateTime>,
    ) -> Result<(), StoreError> {
        unimplemented!()
    }
    async fn release_job(&self, _job: &Job) -> Result<(), StoreError> {
        unimplemented!()
    }
    async fn retry_execution(&self, _id: ExecutionId) -> Result<u64, StoreError> {
        unimplemented!()
    }
    async fn unfinished_jobs(&self) -> Result<u64, StoreError> {
        unimplemented!()
    }
    async fn try_lock(
        &self,
        _name: &str,
        _owner: &str,
        _ttl: Duration,
    ) -> Result<bool, StoreError> {
        unimplemented!()
    }
    async fn unlock(&self, _name: &str, _owner: &str) -> Result<(), StoreError> {
        unimplemented!()
    }
}
