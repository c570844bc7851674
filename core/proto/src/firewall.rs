//! Firewall rules (`node.firewallrules`).
//!
//! A receptor node filters every DATA message it handles (locally originated,
//! delivered locally, or forwarded) through an ordered list of rules. Each rule names
//! an action (`accept`, `reject` or `drop`) and up to four fields (`fromnode`,
//! `tonode`, `fromservice`, `toservice`). A field is either an exact string or, when
//! written `/regex/`, a regular expression that must match the whole value. The
//! first rule whose fields all match decides; without a match the message is
//! accepted. ROUTE and SVCAD messages are never filtered.
//!
//! Compatibility with Go receptor 1.6.9:
//!
//! * keys are case-insensitive, every value must be a string, the action is
//!   case-insensitive; an empty field value matches everything;
//! * a regex is compiled as `^inner$` (no group around `inner`: `/a|b/` means
//!   "starts with `a` or ends with `b`", exactly like the Go binary);
//! * a value that starts with `/` but does not end with `/`, or whose regex does not
//!   compile, silently becomes a wildcard in Go. This module reproduces that, and
//!   reports each such field in [`FirewallRules::warnings`] so the daemon can log it.
//!
//! Deciding allocates nothing: rules are compiled once at parse time.

use regex::Regex;
use serde_json::Value;

/// What a rule does with a matching message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Let the message through.
    Accept,
    /// Discard it and tell the sender (`blocked by firewall` unreachable).
    Reject,
    /// Discard it silently.
    Drop,
}

/// Errors in the `firewallrules` configuration, worded as Go receptor words them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FirewallError {
    /// `firewallrules` is not a list.
    #[error("firewall rules must be a list")]
    NotAList,
    /// One rule is invalid; `index` counts from 0.
    #[error("error in rule {index}: {reason}")]
    Rule {
        /// Position of the rule in the list.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
}

/// One field test of a rule.
#[derive(Debug, Clone)]
enum Matcher {
    /// Exact string equality.
    Exact(String),
    /// Anchored regular expression.
    Regex(Regex),
}

impl Matcher {
    fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Exact(s) => s == value,
            Matcher::Regex(re) => re.is_match(value),
        }
    }
}

/// Which message field a matcher looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    FromNode,
    ToNode,
    FromService,
    ToService,
}

impl Field {
    fn key(self) -> &'static str {
        match self {
            Field::FromNode => "fromnode",
            Field::ToNode => "tonode",
            Field::FromService => "fromservice",
            Field::ToService => "toservice",
        }
    }
}

/// One compiled rule.
#[derive(Debug, Clone)]
struct Rule {
    action: Action,
    from_node: Option<Matcher>,
    to_node: Option<Matcher>,
    from_service: Option<Matcher>,
    to_service: Option<Matcher>,
}

fn field_matches(m: &Option<Matcher>, value: &str) -> bool {
    m.as_ref().is_none_or(|m| m.matches(value))
}

impl Rule {
    fn matches(
        &self,
        from_node: &str,
        from_service: &str,
        to_node: &str,
        to_service: &str,
    ) -> bool {
        field_matches(&self.from_node, from_node)
            && field_matches(&self.to_node, to_node)
            && field_matches(&self.from_service, from_service)
            && field_matches(&self.to_service, to_service)
    }
}

/// An ordered, compiled list of firewall rules.
#[derive(Debug, Clone, Default)]
pub struct FirewallRules {
    rules: Vec<Rule>,
    warnings: Vec<String>,
}

impl FirewallRules {
    /// Parses `node.firewallrules`: a JSON list of maps (or `null` for no rules).
    pub fn parse(value: &Value) -> Result<FirewallRules, FirewallError> {
        let list = match value {
            Value::Null => return Ok(FirewallRules::default()),
            Value::Array(list) => list,
            _ => return Err(FirewallError::NotAList),
        };
        let mut out = FirewallRules::default();
        for (index, item) in list.iter().enumerate() {
            let rule = parse_rule(item, index, &mut out.warnings)
                .map_err(|reason| FirewallError::Rule { index, reason })?;
            out.rules.push(rule);
        }
        Ok(out)
    }

