//! The report as text for people and as JSON for machines (shape version 1,
//! described in the README section "Switching from APISIX's consul_kv").

use serde_json::{json, Value};

use crate::compare::{addr, Finding, NodeView, ServerReport};

/// Everything the tool found.
#[derive(Debug, Default)]
pub struct Report {
    pub config_path: String,
    pub format: &'static str,
    pub prefix: String,
    pub apisix_prefix: String,
    pub weight: u32,
    /// Config-level findings and behaviour notes.
    pub findings: Vec<Finding>,
    pub servers: Vec<ServerReport>,
    /// Errors that stop the check (bad config, unreachable server).
    pub errors: Vec<String>,
}

impl Report {
    pub fn differences(&self) -> usize {
        self.findings.iter().filter(|f| f.difference).count()
            + self
                .servers
                .iter()
                .map(ServerReport::differences)
                .sum::<usize>()
    }

    /// 0: both agree; 1: they differ; 2: error.
    pub fn exit_code(&self) -> i32 {
        if !self.errors.is_empty() {
            2
        } else if self.differences() > 0 {
            1
        } else {
            0
        }
    }
}

fn nodes_text(nodes: &Option<Vec<NodeView>>) -> String {
    match nodes {
        None => "no such service".into(),
        Some(v) if v.is_empty() => "no node".into(),
        Some(v) => v
            .iter()
            .map(|n| {
                let mut s = format!("{} weight {}", addr(&n.host, n.port), n.weight);
                if let Some(p) = &n.priority {
                    s.push_str(&format!(" priority {p}"));
                }
                s
            })
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn finding_line(f: &Finding) -> String {
    let mark = match (f.difference, f.kind) {
        (false, _) => "i",
        (true, "newly_accepted" | "new_in_ckv") => "+",
        (true, "skipped_by_ckv" | "missing_in_ckv") => "-",
        (true, "weight" | "priority" | "service" | "nodes") => "~",
        (true, _) => "!",
    };
    match &f.key {
        Some(k) => format!("{mark} {k}: {}", f.text),
        None => format!("{mark} {}", f.text),
    }
}

/// Text lines (not yet escaped).
pub fn text(r: &Report, verbose: bool) -> Vec<String> {
    let mut out = vec![format!(
        "ckv-check {}: APISIX 3.8.0 consul_kv rules vs ckv {}",
        env!("CARGO_PKG_VERSION"),
        crate::ckv_side::VERSION
    )];
    out.push(format!(
        "config: {} ({}), prefix \"{}\", default weight {}",
        r.config_path, r.format, r.prefix, r.weight
    ));
    for s in &r.servers {
        out.push(String::new());
        if let Some(e) = &s.error {
            out.push(format!("server {}: ERROR {e}", s.url));
            continue;
        }
        let index = s
            .index
            .map_or_else(|| "none".to_string(), |i| i.to_string());
        out.push(format!(
            "server {}: HTTP {}, {} keys, {} bytes, X-Consul-Index {index}",
            s.url,
            s.status,
            s.keys.len(),
            s.bytes
        ));
        for f in &s.findings {
            out.push(format!("  {}", finding_line(f)));
        }
        for svc in &s.services {
            let state = if svc.differs() { "differs" } else { "same" };
            out.push(format!("  service {} [{state}]", svc.name));
            if svc.differs() {
                out.push(format!("    APISIX: {}", nodes_text(&svc.apisix)));
                out.push(format!("    ckv:    {}", nodes_text(&svc.ckv)));
            } else {
                out.push(format!("    both:   {}", nodes_text(&svc.ckv)));
            }
            for f in &svc.findings {
                out.push(format!("    {}", finding_line(f)));
            }
        }
        if verbose {
            out.push("  keys:".into());
            for k in &s.keys {
                out.push(format!("    {}", k.key));
                out.push(format!("      APISIX: {}", k.apisix));
                out.push(format!("      ckv:    {}", k.ckv));
            }
        }
    }
    if !r.findings.is_empty() {
        out.push(String::new());
        out.push("notes:".into());
        for f in &r.findings {
            out.push(format!("  {}", finding_line(f)));
        }
    }
    out.push(String::new());
    for e in &r.errors {
        out.push(format!("error: {e}"));
    }
    let n = r.differences();
    let services: usize = r.servers.iter().map(|s| s.services.len()).sum();
    let differing: usize = r
        .servers
        .iter()
        .map(|s| s.services.iter().filter(|x| x.differs()).count())
        .sum();
    out.push(match r.exit_code() {
        0 => format!("result: APISIX and ckv agree on {services} services (exit 0)"),
        1 => format!("result: {n} differences, {differing} of {services} services differ (exit 1)"),
        _ => format!("result: error, {n} differences found before it (exit 2)"),
    });
    out
}

fn finding_json(f: &Finding) -> Value {
    json!({"kind": f.kind, "difference": f.difference, "key": f.key, "text": f.text})
}

fn nodes_json(nodes: &Option<Vec<NodeView>>) -> Value {
    match nodes {
        None => Value::Null,
        Some(v) => v
            .iter()
            .map(|n| {
                let mut o = json!({"host": n.host, "port": n.port, "weight": n.weight});
                if let Some(p) = &n.priority {
                    o["priority"] = p.clone();
                }
                o
            })
            .collect(),
    }
}

const RESULTS: [&str; 3] = ["agree", "differ", "error"];

/// The JSON document (shape version 1).
pub fn json(r: &Report) -> Value {
    let code = r.exit_code();
    json!({
        "ckv_check": 1,
        "result": RESULTS.get(code as usize).copied().unwrap_or("error"),
        "exit_code": code,
        "differences": r.differences(),
        "config": {
            "path": r.config_path,
            "format": r.format,
            "prefix": r.prefix,
            "apisix_prefix": r.apisix_prefix,
            "weight": r.weight,
        },
        "errors": r.errors,
        "notes": r.findings.iter().map(finding_json).collect::<Vec<_>>(),
        "servers": r.servers.iter().map(|s| json!({
            "url": s.url,
            "status": s.status,
            "index": s.index,
            "bytes": s.bytes,
            "error": s.error,
            "findings": s.findings.iter().map(finding_json).collect::<Vec<_>>(),
            "services": s.services.iter().map(|svc| json!({
                "name": svc.name,
                "agree": !svc.differs(),
                "apisix": nodes_json(&svc.apisix),
                "ckv": nodes_json(&svc.ckv),
                "findings": svc.findings.iter().map(finding_json).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "keys": s.keys.iter().map(|k| json!({"key": k.key, "apisix": k.apisix, "ckv": k.ckv})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// JSON text in which every control character is a `\u` escape, also those
/// serde_json leaves as they are (DEL, C1, U+2028/2029): safe on a terminal.
pub fn json_text(v: &Value) -> String {
    let raw = serde_json::to_string_pretty(v).unwrap_or_default();
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        if (c.is_control() && c != '\n') || c == '\u{2028}' || c == '\u{2029}' {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}
