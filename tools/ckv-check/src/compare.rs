//! Puts APISIX's and ckv's readings of one server's keys side by side and
//! explains every difference in one line.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;

use crate::apisix::{ApisixKey, ApisixNode, ApisixRules};
use crate::ckv_side::{CkvKey, CkvView, Settings};

/// One explained finding. `difference` findings decide the exit code;
/// the others are notes (behaviour to know, no change in the nodes).
#[derive(Debug, Clone)]
pub struct Finding {
    /// Stable machine name, e.g. `newly_accepted`.
    pub kind: &'static str,
    pub difference: bool,
    /// The Consul key concerned, if any.
    pub key: Option<String>,
    pub text: String,
}

impl Finding {
    pub fn diff(kind: &'static str, key: Option<&str>, text: String) -> Finding {
        Finding {
            kind,
            difference: true,
            key: key.map(str::to_string),
            text,
        }
    }

    pub fn note(kind: &'static str, key: Option<&str>, text: String) -> Finding {
        Finding {
            kind,
            difference: false,
            key: key.map(str::to_string),
            text,
        }
    }
}

/// A node as the gateway would see it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    pub host: String,
    pub port: u64,
    pub weight: Value,
    pub priority: Option<Value>,
}

#[derive(Debug, Clone)]
pub struct ServiceReport {
    pub name: String,
    /// None: the service does not exist on that side.
    pub apisix: Option<Vec<NodeView>>,
    pub ckv: Option<Vec<NodeView>>,
    pub findings: Vec<Finding>,
}

impl ServiceReport {
    pub fn differs(&self) -> bool {
        self.findings.iter().any(|f| f.difference)
    }
}

/// Both readings of one key.
#[derive(Debug, Clone)]
pub struct KeyReport {
    pub key: String,
    pub apisix: String,
    pub ckv: String,
}

#[derive(Debug, Clone, Default)]
pub struct ServerReport {
    pub url: String,
    pub status: u16,
    pub index: Option<u64>,
    pub bytes: usize,
    pub services: Vec<ServiceReport>,
    pub findings: Vec<Finding>,
    pub keys: Vec<KeyReport>,
    /// Set when the server could not be read.
    pub error: Option<String>,
}

impl ServerReport {
    pub fn differences(&self) -> usize {
        self.findings.iter().filter(|f| f.difference).count()
            + self
                .services
                .iter()
                .map(|s| s.findings.iter().filter(|f| f.difference).count())
                .sum::<usize>()
    }
}

/// Inputs for one server.
pub struct ServerInput<'a> {
    pub url: &'a str,
    pub status: u16,
    /// Every key read (the prefix without a trailing slash).
    pub entries: &'a [(String, Option<String>)],
    pub filtered_by_acls: bool,
    pub settings: &'a Settings,
    pub apisix: &'a ApisixRules,
    /// ckv's result for the entries under `{prefix}/`.
    pub ckv: &'a CkvView,
    /// Indexes into `entries` of the keys ckv read, in order.
    pub ckv_keys: &'a [usize],
}

fn apisix_view(n: &ApisixNode) -> NodeView {
    NodeView {
        host: n.host.clone(),
        port: n.port,
        weight: n.weight_int().map_or_else(|| n.weight.clone(), Value::from),
        priority: None,
    }
}

fn ckv_view(node: &Value) -> NodeView {
    NodeView {
        host: node["host"].as_str().unwrap_or("").to_string(),
        port: node["port"].as_u64().unwrap_or(0),
        weight: node["weight"].clone(),
        priority: node.get("priority").cloned(),
    }
}

pub fn addr(host: &str, port: u64) -> String {
    format!("{host}:{port}")
}

