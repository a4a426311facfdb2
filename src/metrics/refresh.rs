//! The gauges that come from the database and the pools, read every `metrics.refresh_secs` by one
//! background task — a scrape never queries the database, however often Prometheus asks.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::app::App;

/// Refresh until shutdown. Also runs the recorder's upkeep, which drains histogram samples even
/// when nothing scrapes.
pub async fn run(app: Arc<App>) {
    let every = Duration::from_secs(app.settings.metrics.refresh_secs.max(1));
    let mut seen = BTreeSet::new();
    loop {
        once(&app, &mut seen).await;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = app.shutdown.cancelled() => return,
        }
    }
}

/// One refresh; a store that does not answer within the interval is skipped until the next.
async fn once(app: &App, seen: &mut BTreeSet<(String, String)>) {
    super::pools(&app.store.pool_stats());
    let every = Duration::from_secs(app.settings.metrics.refresh_secs.max(1));
    match tokio::time::timeout(every, app.store.job_counts()).await {
        Ok(Ok(counts)) => super::jobs(&counts, seen),
        Ok(Err(e)) => tracing::warn!(error = %e, "counting jobs for metrics failed"),
        Err(_) => tracing::warn!("counting jobs for metrics took longer than metrics.refresh_secs"),
    }
    if let Some(handle) = super::handle() {
        handle.run_upkeep();
    }
}
