//! Integration tests: the real manager on the real Docker engine and a real
//! Postgres. Run them through scripts/test.sh, which sets both up.

mod billing;
mod browser;
mod callers;
mod containers;
mod dashboard;
mod helpers;
mod invoke;
mod pool;
mod records;
mod runtimes;
mod upload;