/// Compares one server.
pub fn compare_server(input: &ServerInput<'_>) -> ServerReport {
    let s = input.settings;
    let base = format!("{}/v1/kv/", input.url);
    let mut report = ServerReport {
        url: input.url.to_string(),
        status: input.status,
        ..ServerReport::default()
    };
    let apisix_prefix = input.apisix.prefix.trim_start_matches('/');
    let ckv_of: HashMap<usize, &CkvKey> = input
        .ckv_keys
        .iter()
        .copied()
        .zip(input.ckv.keys.iter())
        .collect();

    // APISIX's services, in key order, and per-key findings.
    // Keyed by full service name; BTreeMap keeps the report sorted.
    let mut apisix_services: BTreeMap<String, Vec<(String, ApisixNode)>> = BTreeMap::new();
    let mut apisix_fatal: Option<(String, String)> = None;
    let mut key_findings: BTreeMap<String, Vec<Finding>> = BTreeMap::new();
    for (i, (key, value)) in input.entries.iter().enumerate() {
        let a = key
            .starts_with(apisix_prefix)
            .then(|| input.apisix.evaluate(key, value.as_deref()));
        let c = ckv_of.get(&i).copied();
        report.keys.push(KeyReport {
            key: key.clone(),
            apisix: match &a {
                None => "not read (outside APISIX's prefix)".into(),
                Some(ApisixKey::Node(n)) => format!(
                    "node {} weight {} of {}",
                    addr(&n.host, n.port),
                    n.weight,
                    n.service_path
                ),
                Some(ApisixKey::Skipped(why)) => format!("skipped: {why}"),
                Some(ApisixKey::LuaError(why)) => format!("Lua error: {why}"),
            },
            ckv: match c {
                None => format!("not read (outside \"{}/\")", s.prefix),
                Some(CkvKey::Node { service_path, node }) => {
                    let v = ckv_view(node);
                    format!(
                        "node {} weight {} of {service_path}",
                        addr(&v.host, v.port),
                        v.weight
                    )
                }
                Some(CkvKey::Dropped(why)) => format!("dropped: {why}"),
                Some(CkvKey::Ignored) => "ignored: folder key".into(),
                Some(CkvKey::Malformed(why)) => format!("skipped: {why}"),
            },
        });
        if let Some(ApisixKey::Node(n)) = &a {
            let name = format!("{base}{}", n.service_path);
            apisix_services
                .entry(name)
                .or_default()
                .push((key.clone(), n.clone()));
        }
        if let Some(ApisixKey::LuaError(why)) = &a {
            if apisix_fatal.is_none() {
                apisix_fatal = Some((key.clone(), why.clone()));
            }
        }
        if let Some(f) = compare_key(key, a.as_ref(), c, &base) {
            key_findings.entry(f.0).or_default().push(f.1);
        }
    }
    if let Some((key, why)) = &apisix_fatal {
        report.findings.push(Finding::diff(
            "apisix_lua_error",
            Some(key),
            format!(
                "APISIX fails on this key ({why}): it applies nothing from this server's response and, with keepalive, stops watching the server until a reload; ckv skips only this key"
            ),
        ));
        apisix_services.clear();
    }
    if input.ckv.refused {
        report.findings.push(Finding::diff(
            "response_refused_by_ckv",
            None,
            format!(
                "every key under \"{}/\" is malformed for ckv, so it refuses the response whole and keeps its last good nodes (none at a fresh start)",
                s.prefix
            ),
        ));
    }
    if input.filtered_by_acls {
        report.findings.push(Finding::note(
            "filtered_by_acls",
            None,
            "Consul hid some keys from this token (X-Consul-Results-Filtered-By-Acls): both gateways miss their nodes".into(),
        ));
    }
    let ckv_empty = input.ckv_keys.is_empty();
    let apisix_empty = !input
        .entries
        .iter()
        .any(|(k, _)| k.starts_with(apisix_prefix));
    if input.status == 404 || ckv_empty || apisix_empty {
        report.findings.push(Finding::note(
            "empty_prefix",
            None,
            empty_prefix_text(s, input.status == 404 || apisix_empty, ckv_empty),
        ));
    }

    // Services on either side.
    let ckv_services: BTreeMap<String, Vec<NodeView>> = if input.ckv.refused {
        BTreeMap::new()
    } else {
        input
            .ckv
            .services
            .iter()
            .map(|(name, nodes)| (name.clone(), nodes.iter().map(ckv_view).collect()))
            .collect()
    };
    let names: BTreeSet<&String> = apisix_services
        .keys()
        .chain(ckv_services.keys())
        .chain(key_findings.keys())
        .collect();
    for name in names {
        let a = apisix_services.get(name);
        let c = ckv_services.get(name).cloned();
        let mut findings: Vec<Finding> = key_findings.get(name).cloned().unwrap_or_default();
        let schema_error = a.and_then(|nodes| {
            nodes
                .iter()
                .find_map(|(k, n)| n.schema_error().map(|e| (k.clone(), e)))
        });
        if let Some((key, e)) = &schema_error {
            findings.push(Finding::diff(
                "unusable_in_apisix",
                Some(key),
                format!(
                    "APISIX's node check refuses the whole list ({e}): every request to this service fails with \"invalid nodes format\"; ckv serves {}",
                    count_nodes(c.as_deref())
                ),
            ));
        }
        match (a.is_some(), c.is_some()) {
            (true, false) => findings.push(Finding::diff(
                "missing_in_ckv",
                None,
                format!(
                    "ckv has no node for this service: requests get {}",
                    fallback(s)
                ),
            )),
            (false, true) => findings.push(Finding::diff(
                "new_in_ckv",
                None,
                format!(
                    "APISIX has no node for this service (requests got {}); ckv serves {}",
                    apisix_fallback(s),
                    count_nodes(c.as_deref())
                ),
            )),
            _ => {}
        }
        let apisix_nodes = a.map(|v| v.iter().map(|(_, n)| apisix_view(n)).collect::<Vec<_>>());
        if findings.iter().all(|f| !f.difference)
            && !same_nodes(apisix_nodes.as_deref(), c.as_deref())
        {
            findings.push(Finding::diff(
                "nodes",
                None,
                "the node lists differ (see the keys above)".into(),
            ));
        }
        report.services.push(ServiceReport {
            name: name.clone(),
            apisix: apisix_nodes,
            ckv: c,
            findings,
        });
    }
    report
}

