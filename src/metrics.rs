//! The statistics in Prometheus' text exposition format, version 0.0.4
//! (`ckv_metrics`, `kv:metrics()`, the drop-in's `/v1/discovery/consul_kv/metrics`).
//!
//! Pure: a [`Stats`] in, text out. Every process of an instance renders the
//! leader's per-server figures and `ckv_apply_seconds` (followers read them
//! from the shared directory), so a scrape that lands on any worker sees the
//! same series; only `ckv_propagation_seconds` is per process, labelled with
//! its `pid`.

use std::fmt::Write as _;

use crate::stats::{Histogram, ServerState, ServerStats, Stats, HISTOGRAM_BOUNDS};

/// The `Content-Type` of the output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders `stats` as Prometheus text.
pub fn render(stats: &Stats) -> String {
    let mut out = Out(String::with_capacity(4096 + 2048 * stats.servers.len()));
    let per_server = |out: &mut Out, name, kind, help, value: &dyn Fn(&ServerStats) -> f64| {
        out.head(name, kind, help);
        for s in &stats.servers {
            out.sample(name, &[("server", &s.url)], value(s));
        }
    };
    per_server(
        &mut out,
        "ckv_server_up",
        "gauge",
        "1 when the last request to the Consul server succeeded.",
        &|s| f64::from(u8::from(is_up(s))),
    );
    per_server(
        &mut out,
        "ckv_last_index",
        "gauge",
        "Last X-Consul-Index adopted from the server (0: none yet, or reset).",
        &|s| s.last_index as f64,
    );
    per_server(
        &mut out,
        "ckv_requests_total",
        "counter",
        "Requests sent to the server.",
        &|s| s.requests_total as f64,
    );
    out.head(
        "ckv_errors_total",
        "counter",
        "Failed exchanges with the server, by kind.",
    );
    for s in &stats.servers {
        for (kind, n) in error_kinds(s) {
            out.sample(
                "ckv_errors_total",
                &[("server", &s.url), ("kind", kind)],
                n as f64,
            );
        }
    }
    per_server(
        &mut out,
        "ckv_last_success_timestamp_seconds",
        "gauge",
        "Unix time of the last successful answer from the server (0: never).",
        &|s| s.last_success_ms as f64 / 1000.0,
    );
    per_server(
        &mut out,
        "ckv_index_resets_total",
        "counter",
        "Times the server's index went backwards and the watch read the prefix again.",
        &|s| s.index_resets as f64,
    );
    per_server(
        &mut out,
        "ckv_malformed_entries",
        "gauge",
        "Entries skipped as malformed in the server's last response.",
        &|s| s.malformed_entries as f64,
    );
    per_server(
        &mut out,
        "ckv_services",
        "gauge",
        "Services served from the server.",
        &|s| s.services as f64,
    );
    per_server(
        &mut out,
        "ckv_nodes",
        "gauge",
        "Nodes served from the server.",
        &|s| s.nodes as f64,
    );
    cluster_figures(&mut out, stats);
    out.head(
        "ckv_snapshot_generation",
        "gauge",
        "Sequence number of the snapshot served (increases with every change).",
    );
    out.sample("ckv_snapshot_generation", &[], stats.generation as f64);
    out.head(
        "ckv_leader",
        "gauge",
        "1 for the process that watches Consul for this instance.",
    );
    out.sample("ckv_leader", &[("pid", &stats.leader_pid.to_string())], 1.0);
    out.head(
        "ckv_ready",
        "gauge",
        "1 once every server answered once (or a fresh dump is served).",
    );
    out.sample("ckv_ready", &[], f64::from(u8::from(stats.ready)));
    out.head(
        "ckv_stale",
        "gauge",
        "1 when the leader could not share its latest snapshot: workers serve an older one.",
    );
    out.sample("ckv_stale", &[], f64::from(u8::from(stats.stale)));
    out.histogram(
        "ckv_apply_seconds",
        "Time to parse, apply and publish one Consul response, in the leader.",
        &[],
        &stats.apply_seconds,
    );
    out.histogram(
        "ckv_propagation_seconds",
        "Time from a Consul response arriving to its snapshot being served by this process.",
        &[("pid", &stats.pid.to_string())],
        &stats.propagation_seconds,
    );
    out.0
}

