//! The end-to-end suites, in one test binary: each links the AWS SDK, so one binary instead of
//! one per file saves most of the link time and disk. Run one suite with
//! `cargo test -p dam-sync-tests --test it chaos::`.

mod akeneo_client;
mod backfill_pipeline;
mod chaos;
mod chaos_dams;
mod chaos_support;
mod consumer_pipeline;
mod infra_moto;
mod infra_template;
mod ingest_adapters;
mod ingest_attacks;
mod ingest_lambda;
mod lambda_runtime;
mod observability;
mod poller_convergence;
mod poller_dams;
mod poller_memory;
mod poller_metrics;
mod poller_moto;
mod poller_properties;
mod poller_sweep;
mod support;
