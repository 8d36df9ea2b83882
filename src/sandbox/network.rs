//! The function network and its fence.
//!
//! Function containers join one Docker bridge network (`OL_NETWORK`) with a
//! fixed bridge interface name and no traffic between containers. At start
//! the manager installs iptables rules for that interface, so a function
//! reaches the internet but not:
//!
//! - the host (any of its addresses, so also the manager's API and every
//!   port published on it): `INPUT -i <bridge> -j DROP`;
//! - other functions: `DOCKER-USER -i <bridge> -o <bridge> -j DROP`;
//! - other Docker networks (Postgres in the compose stack):
//!   `DOCKER-USER -i <bridge> -o docker0|br-+|ol-+ -j DROP`;
//! - link-local addresses, the cloud metadata endpoint among them:
//!   `DOCKER-USER -i <bridge> -d 169.254.0.0/16 -j DROP`.
//!
//! Each rule carries the comment `openlambda:<network>`, is added only when
//! missing (a restart adds nothing twice) and is left in place on stop: it
//! matches only this network's interface, so it is harmless without it and
//! already right when the network comes back. Functions with `network: none`
//! get Docker's `none` network instead: a loopback interface and nothing else.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Context};
use sha2::{Digest, Sha256};

use super::docker::Sandboxes;
use crate::config::NetworkIsolation;

/// Docker's option naming a bridge network's interface.
const BRIDGE_NAME: &str = "com.docker.network.bridge.name";
/// Docker's option allowing traffic between a bridge's containers.
const ICC: &str = "com.docker.network.bridge.enable_icc";

/// The bridge interface of the network named `network`: `ol-` and a hash,
/// within Linux's 15 characters, the same on every start.
pub fn bridge_name(network: &str) -> String {
    let digest = Sha256::digest(network.as_bytes());
    let hex: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    format!("ol-{hex}")
}

/// The comment that marks the rules of `network`, so they can be listed and
/// removed: `iptables -S | grep openlambda:<network>`.
pub fn rule_tag(network: &str) -> String {
    format!("openlambda:{network}")
}

/// The rules that fence `bridge` in, as (chain, rule) pairs.
pub fn rules(bridge: &str, tag: &str) -> Vec<(&'static str, Vec<String>)> {
    let rule = |parts: &[&str]| {
        let mut rule: Vec<String> = vec!["-i".into(), bridge.into()];
        rule.extend(parts.iter().map(|p| p.to_string()));
        rule.extend(["-m", "comment", "--comment", tag, "-j", "DROP"].map(String::from));
        rule
    };
    vec![
        ("INPUT", rule(&[])),
        ("DOCKER-USER", rule(&["-o", bridge])),
        ("DOCKER-USER", rule(&["-o", "docker0"])),
        ("DOCKER-USER", rule(&["-o", "br-+"])),
        ("DOCKER-USER", rule(&["-o", "ol-+"])),
        ("DOCKER-USER", rule(&["-d", "169.254.0.0/16"])),
    ]
}

impl Sandboxes {
    /// Creates the function network if missing and fences it in, as
    /// `OL_NETWORK_ISOLATION` asks: when the rules cannot be installed the
    /// manager refuses to start (`required`, the default) or says so loudly
    /// and runs open (`warn`).
    pub async fn ensure_network(&self) -> anyhow::Result<()> {
        // Docker does not keep network names unique, and iptables checks
        // then adds: two managers in one process (tests) doing either at
        // once would make two networks or add a rule twice.
        static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _guard = ONE_AT_A_TIME.lock().await;
        let bridge = self.network_bridge().await?;
        let network = &self.settings.network;
        match self.settings.network_isolation {
            NetworkIsolation::Off => {
                tracing::warn!(%network, "OL_NETWORK_ISOLATION=off: functions are not fenced \
                    off from the host, other containers or link-local addresses by the manager");
                Ok(())
            }
            isolation => match fence(&bridge, &rule_tag(network)).await {
                Ok(()) => {
                    tracing::info!(%network, %bridge, "function network fenced (iptables)");
                    Ok(())
                }
                Err(e) if isolation == NetworkIsolation::Warn => {
                    tracing::error!(%network, %bridge, error = %format!("{e:#}"),
                        "FUNCTIONS ARE NOT ISOLATED: they can reach this host (the manager's API, \
                         published ports), other containers and link-local addresses such as \
                         169.254.169.254; fence the network yourself (README, Security model)");
                    Ok(())
                }
                Err(e) => Err(e.context(format!(
                    "could not fence off the function network {network} (bridge {bridge}); \
                     run the manager as root in the host's network namespace with iptables \
                     installed, or set OL_NETWORK_ISOLATION=warn to run without the fence \
                     (functions can then reach the host and link-local addresses)"
                ))),
            },
        }
    }