/// Up: the last exchange succeeded (a follower shows the leader's view).
fn is_up(s: &ServerStats) -> bool {
    matches!(s.state, ServerState::Watching | ServerState::Polling) && s.consecutive_errors == 0
}

/// A per-server counter: name, help, and how to read it.
type Counter = (&'static str, &'static str, fn(&ServerStats) -> u64);

/// Consul's own health headers, token rotations, and with `cluster` which
/// member is asked and how each one fares.
fn cluster_figures(out: &mut Out, stats: &Stats) {
    let counters: [Counter; 4] = [
        (
            "ckv_failovers_total",
            "Moves to the next cluster member after cluster.failover_after failures.",
            |s| s.failovers,
        ),
        (
            "ckv_failbacks_total",
            "Returns to the first cluster member once it answered a probe.",
            |s| s.failbacks,
        ),
        (
            "ckv_known_leader_false_total",
            "Answers with X-Consul-KnownLeader: false (the member knew no leader).",
            |s| s.known_leader_false,
        ),
        (
            "ckv_token_rotations_total",
            "New tokens read from token_file.",
            |s| s.token_rotations,
        ),
    ];
    for (name, help, value) in counters {
        out.head(name, "counter", help);
        for s in &stats.servers {
            out.sample(name, &[("server", &s.url)], value(s) as f64);
        }
    }
    out.head(
        "ckv_last_contact_seconds",
        "gauge",
        "X-Consul-LastContact of the last answer: how far behind the leader the member was.",
    );
    for s in &stats.servers {
        out.sample(
            "ckv_last_contact_seconds",
            &[("server", &s.url)],
            s.last_contact_ms as f64 / 1000.0,
        );
    }
    let members = |name, help, value: fn(&crate::stats::MemberStats) -> bool, out: &mut Out| {
        out.head(name, "gauge", help);
        for s in &stats.servers {
            for m in &s.members {
                out.sample(
                    name,
                    &[("server", &s.url), ("member", &m.url)],
                    f64::from(u8::from(value(m))),
                );
            }
        }
    };
    members(
        "ckv_cluster_member_active",
        "1 for the cluster member the watch asks now.",
        |m| m.active,
        out,
    );
    members(
        "ckv_cluster_member_up",
        "1 when the member's last answer (or fail-back probe) was good.",
        |m| m.healthy,
        out,
    );
}

fn error_kinds(s: &ServerStats) -> [(&'static str, u64); 9] {
    let k = &s.errors_by_kind;
    [
        ("transport", k.transport),
        ("timeout", k.timeout),
        ("http_4xx", k.http_4xx),
        ("http_5xx", k.http_5xx),
        ("no_leader", k.no_leader),
        ("not_consul", k.not_consul),
        ("bad_body", k.bad_body),
        ("too_large", k.too_large),
        ("too_stale", k.too_stale),
    ]
}

struct Out(String);

impl Out {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape_label(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {}", number(value));
    }

    fn histogram(&mut self, name: &str, help: &str, labels: &[(&str, &str)], h: &Histogram) {
        self.head(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        for (bound, n) in HISTOGRAM_BOUNDS.iter().zip(h.cumulative()) {
            let le = number(*bound);
            let mut l = labels.to_vec();
            l.push(("le", &le));
            self.sample(&bucket, &l, n as f64);
        }
        let mut l = labels.to_vec();
        l.push(("le", "+Inf"));
        self.sample(&bucket, &l, h.count as f64);
        self.sample(&format!("{name}_sum"), labels, h.sum);
        self.sample(&format!("{name}_count"), labels, h.count as f64);
    }
}

/// A sample value: integers without a fraction, others in the shortest
/// text that reads back as the same number (`0.25`, `1e300`).
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:?}")
    }
}

