//! The fault suite: the real `attestd` binary against its own PostgreSQL cluster, real
//! registries (behind a fault-injecting proxy where the scenario needs one) and its own OpenBao,
//! with each fault made by the test itself — process signals, `pg_ctl stop -m immediate`, a proxy
//! answering 500/429, hanging, dripping, resetting or truncating. Every scenario prints one line
//! of figures (`fault <name>: …`) and asserts what a user would check: the `.att` manifests in the
//! registry and the executions' states in the API. Sizes: moderate by default,
//! `ATTESTD_FAULTS_SIZE=large` for the large ones (see docs/RELIABILITY.md).

mod kill;
mod openbao_outage;
mod postgres_outage;
mod proxy_modes;
mod registry_outage;
mod settled_reads;
mod slowloris;
mod stall;
mod storm;
mod support;

#[test]
fn the_fault_proxy_does_what_each_fault_says() {
    support::run(proxy_modes::run());
}

#[test]
fn a_redelivery_storm_leaves_one_record_and_one_layer_per_execution() {
    support::run(storm::run());
}

#[test]
fn kill_9_while_draining_a_backlog_loses_nothing_and_doubles_nothing() {
    support::run(kill::run());
}

#[test]
fn a_registry_stalled_past_the_lock_ttl_loses_no_layer() {
    support::run(stall::run());
}

#[test]
fn a_registry_outage_leaves_intake_unaffected_and_delivers_afterwards() {
    support::run(registry_outage::run());
}

#[test]
fn a_postgres_crash_answers_503_at_once_and_loses_nothing_acknowledged() {
    support::run(postgres_outage::run());
}

#[test]
fn reads_of_settled_executions_ride_out_a_postgres_crash_and_the_rest_say_503() {
    support::run(settled_reads::run());
}

#[test]
fn an_openbao_outage_signs_nothing_halfway_and_signing_resumes() {
    support::run(openbao_outage::run());
}

#[test]
fn slowloris_connections_are_cut_and_health_and_webhooks_still_answer() {
    support::run(slowloris::run());
}
