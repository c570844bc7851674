//! The `reload` rule: only backends and `local-only` may change without a restart.
//!
//! Go receptor compares the text of every non-reloadable item of the file before and
//! after. This compares the typed items instead, so re-formatting a file (key order,
//! quoting, `0660` vs `432`) is not a change, while any change of meaning is. The first
//! new or changed item is reported (core items first, then plugin sections in file
//! order), else the first removed one, with Go's messages.

use super::error::ReloadError;
use super::model::Config;
use super::schema::RELOADABLE;

/// Checks that `new` differs from `old` only in reloadable items
/// (`tcp-peer`, `tcp-listener`, `ws-peer`, `ws-listener`, `udp-peer`, `udp-listener`,
/// `local-only`).
pub fn reload_check(old: &Config, new: &Config) -> Result<(), ReloadError> {
    let before = fixed_items(old);
    let after = fixed_items(new);
    if let Some((kind, _)) = after.iter().find(|item| !before.contains(item)) {
        return Err(ReloadError::ModifiedOrAdded { kind: kind.clone() });
    }
    if let Some((kind, _)) = before.iter().find(|item| !after.contains(item)) {
        return Err(ReloadError::Removed { kind: kind.clone() });
    }
    Ok(())
}

/// Every non-reloadable item as (kind, canonical JSON).
fn fixed_items(config: &Config) -> Vec<(String, serde_json::Value)> {
    fn json<T: serde::Serialize>(value: &T) -> serde_json::Value {
        serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
    }
    fn each<T: serde::Serialize>(
        out: &mut Vec<(String, serde_json::Value)>,
        kind: &str,
        items: &[T],
    ) {
        out.extend(items.iter().map(|item| (kind.to_owned(), json(item))));
    }
    let mut out = vec![
        ("node".to_owned(), json(&config.node)),
        ("log-level".to_owned(), json(&config.log_level)),
        ("log-format".to_owned(), json(&config.log_format)),
        ("metrics".to_owned(), json(&config.metrics)),
        ("mesh-page".to_owned(), json(&config.mesh_page)),
        ("control-limits".to_owned(), json(&config.control_limits)),
        ("mesh-limits".to_owned(), json(&config.mesh_limits)),
    ];
    if config.trace {
        out.push(("trace".to_owned(), serde_json::Value::Bool(true)));
    }
    each(&mut out, "control-service", &config.control_services);
    each(&mut out, "plugins", &config.plugins);
    each(&mut out, "plugins", &config.isolated_plugins);
    if let Some(timeout) = &config.plugin_call_timeout {
        out.push(("plugins".to_owned(), json(timeout)));
    }
    each(&mut out, "tls-server", &config.tls_servers);
    each(&mut out, "tls-client", &config.tls_clients);
    if let Some(signing) = &config.work_signing {
        out.push(("work-signing".to_owned(), json(signing)));
    }
    if let Some(verification) = &config.work_verification {
        out.push(("work-verification".to_owned(), json(verification)));
    }
    each(&mut out, "tcp-server", &config.tcp_servers);
    each(&mut out, "tcp-client", &config.tcp_clients);
    each(&mut out, "udp-server", &config.udp_servers);
    each(&mut out, "udp-client", &config.udp_clients);
    each(&mut out, "unix-socket-server", &config.unix_socket_servers);
    each(&mut out, "unix-socket-client", &config.unix_socket_clients);
    each(&mut out, "command-service", &config.command_services);
    each(&mut out, "ip-router", &config.ip_routers);
    out.extend(
        config
            .sections
            .iter()
            .filter(|s| !RELOADABLE.contains(&s.kind.as_str()))
            .map(|s| (s.kind.clone(), s.value.clone())),
    );
    out
}
