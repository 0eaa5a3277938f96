//! reckon's integration tests: one binary, a module per capability. They run the real
//! `reckon` binary on generated data sets.

mod accuracy;
mod ageing;
mod airflow;
mod alerts;
mod bad_input;
mod browser;
mod buckets;
mod desk;
mod engines;
mod fetchers;
mod formats;
mod fuzz;
mod idempotency;
mod keys;
mod orchestration;
mod preview;
mod rules;
mod schemas;
mod services;
mod slt;
mod sqlcheck;
mod storage;
mod stream;
mod support;
mod thresholds;
mod warehouse;
mod web;
