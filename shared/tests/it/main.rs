//! The library's integration tests, in one test binary (each file used to link its own copy of
//! the AWS SDK). Run one file's tests with `cargo test -p shared --test it store_memory::`.

mod dam_clients;
mod dam_sim_webhooks;
mod mapping_apply;
mod mapping_common;
mod mapping_load;
mod mapping_validate;
mod store_dynamodb;
mod store_dynamodb_faults;
mod store_memory;
