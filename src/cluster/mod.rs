//! Running as one node of several behind HAProxy, sharing one Postgres.
//!
//! Nothing here is a cluster of our own: HAProxy decides where a call goes
//! (consistent hashing on the function name, health checks), Postgres holds
//! every fact (functions, code, records) and arbitrates where exactly one
//! node must act (advisory locks). What a node adds is what only it knows:
//! - [`spill`]: "this node is full": a call that would queue past
//!   `OL_SPILL_QUEUE` is answered 503 `X-Ol-Node-Full: 1` before any handler
//!   ran, which HAProxy retries on another node;
//! - [`Node::drain`]: a stopping node fails `/healthz` first, for
//!   `OL_DRAIN_S`, so HAProxy stops sending it calls before it closes;
//! - [`prepare`]: a node that never saw a deploy installs the version's
//!   pinned packages from the stored resolution before its first call;
//! - [`lock`]: advisory locks for jobs one node does for all.

pub mod lock;
pub mod node;
pub mod prepare;
pub mod spill;

use axum::extract::State;
use axum::http::StatusCode;

use crate::state::AppState;

pub use node::Node;
pub use prepare::prepare;

/// `GET /healthz`: 200 while the node takes calls, 503 once it drains.
pub async fn healthz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.node.draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}
