//! The immutable picture of every service that readers see.
//!
//! A snapshot is built off the nginx event loop, then published whole: a
//! reader holds an `Arc<Snapshot>` and never waits for the writer. Each
//! service carries its node list already rendered as JSON and the generation
//! at which it last changed, so a caller can tell cheaply whether one service
//! moved.

use std::collections::HashMap;
use std::sync::Arc;

/// One service: its nodes, pre-rendered, and when they last changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Snapshot sequence number at which this service last changed.
    pub generation: u64,
    /// Index of the configured server the service comes from.
    pub server: u16,
    pub node_count: u32,
    /// JSON array of node objects (`[{"host":..,"port":..,"weight":..}]`).
    pub nodes_json: Arc<str>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Increases by one for every published change; 0 is "nothing yet".
    pub seq: u64,
    /// Keyed by the full APISIX service name,
    /// `{server url}/v1/kv/{prefix}/{service}/`.
    pub services: HashMap<Arc<str>, Service>,
    /// True when the content came from the dump file, not from Consul.
    pub from_dump: bool,
    /// True once every configured server has answered at least once.
    pub synced: bool,
    /// Unix time in microseconds at which the leader received the Consul
    /// response this snapshot was built from (0: not from a response, e.g.
    /// a dump). Wall-clock, so that every process of the host can measure
    /// propagation against it.
    pub received_us: u64,
}

impl Snapshot {
    pub fn get(&self, name: &str) -> Option<&Service> {
        self.services.get(name)
    }

    pub fn node_count(&self) -> u64 {
        self.services
            .values()
            .map(|s| u64::from(s.node_count))
            .sum()
    }

    /// Service names in byte order, for output that must be stable.
    pub fn sorted_names(&self) -> Vec<&Arc<str>> {
        let mut names: Vec<_> = self.services.keys().collect();
        names.sort_unstable();
        names
    }

    /// `{"<name>":[nodes],...}` in name order: APISIX's `all_nodes()` shape.
    pub fn all_nodes_json(&self) -> String {
        let total: usize = self
            .services
            .iter()
            .map(|(k, v)| k.len() + v.nodes_json.len() + 4)
            .sum();
        let mut out = String::with_capacity(total + 2);
        out.push('{');
        for (i, name) in self.sorted_names().into_iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_json_string(&mut out, name);
            out.push(':');
            if let Some(s) = self.services.get(name) {
                out.push_str(&s.nodes_json);
            }
        }
        out.push('}');
        out
    }
}

/// Appends `s` as a JSON string literal.
pub fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(json: &str, n: u32) -> Service {
        Service {
            generation: 1,
            server: 0,
            node_count: n,
            nodes_json: json.into(),
        }
    }

    #[test]
    fn all_nodes_is_sorted_and_valid_json() {
        let mut s = Snapshot::default();
        s.services
            .insert("b/".into(), svc(r#"[{"host":"h","port":1,"weight":1}]"#, 1));
        s.services.insert("a\"/".into(), svc("[]", 0));
        let out = s.all_nodes_json();
        assert_eq!(
            out,
            r#"{"a\"/":[],"b/":[{"host":"h","port":1,"weight":1}]}"#
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["b/"][0]["port"], 1);
        assert_eq!(s.node_count(), 1);
    }
}
