//! The containers the engine creates for one test manager, seen as they
//! happen.
//!
//! The engine keeps only its last 256 events, and a busy engine (tests and
//! builds side by side) passes that many in seconds: asking afterwards for
//! the events since a time can miss containers, and a count of zero would
//! then prove nothing. A stream subscribed before the action misses none.
//! To know when the stream has caught up, [`Watch::created`] creates (and
//! at once removes, never started) a marked container: events arrive in
//! order, so once the mark's creation is seen, so is every container
//! created before it.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptions, EventsOptions, RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::helpers::TestApp;

/// The label that tells a mark from the containers being watched.
const MARK: &str = "openlambda.test-mark";

pub struct Watch {
    docker: Docker,
    instance: String,
    /// The labels of each container created, in order.
    created: mpsc::UnboundedReceiver<HashMap<String, String>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Watch {
    /// Watches the containers of `app`'s instance from now on.
    pub async fn start(app: &TestApp) -> Self {
        let instance = app.settings.instance.clone();
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            ("event".to_string(), vec!["create".to_string()]),
            (
                "label".to_string(),
                vec![format!("openlambda.instance={instance}")],
            ),
        ]);
        let mut events = app.docker.events(Some(EventsOptions {
            filters: Some(filters),
            ..Default::default()
        }));
        let (tx, created) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            while let Some(Ok(event)) = events.next().await {
                let labels = event.actor.and_then(|a| a.attributes).unwrap_or_default();
                if tx.send(labels).is_err() {
                    break;
                }
            }
        });
        let mut watch = Self {
            docker: app.docker.clone(),
            instance,
            created,
            reader,
        };
        // The subscription is live once a mark comes through it.
        watch.created().await;
        watch
    }

    /// The labels of every container created since the last call (or the start).
    pub async fn created(&mut self) -> Vec<HashMap<String, String>> {
        let mut seen = Vec::new();
        // A mark made before the subscription was live never comes: make another.
        for _ in 0..30 {
            let mark = self.mark().await;
            let wait = tokio::time::timeout(Duration::from_secs(2), async {
                while let Some(labels) = self.created.recv().await {
                    match labels.get(MARK) {
                        Some(m) if *m == mark => return true,
                        Some(_) => {}
                        None => seen.push(labels),
                    }
                }
                panic!("the engine's event stream ended");
            });
            if wait.await.is_ok() {
                return seen;
            }
        }
        panic!("no mark came through the engine's event stream within a minute");
    }

    /// The function of each builder container created since the last call.
    pub async fn builders(&mut self) -> Vec<String> {
        self.created()
            .await
            .into_iter()
            .filter_map(|labels| labels.get("openlambda.builder").cloned())
            .collect()
    }

    /// Creates and removes a container labelled with a new mark; returns the mark.
    async fn mark(&self) -> String {
        let mark = uuid::Uuid::new_v4().simple().to_string();
        let body = ContainerCreateBody {
            image: Some(openlambda::testing::base_image()),
            cmd: Some(vec!["true".into()]),
            labels: Some(HashMap::from([
                ("openlambda.instance".to_string(), self.instance.clone()),
                (MARK.to_string(), mark.clone()),
            ])),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(None::<CreateContainerOptions>, body)
            .await
            .expect("create a mark container");
        let remove = RemoveContainerOptionsBuilder::default().force(true).build();
        let _ = self
            .docker
            .remove_container(&created.id, Some(remove))
            .await;
        mark
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.reader.abort();
    }
}
