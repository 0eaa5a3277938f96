//! reckon: daily payment reconciliation on DataFusion and Ballista.
//!
//! A library of stages (fetch, normalize, collect, reconcile, report) and the pieces they
//! share; `main.rs` is a thin command line over it. ARCHITECTURE.md maps where each concern
//! lives.

pub mod alerts;
pub mod allocator;
pub mod backfill;
pub mod buckets;
pub mod cluster;
pub mod config;
pub mod contracts;
pub mod db;
pub mod delta;
pub mod demo;
pub mod desk;
pub mod engine;
pub mod error;
pub mod fetchers;
pub mod formats;
pub mod lease;
pub mod logs;
pub mod objstore;
pub mod parquet_io;
pub mod pipeline;
pub mod postgres;
pub mod preview;
pub mod records;
pub mod replica;
pub mod schema;
pub mod signing;
pub mod sql;
pub mod sqlcheck;
pub mod stages;
pub mod status;
pub mod store;
pub mod stream;
pub mod verify;

pub use error::{Error, Result};
