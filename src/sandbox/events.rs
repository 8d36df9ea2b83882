//! The Docker side of [`Engine::events`] and [`Engine::running`]: the
//! engine's event stream filtered to this instance's containers, and the
//! list to rebuild from when that stream was lost; and how a create that
//! failed for want of the function network (removed behind the manager's
//! back) is recognised, so it is made again.
//!
//! [`Engine::events`]: super::Engine::events
//! [`Engine::running`]: super::Engine::running

use std::collections::{HashMap, HashSet};

use anyhow::Context;
use bollard::query_parameters::{EventsOptions, ListContainersOptionsBuilder};
use futures_util::StreamExt;

use super::docker::Sandboxes;
use super::engine::{EngineEvent, EventStream};
use crate::labels::{LABEL_INSTANCE, LABEL_SANDBOX};

/// Container actions after which it never answers again.
const GONE: [&str; 3] = ["die", "oom", "destroy"];

impl Sandboxes {
    fn instance_filter(&self) -> HashMap<String, Vec<String>> {
        HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_INSTANCE}={}", self.settings.instance)],
        )])
    }

    /// Follows the engine's container events of this instance; ends at the
    /// first error (the engine went away or the connection broke).
    pub(super) fn gone_events(&self) -> EventStream {
        let mut filters = self.instance_filter();
        filters.insert("type".into(), vec!["container".into()]);
        filters.insert("event".into(), GONE.iter().map(|e| e.to_string()).collect());
        let options = EventsOptions {
            filters: Some(filters),
            ..Default::default()
        };
        let stream = self
            .docker
            .events(Some(options))
            .take_while(|event| {
                if let Err(e) = event {
                    tracing::warn!(error = %e, "the Docker event stream ended");
                }
                std::future::ready(event.is_ok())
            })
            .filter_map(|event| {
                std::future::ready(event.ok().and_then(|message| {
                    let why = message.action?;
                    let sandbox = message.actor?.attributes?.remove(LABEL_SANDBOX)?;
                    Some(EngineEvent::Gone { sandbox, why })
                }))
            });
        Box::pin(stream)
    }

    /// Sandbox ids of this instance's running and paused containers.
    pub(super) async fn running_sandboxes(&self) -> anyhow::Result<HashSet<String>> {
        let options = ListContainersOptionsBuilder::default()
            .filters(&self.instance_filter())
            .build();
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .context("listing this manager's containers")?;
        Ok(containers
            .into_iter()
            .filter_map(|c| c.labels?.remove(LABEL_SANDBOX))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use crate::sandbox::engine::network_missing;
    use crate::sandbox::Failure;

    fn engine_error(status_code: u16, message: &str) -> Failure {
        let e = bollard::errors::Error::DockerResponseServerError {
            status_code,
            message: message.into(),
        };
        Failure::Platform(anyhow::Error::new(e).context("starting the function container"))
    }

    #[test]
    fn only_a_missing_network_is_recognised() {
        assert!(network_missing(&engine_error(
            404,
            "network openlambda not found"
        )));
        assert!(!network_missing(&engine_error(404, "No such image: x")));
        assert!(!network_missing(&engine_error(500, "network is ambiguous")));
        assert!(!network_missing(&Failure::Crashed("network".into())));
    }
}