/// Label values: backslash, double quote and line feed are escaped (0.0.4).
fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text: backslash and line feed are escaped (0.0.4).
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::ErrorKinds;

    fn sample_stats(url: &str) -> Stats {
        let mut apply = Histogram::default();
        apply.observe(0.0003);
        apply.observe(0.02);
        let mut prop = Histogram::default();
        prop.observe(0.004);
        Stats {
            pid: 7,
            leader_pid: 5,
            generation: 12,
            ready: true,
            servers: vec![ServerStats {
                url: url.into(),
                state: ServerState::Watching,
                last_index: 99,
                last_success_ms: 1_700_000_000_250,
                requests_total: 10,
                errors_by_kind: ErrorKinds {
                    timeout: 2,
                    too_large: 1,
                    ..ErrorKinds::default()
                },
                services: 3,
                nodes: 4,
                ..ServerStats::default()
            }],
            apply_seconds: apply,
            propagation_seconds: prop,
            ..Stats::default()
        }
    }

    #[test]
    fn every_family_has_help_and_type_and_values() {
        let text = render(&sample_stats("http://127.0.0.1:8500"));
        for name in [
            "ckv_server_up",
            "ckv_last_index",
            "ckv_requests_total",
            "ckv_errors_total",
            "ckv_last_success_timestamp_seconds",
            "ckv_index_resets_total",
            "ckv_malformed_entries",
            "ckv_services",
            "ckv_nodes",
            "ckv_snapshot_generation",
            "ckv_leader",
            "ckv_ready",
            "ckv_apply_seconds",
            "ckv_propagation_seconds",
        ] {
            assert!(
                text.contains(&format!("\n# TYPE {name} "))
                    || text.starts_with(&format!("# HELP {name} ")),
                "{name} missing"
            );
            assert!(text.contains(&format!("# HELP {name} ")), "{name}: no HELP");
        }
        let s = r#"{server="http://127.0.0.1:8500"}"#;
        assert!(text.contains(&format!("ckv_server_up{s} 1\n")));
        assert!(text.contains(&format!("ckv_last_index{s} 99\n")));
        assert!(text.contains(&format!(
            "ckv_last_success_timestamp_seconds{s} 1700000000.25\n"
        )));
        assert!(text
            .contains("ckv_errors_total{server=\"http://127.0.0.1:8500\",kind=\"timeout\"} 2\n"));
        assert!(text.contains("ckv_leader{pid=\"5\"} 1\n"));
        assert!(text.contains("ckv_apply_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(text.contains("ckv_apply_seconds_bucket{le=\"0.01\"} 1\n"));
        assert!(text.contains("ckv_apply_seconds_bucket{le=\"0.025\"} 2\n"));
        assert!(text.contains("ckv_apply_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("ckv_apply_seconds_count 2\n"));
        assert!(text.contains("ckv_propagation_seconds_bucket{pid=\"7\",le=\"0.005\"} 1\n"));
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn cluster_members_and_consul_health_are_shown() {
        let mut stats = sample_stats("prod");
        let member = |url: &str, active, healthy| crate::stats::MemberStats {
            url: url.into(),
            active,
            healthy,
            ..Default::default()
        };
        stats.servers[0].members = vec![
            member("http://10.0.0.1:8500", false, false),
            member("http://10.0.0.2:8500", true, true),
        ];
        stats.servers[0].failovers = 1;
        stats.servers[0].known_leader_false = 4;
        stats.servers[0].last_contact_ms = 1500;
        stats.servers[0].errors_by_kind.too_stale = 2;
        let text = render(&stats);
        for line in [
            "ckv_cluster_member_active{server=\"prod\",member=\"http://10.0.0.1:8500\"} 0\n",
            "ckv_cluster_member_active{server=\"prod\",member=\"http://10.0.0.2:8500\"} 1\n",
            "ckv_cluster_member_up{server=\"prod\",member=\"http://10.0.0.1:8500\"} 0\n",
            "ckv_failovers_total{server=\"prod\"} 1\n",
            "ckv_known_leader_false_total{server=\"prod\"} 4\n",
            "ckv_last_contact_seconds{server=\"prod\"} 1.5\n",
            "ckv_errors_total{server=\"prod\",kind=\"too_stale\"} 2\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        // Without a cluster, no member series at all.
        let plain = render(&sample_stats("http://127.0.0.1:8500"));
        assert!(!plain.contains("ckv_cluster_member_active{"));
    }

    #[test]
    fn hostile_label_values_are_escaped() {
        let text = render(&sample_stats("http://a\"b\\c\nd:1"));
        assert!(text.contains(r#"ckv_nodes{server="http://a\"b\\c\nd:1"} 4"#));
        // Every line is a comment or one sample: the line feed did not split.
        for line in text.lines() {
            assert!(
                line.starts_with("# HELP ")
                    || line.starts_with("# TYPE ")
                    || line.starts_with("ckv_"),
                "stray line {line:?}"
            );
        }
    }

    #[test]
    fn numbers() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(1e300), "1e300");
        assert_eq!(escape_help("a\\b\nc"), "a\\\\b\\nc");
    }
}
