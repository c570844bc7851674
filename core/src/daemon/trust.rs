//! What a node trusts: its named TLS configurations (built once at start-up, with
//! the check that the node's own certificates name it) and its firewall rules.

use std::borrow::Cow;
use std::sync::Arc;

use anyhow::Context;
use receptor_proto::firewall::{Action, FirewallRules};
use serde_json::Value;

use crate::config::{Config, TlsClientConfig, TlsServerConfig};
use crate::mesh::{Firewall, FirewallMessage, FirewallVerdict, Mesh};
use crate::tls::TlsRegistry;

/// Builds every `tls-server` and `tls-client` of the configuration. Fails, as Go
/// receptor does at start-up, when a file is unusable or a certificate does not carry
/// the node ID as ReceptorName (unless `skipreceptornamescheck`).
pub(crate) fn tls_registry(config: &Config) -> anyhow::Result<TlsRegistry> {
    let mut reg = TlsRegistry::new();
    for s in &config.tls_servers {
        reg.add_server(&config.node.id, &server_json(s))
            .with_context(|| format!("tls-server {}", s.name))?;
    }
    for c in &config.tls_clients {
        reg.add_client(&config.node.id, &client_json(c))
            .with_context(|| format!("tls-client {}", c.name))?;
    }
    Ok(reg)
}

/// A `tls-server` as the object [`TlsRegistry`] and backend plugins read: file paths
/// and hex fingerprints.
pub(crate) fn server_json(c: &TlsServerConfig) -> Value {
    serde_json::json!({
        "name": c.name,
        "cert": c.cert,
        "key": c.key,
        "requireclientcert": c.require_client_cert,
        "clientcas": c.client_cas,
        "pinnedclientcert": c.pinned_client_certs.iter().map(|p| hex(p)).collect::<Vec<_>>(),
        "skipreceptornamescheck": c.skip_receptor_names_check,
        "mintls13": c.min_tls13,
    })
}

/// A `tls-client` as the object [`TlsRegistry`] and backend plugins read.
pub(crate) fn client_json(c: &TlsClientConfig) -> Value {
    serde_json::json!({
        "name": c.name,
        "cert": c.cert,
        "key": c.key,
        "rootcas": c.root_cas,
        "insecureskipverify": c.insecure_skip_verify,
        "pinnedservercert": c.pinned_server_certs.iter().map(|p| hex(p)).collect::<Vec<_>>(),
        "skipreceptornamescheck": c.skip_receptor_names_check,
        "mintls13": c.min_tls13,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `node.firewallrules` as the mesh's firewall.
struct RulesFirewall(FirewallRules);

/// A service name as the rules see it (service names are ASCII in practice).
fn service_str(raw: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(raw)
}

impl Firewall for RulesFirewall {
    fn check(&self, msg: &FirewallMessage<'_>) -> FirewallVerdict {
        let action = self.0.decide(
            msg.from_node,
            &service_str(msg.from_service),
            msg.to_node,
            &service_str(msg.to_service),
        );
        match action {
            Action::Accept => FirewallVerdict::Accept,
            Action::Reject => FirewallVerdict::Reject,
            Action::Drop => FirewallVerdict::Drop,
        }
    }
}

/// Parses `node.firewallrules`, logs what Go would silently turn into wildcards, and
/// installs the rules (none: no firewall at all).
pub(crate) async fn install_firewall(mesh: &Mesh, config: &Config) -> anyhow::Result<()> {
    let list = Value::Array(
        config
            .node
            .firewall_rules
            .iter()
            .cloned()
            .map(Value::Object)
            .collect(),
    );
    let rules = FirewallRules::parse(&list).context("error in node firewallrules")?;
    for warning in rules.warnings() {
        tracing::warn!("firewall rules: {warning}");
    }
    if rules.is_empty() {
        return Ok(());
    }
    tracing::info!("installing {} firewall rules", rules.len());
    mesh.set_firewall(Some(Arc::new(RulesFirewall(rules))))
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(rules: Value, from: (&str, &[u8]), to: (&str, &[u8])) -> FirewallVerdict {
        let rules = FirewallRules::parse(&rules).unwrap_or_default();
        RulesFirewall(rules).check(&FirewallMessage {
            from_node: from.0,
            to_node: to.0,
            from_service: from.1,
            to_service: to.1,
        })
    }

    #[test]
    fn rules_map_to_verdicts() {
        let rules = serde_json::json!([
            {"action": "drop", "toservice": "/ec.*/"},
            {"action": "reject", "fromnode": "a"},
        ]);
        let v = |from, to| verdict(rules.clone(), from, to);
        assert_eq!(v(("a", b"x"), ("b", b"echo")), FirewallVerdict::Drop);
        assert_eq!(v(("a", b"x"), ("b", b"ping")), FirewallVerdict::Reject);
        assert_eq!(v(("c", b"x"), ("b", b"ping")), FirewallVerdict::Accept);
    }
}