fn count_nodes(nodes: Option<&[NodeView]>) -> String {
    match nodes.map_or(0, <[NodeView]>::len) {
        0 => "no node".into(),
        1 => "1 node".into(),
        n => format!("{n} nodes"),
    }
}

/// Node lists compared as the balancer sees them: order does not matter.
fn same_nodes(a: Option<&[NodeView]>, c: Option<&[NodeView]>) -> bool {
    let key = |n: &NodeView| {
        (
            n.host.clone(),
            n.port,
            n.weight.to_string(),
            n.priority.as_ref().map(Value::to_string),
        )
    };
    let sorted = |v: Option<&[NodeView]>| {
        let mut k: Vec<_> = v.unwrap_or(&[]).iter().map(key).collect();
        k.sort();
        k
    };
    sorted(a) == sorted(c)
}

/// The finding for one key, with the service it belongs to.
fn compare_key(
    key: &str,
    a: Option<&ApisixKey>,
    c: Option<&CkvKey>,
    base: &str,
) -> Option<(String, Finding)> {
    let apisix_node = match a {
        Some(ApisixKey::Node(n)) => Some(n),
        _ => None,
    };
    let ckv_node = match c {
        Some(CkvKey::Node { service_path, node }) => Some((service_path, node)),
        _ => None,
    };
    match (apisix_node, ckv_node) {
        (Some(n), Some((path, node))) => {
            let v = ckv_view(node);
            let service = format!("{base}{path}");
            if *path != n.service_path {
                return Some((
                    service,
                    Finding::diff(
                        "service",
                        Some(key),
                        format!(
                            "ckv serves it as {} in {path:?}; APISIX's pattern backtracked to an earlier '/' and served {} in {:?}, ignoring {:?}",
                            addr(&v.host, v.port),
                            addr(&n.host, n.port),
                            n.service_path,
                            n.ignored_after
                        ),
                    ),
                ));
            }
            let mut parts = Vec::new();
            let mut difference = false;
            if let Some(w) = n.weight_int() {
                if Some(w) != v.weight.as_i64() {
                    parts.push(format!("weight {w} in APISIX, {} in ckv", v.weight));
                    difference = true;
                }
            }
            if let Some(p) = &v.priority {
                parts.push(format!(
                    "priority {p} reaches ckv's balancer (APISIX dropped it: all its nodes have priority 0)"
                ));
                difference = true;
            }
            let extra: Vec<&str> = ["max_fails", "fail_timeout", "metadata"]
                .into_iter()
                .filter(|f| node.get(*f).is_some())
                .collect();
            if parts.is_empty() && !extra.is_empty() {
                return Some((
                    service,
                    Finding::note(
                        "extra_fields",
                        Some(key),
                        format!(
                            "ckv also passes {} on in the node (APISIX dropped them; its balancer does not use them)",
                            extra.join(", ")
                        ),
                    ),
                ));
            }
            if parts.is_empty() {
                return None;
            }
            let kind = if v.priority.is_some() && parts.len() == 1 {
                "priority"
            } else {
                "weight"
            };
            let f = Finding {
                kind,
                difference,
                key: Some(key.to_string()),
                text: parts.join("; "),
            };
            Some((service, f))
        }
        (Some(n), None) => {
            let why = match c {
                None => "it is outside ckv's prefix".to_string(),
                Some(CkvKey::Malformed(w)) | Some(CkvKey::Dropped(w)) => w.clone(),
                Some(CkvKey::Ignored) | Some(CkvKey::Node { .. }) => "folder key".into(),
            };
            let mut text = format!(
                "skipped by ckv ({why}); APISIX served it as {}",
                addr(&n.host, n.port)
            );
            if !n.ignored_after.is_empty() {
                text.push_str(&format!(
                    ", ignoring {:?} after the port (its pattern is not anchored)",
                    n.ignored_after
                ));
            }
            if !n.ignored_before.is_empty() {
                text.push_str(&format!(
                    ", matching only after {:?} (its pattern is not anchored)",
                    n.ignored_before
                ));
            }
            if let Some(e) = n.schema_error() {
                text.push_str(&format!(", where its node check then fails ({e})"));
            }
            Some((
                format!("{base}{}", n.service_path),
                Finding::diff("skipped_by_ckv", Some(key), text),
            ))
        }
        (None, Some((path, node))) => {
            let v = ckv_view(node);
            let why = match a {
                None => "it is outside APISIX's prefix".to_string(),
                Some(ApisixKey::LuaError(w)) | Some(ApisixKey::Skipped(w)) => w.clone(),
                Some(ApisixKey::Node(_)) => "no node".into(),
            };
            Some((
                format!("{base}{path}"),
                Finding::diff(
                    "newly_accepted",
                    Some(key),
                    format!(
                        "newly served by ckv as {} weight {}; APISIX skipped it ({why})",
                        addr(&v.host, v.port),
                        v.weight
                    ),
                ),
            ))
        }
        (None, None) => None,
    }
}

