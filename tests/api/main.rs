//! Integration tests: the real manager on the real Docker engine and a real
//! Postgres. Run them through scripts/test.sh, which sets both up.

mod billing;
mod billing_rules;
mod browser;
mod cached_deploys;
mod callers;
mod cluster;
mod compat;
mod containers;
mod dashboard;
mod events;
mod faults;
mod helpers;
mod import_cache;
mod invoke;
mod pool;
mod pool_faults;
mod process;
mod records;
mod runtimes;
mod security_packages;
mod security_sandbox;
mod upload;
mod watch;
