//! The metrics text read back by prometheus_client's parser (the reference
//! Python implementation, in the venv `scripts/prom-venv.sh` makes): hostile
//! server URLs and every figure survive as a scraper would see them.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use ckv::stats::{ErrorKinds, Histogram, ServerState, ServerStats, Stats};

fn parse(text: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = Command::new("bash")
        .arg(root.join("scripts/prom-venv.sh"))
        .output()
        .expect("run scripts/prom-venv.sh");
    assert!(
        venv.status.success(),
        "prom-venv.sh: {}",
        String::from_utf8_lossy(&venv.stderr)
    );
    let python = String::from_utf8(venv.stdout).unwrap();
    let mut child = Command::new(python.trim())
        .arg(root.join("scripts/prom_parse.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run the parser");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let parsed = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "parser refused the text: {parsed}\n{text}"
    );
    parsed
}

fn server(url: &str) -> ServerStats {
    ServerStats {
        url: url.into(),
        state: ServerState::Watching,
        last_index: 42,
        requests_total: 9,
        nodes: 5,
        errors_by_kind: ErrorKinds {
            http_5xx: 3,
            ..ErrorKinds::default()
        },
        ..ServerStats::default()
    }
}

#[test]
fn hostile_labels_and_histograms_parse_back() {
    let hostile = "http://h\"x\\y\nz} 1\n# TYPE evil gauge\nevil 1:8500";
    let mut h = Histogram::default();
    h.observe(0.002);
    h.observe(42.0);
    let stats = Stats {
        pid: 11,
        leader_pid: 10,
        ready: true,
        servers: vec![server("http://127.0.0.1:8500"), server(hostile)],
        apply_seconds: h.clone(),
        propagation_seconds: h,
        ..Stats::default()
    };
    let parsed = parse(&ckv::metrics::render(&stats));
    // Python's repr of the label value: the same characters came back.
    let repr = r#"'http://h"x\\y\nz} 1\n# TYPE evil gauge\nevil 1:8500'"#;
    assert!(
        parsed.contains(&format!("ckv_nodes{{server={repr}}} 5.0\n")),
        "{parsed}"
    );
    assert!(!parsed.contains("# evil"), "an injected family: {parsed}");
    assert!(parsed.contains(&format!(
        "ckv_errors_total{{kind='http_5xx',server={repr}}} 3.0\n"
    )));
    assert!(parsed.contains("# ckv_apply_seconds histogram\n"));
    assert!(parsed.contains("ckv_apply_seconds_bucket{le='0.0025'} 1.0\n"));
    assert!(parsed.contains("ckv_apply_seconds_bucket{le='+Inf'} 2.0\n"));
    assert!(parsed.contains("ckv_apply_seconds_count{} 2.0\n"));
    assert!(parsed.contains("ckv_propagation_seconds_sum{pid='11'} 42.002\n"));
    assert!(parsed.contains("ckv_leader{pid='10'} 1.0\n"));
    assert!(parsed.contains("# ckv_requests counter\n"));
}