fn fallback(s: &Settings) -> String {
    match &s.default_service {
        Some((h, p)) => format!("default_service {h}:{p} (in every worker)"),
        None => "no node (503, no default_service configured)".into(),
    }
}

fn apisix_fallback(s: &Settings) -> String {
    match &s.default_service {
        Some((h, p)) => {
            format!("default_service {h}:{p} in worker 0 only; 503 in the other workers")
        }
        None => "no node: 503".into(),
    }
}

fn empty_prefix_text(s: &Settings, apisix_empty: bool, ckv_empty: bool) -> String {
    let ckv = if s.clears_on_empty_prefix {
        "ckv treats 404 as an empty prefix (on_empty_prefix \"clear\"): it serves no service from this server and sees new keys as soon as they are written"
    } else {
        "ckv keeps its last services (on_empty_prefix \"keep\") and logs a warning; new keys are seen as soon as they are written"
    };
    let who = match (apisix_empty, ckv_empty) {
        (true, true) => "the prefix is empty for both".to_string(),
        (false, true) => format!(
            "the prefix is empty for ckv only (it reads \"{}/\", with the slash)",
            s.prefix
        ),
        _ => "the prefix is empty for APISIX only".to_string(),
    };
    format!(
        "{who}: APISIX treats Consul's 404 as an error, keeps what it had (nothing at a fresh start) and retries after 1, 4, 16, 64... s without a cap, so keys written later can take many minutes to appear; {ckv}"
    )
}

/// Notes that apply whatever the keys: default_service and a later empty
/// prefix.
pub fn behaviour_notes(s: &Settings) -> Vec<Finding> {
    let mut out = vec![Finding::note(
        "default_service",
        None,
        match &s.default_service {
            Some((h, p)) => format!(
                "a service with no node gets default_service {h}:{p} with weight {w}: in APISIX only in worker 0 (its other workers answer 503), in ckv in every worker",
                w = s.weight
            ),
            None => "no default_service: a service with no node answers 503 in both".into(),
        },
    )];
    out.push(Finding::note(
        "prefix_emptied",
        None,
        if s.clears_on_empty_prefix {
            "if the whole prefix is deleted later (404): APISIX keeps serving the last nodes (it treats 404 as an error and retries with a growing delay); ckv removes this server's services (on_empty_prefix \"clear\"; set \"keep\" for APISIX's behaviour)".into()
        } else {
            "if the whole prefix is deleted later (404): both keep the last nodes (on_empty_prefix \"keep\"); ckv logs a warning and sees new keys at once, APISIX retries with a growing delay".into()
        },
    ));
    out
}