    /// Creates the network when missing and returns its bridge interface.
    async fn network_bridge(&self) -> anyhow::Result<String> {
        let name = &self.settings.network;
        let inspect = None::<bollard::query_parameters::InspectNetworkOptions>;
        if let Ok(existing) = self.docker.inspect_network(name, inspect).await {
            let options = existing.options.unwrap_or_default();
            if options.get(ICC).map(String::as_str) != Some("false") {
                tracing::warn!(network = %name, "the function network allows traffic between \
                    containers; the fence drops it, but recreate the network to have Docker \
                    drop it too");
            }
            // A network made before bridges were named has Docker's name.
            return Ok(match options.get(BRIDGE_NAME) {
                Some(bridge) => bridge.clone(),
                None => {
                    let id = existing.id.unwrap_or_default();
                    format!("br-{}", id.get(..12).unwrap_or(&id))
                }
            });
        }
        let bridge = bridge_name(name);
        let request = bollard::models::NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".into()),
            options: Some(HashMap::from([
                (ICC.to_string(), "false".to_string()),
                (BRIDGE_NAME.to_string(), bridge.clone()),
            ])),
            labels: Some(HashMap::from([(
                "openlambda.network".to_string(),
                "1".to_string(),
            )])),
            ..Default::default()
        };
        self.docker
            .create_network(request)
            .await
            .with_context(|| format!("creating docker network {name}"))?;
        Ok(bridge)
    }
}

/// Installs the missing rules for `bridge`, then checks that all are there.
async fn fence(bridge: &str, tag: &str) -> anyhow::Result<()> {
    // Rules on an interface this process cannot see would guard another
    // network namespace (a manager in a container) and fence nothing.
    if !std::path::Path::new("/sys/class/net").join(bridge).exists() {
        bail!(
            "the bridge {bridge} is not visible here: the manager does not run in the \
             host's network namespace"
        );
    }
    for (chain, rule) in rules(bridge, tag) {
        if iptables(&["-C", chain], &rule).await.is_ok() {
            continue;
        }
        iptables(&["-I", chain, "1"], &rule).await?;
        iptables(&["-C", chain], &rule)
            .await
            .with_context(|| format!("the rule in {chain} is missing after adding it"))?;
    }
    Ok(())
}

/// Runs `iptables -w <args> <rule>`; the error carries what it printed.
async fn iptables(args: &[&str], rule: &[String]) -> anyhow::Result<()> {
    let out = tokio::process::Command::new("iptables")
        .arg("-w")
        .arg("5")
        .args(args)
        .args(rule)
        .output()
        .await
        .context("running iptables (is it installed? Debian: apt-get install iptables)")?;
    if out.status.success() {
        return Ok(());
    }
    Err(anyhow!(
        "iptables {} {}: {}",
        args.join(" "),
        rule.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_names_fit_linux_and_are_stable() {
        let a = bridge_name("openlambda-test-a-rather-long-network-name");
        assert!(a.len() <= 15, "{a}");
        assert!(a.starts_with("ol-"));
        assert_eq!(a, bridge_name("openlambda-test-a-rather-long-network-name"));
        assert_ne!(a, bridge_name("openlambda"));
    }

    #[test]
    fn every_rule_drops_only_traffic_from_the_bridge() {
        let rules = rules("ol-abc", "openlambda:n");
        assert!(rules.iter().any(|(c, _)| *c == "INPUT"));
        assert!(rules
            .iter()
            .any(|(_, r)| r.windows(2).any(|w| w == ["-d", "169.254.0.0/16"])));
        for (_, rule) in rules {
            assert_eq!(rule[..2], ["-i", "ol-abc"]);
            assert!(rule.ends_with(&["-j".to_string(), "DROP".to_string()]));
            assert!(rule.contains(&"openlambda:n".to_string()));
        }
    }
}