    /// Decides the fate of one DATA message: the first matching rule wins, and a
    /// message that matches no rule is accepted.
    pub fn decide(
        &self,
        from_node: &str,
        from_service: &str,
        to_node: &str,
        to_service: &str,
    ) -> Action {
        self.rules
            .iter()
            .find(|r| r.matches(from_node, from_service, to_node, to_service))
            .map_or(Action::Accept, |r| r.action)
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True when there are no rules (everything is accepted).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Fields that were turned into wildcards because their regex was malformed
    /// (Go's silent behaviour); the daemon logs these as warnings.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

fn parse_rule(item: &Value, index: usize, warnings: &mut Vec<String>) -> Result<Rule, String> {
    let Value::Object(map) = item else {
        return Err("invalid firewall rule. see documentation for syntax".to_string());
    };
    let mut action: Option<&str> = None;
    let mut fields: [(Field, Option<&str>); 4] = [
        (Field::FromNode, None),
        (Field::ToNode, None),
        (Field::FromService, None),
        (Field::ToService, None),
    ];
    for (key, val) in map {
        let Value::String(val) = val else {
            return Err(format!("invalid firewall rule. {key} must be a string"));
        };
        let lower = key.to_ascii_lowercase();
        if lower == "action" {
            action = Some(val);
            continue;
        }
        match fields.iter_mut().find(|(f, _)| f.key() == lower) {
            Some(slot) => slot.1 = Some(val),
            // Go's message carries this typo.
            None => return Err(format!("invalid filewall rule. unknown key: {key}")),
        }
    }
    let action_str = action.unwrap_or("");
    let action = match action_str.to_ascii_lowercase().as_str() {
        "accept" => Action::Accept,
        "reject" => Action::Reject,
        "drop" => Action::Drop,
        _ => return Err(format!("unknown action: {action_str}")),
    };
    let mut compiled =
        fields.map(|(field, val)| val.and_then(|v| build_matcher(index, field, v, warnings)));
    Ok(Rule {
        action,
        from_node: compiled[0].take(),
        to_node: compiled[1].take(),
        from_service: compiled[2].take(),
        to_service: compiled[3].take(),
    })
}

/// Compiles one field; `None` means "matches everything".
fn build_matcher(
    index: usize,
    field: Field,
    pattern: &str,
    warnings: &mut Vec<String>,
) -> Option<Matcher> {
    if pattern.is_empty() {
        return None;
    }
    let Some(rest) = pattern.strip_prefix('/') else {
        return Some(Matcher::Exact(pattern.to_string()));
    };
    let Some(inner) = rest.strip_suffix('/') else {
        warnings.push(format!(
            "firewall rule {index}: {} value {pattern:?} starts with / but does not end with /: \
             it matches everything",
            field.key()
        ));
        return None;
    };
    match Regex::new(&format!("^{inner}$")) {
        Ok(re) => Some(Matcher::Regex(re)),
        Err(e) => {
            let first_line = e.to_string().lines().last().unwrap_or_default().to_string();
            warnings.push(format!(
                "firewall rule {index}: {} regex {pattern:?} does not compile ({first_line}): \
                 it matches everything",
                field.key()
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(v: Value) -> FirewallRules {
        match FirewallRules::parse(&v) {
            Ok(r) => r,
            Err(e) => panic!("parse failed: {e}"),
        }
    }

    fn err(v: Value) -> String {
        match FirewallRules::parse(&v) {
            Ok(_) => panic!("parse unexpectedly succeeded"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn no_rules_accepts_everything() {
        let r = rules(Value::Null);
        assert!(r.is_empty());
        assert_eq!(r.decide("a", "b", "c", "d"), Action::Accept);
        let r = rules(json!([]));
        assert_eq!(r.decide("a", "b", "c", "d"), Action::Accept);
    }

    #[test]
    fn table() {
        let r = rules(json!([
            {"Action": "DROP", "FromNode": "evil"},
            {"action": "reject", "tonode": "/secret-[0-9]+/", "toservice": "control"},
            {"action": "accept", "fromservice": "/ping|unr/"},
            {"action": "drop", "toservice": "/x.*/"},
            {"action": "accept", "tonode": ""},
        ]));
        assert!(r.warnings().is_empty());
        // (from_node, from_service, to_node, to_service, expected)
        let cases = [
            ("evil", "s", "n", "t", Action::Drop),
            ("EVIL", "s", "n", "xt", Action::Drop), // exact match is case-sensitive; rule 4 drops xt
            ("good", "s", "secret-12", "control", Action::Reject),
            ("good", "s", "secret-12", "other", Action::Accept),
            ("good", "s", "secret-x", "control", Action::Accept),
            ("good", "s", "xsecret-1", "control", Action::Accept), // anchored at start
            ("good", "s", "secret-1x", "control", Action::Accept), // anchored at end
            // `^ping|unr$`: starts with "ping" or ends with "unr" (Go: no group)
            ("a", "pingfoo", "b", "xyz", Action::Accept),
            ("a", "foounr", "b", "xyz", Action::Accept),
            ("a", "foo", "b", "xyz", Action::Drop),
            ("a", "foo", "b", "x", Action::Drop),
            ("a", "foo", "b", "yx", Action::Accept),
        ];
        for (fnode, fsvc, tnode, tsvc, want) in cases {
            assert_eq!(
                r.decide(fnode, fsvc, tnode, tsvc),
                want,
                "{fnode} {fsvc} {tnode} {tsvc}"
            );
        }
    }

    #[test]
    fn first_match_wins() {
        let r = rules(json!([
            {"action": "accept", "fromnode": "a"},
            {"action": "drop"},
        ]));
        assert_eq!(r.decide("a", "s", "b", "t"), Action::Accept);
        assert_eq!(r.decide("c", "s", "b", "t"), Action::Drop);
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn malformed_regex_becomes_wildcard_with_warning() {
        let r = rules(json!([
            {"action": "drop", "fromnode": "/unterminated", "toservice": "svc"},
            {"action": "reject", "tonode": "/[/"},
            {"action": "accept", "tonode": "/"},
        ]));
        assert_eq!(r.warnings().len(), 3, "{:?}", r.warnings());
        assert!(r.warnings()[0].contains("fromnode"), "{:?}", r.warnings());
        assert!(
            r.warnings()[1].contains("does not compile"),
            "{:?}",
            r.warnings()
        );
        // rule 0: fromnode is a wildcard, toservice still exact
        assert_eq!(r.decide("anything", "s", "n", "svc"), Action::Drop);
        // rule 1: tonode is a wildcard, so everything else is rejected
        assert_eq!(r.decide("anything", "s", "n", "other"), Action::Reject);
    }

    #[test]
    fn errors_worded_like_go() {
        assert_eq!(
            err(json!({"action": "drop"})),
            "firewall rules must be a list"
        );
        assert_eq!(
            err(json!([{"action": "accept"}, "drop"])),
            "error in rule 1: invalid firewall rule. see documentation for syntax"
        );
        assert_eq!(
            err(json!([{"action": "drop", "fromnode": 5}])),
            "error in rule 0: invalid firewall rule. fromnode must be a string"
        );
        assert_eq!(
            err(json!([{"action": "drop", "node": "x"}])),
            "error in rule 0: invalid filewall rule. unknown key: node"
        );
        assert_eq!(
            err(json!([{"fromnode": "x"}])),
            "error in rule 0: unknown action: "
        );
        assert_eq!(
            err(json!([{"action": "allow"}])),
            "error in rule 0: unknown action: allow"
        );
    }
}
