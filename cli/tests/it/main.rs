//! Tests of the `dam-sync` binary, in one test binary.

mod common;
mod demo;
mod examples;
mod help;
mod messages;
mod operator_commands;
mod pim_commands;
mod serve;
mod serve_dams;
mod serve_kill;
