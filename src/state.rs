//! What every request handler and every call shares: the parts the
//! manager is made of, wired once by [`crate::app`]. Kept apart from the
//! wiring so that the call core and the HTTP layer depend on it, not on
//! each other or on `app`.

use std::sync::Arc;

use sqlx::PgPool;

use crate::catalog::Catalog;
use crate::code::CodeStore;
use crate::config::Settings;
use crate::meter::Recorder;
use crate::metrics::Metrics;
use crate::packages::Installer;
use crate::pool::Pool;
use crate::sandbox::Sandboxes;

/// Shared by every request handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub db: PgPool,
    pub code: CodeStore,
    pub catalog: Catalog,
    pub sandboxes: Sandboxes,
    pub pool: Pool,
    /// Installs functions' packages into the shared cache.
    pub installer: Installer,
    /// Where calls send their records (journaled, written in batches).
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Function URL auth modes and rate limits.
    pub guard: Arc<crate::api::guard::Guard>,
    /// Failed dashboard logins per source address.
    pub logins: Arc<crate::ratelimit::LoginLimits>,
    /// This node's part in a cluster: draining, spills, prepared versions.
    pub node: crate::cluster::node::Node,
    /// This manager's handle on the async queue (`crate::events`).
    pub events: crate::events::handle::Events,
}
