//! `ckv-check`: before switching from APISIX's `consul_kv` to ckv, read each
//! Consul server's prefix once and show, per service, the nodes APISIX's
//! module makes and the nodes ckv makes, with every difference explained.
//!
//! Exit code: 0 both agree, 1 they differ, 2 error.

mod apisix;
mod ckv_side;
mod compare;
mod fetch;
mod input;
mod render;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::Value;

use crate::compare::{Finding, ServerInput, ServerReport};
use crate::input::Format;
use crate::render::Report;

const USAGE: &str = "\
usage: ckv-check [--config] FILE [--format yaml|json] [--json] [--verbose]

Reads discovery.consul_kv from FILE (APISIX's config.yaml, or JSON; the
format follows the extension unless --format is given), reads each server's
prefix once (GET /v1/kv/{prefix}?recurse), and prints, per service, the nodes
APISIX 3.8.0's consul_kv module makes and the nodes ckv makes, with every
difference explained.

  --json      machine-readable output (shape version 1, see README)
  --verbose   also print both readings of every key
exit code: 0 both agree, 1 they differ, 2 error";

struct Args {
    config: PathBuf,
    format: Option<Format>,
    json: bool,
    verbose: bool,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut config = None;
    let mut format = None;
    let (mut json, mut verbose) = (false, false);
    let mut it = std::env::args_os().skip(1);
    while let Some(arg) = it.next() {
        match arg.to_str() {
            Some("-h" | "--help") => return Ok(None),
            Some("-V" | "--version") => {
                println!("ckv-check {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            Some("--json") => json = true,
            Some("-v" | "--verbose") => verbose = true,
            Some("--config" | "-c") => {
                config = Some(PathBuf::from(it.next().ok_or("--config needs a file")?));
            }
            Some("--format") => {
                let f = it.next().ok_or("--format needs yaml or json")?;
                let f = f.to_str().and_then(Format::parse).ok_or_else(|| {
                    format!(
                        "--format: expected yaml or json, got {:?}",
                        f.to_string_lossy()
                    )
                })?;
                format = Some(f);
            }
            Some(s) if s.starts_with('-') => return Err(format!("unknown option {s:?}")),
            _ if config.is_none() => config = Some(PathBuf::from(arg)),
            _ => return Err("more than one config file given".into()),
        }
    }
    let config = config.ok_or("no config file given")?;
    Ok(Some(Args {
        config,
        format,
        json,
        verbose,
    }))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("ckv-check: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let (report, token) = run(&args);
    let redact = |text: &str| match &token {
        Some(t) if !t.is_empty() => text.replace(t.as_str(), "<redacted>"),
        _ => text.to_string(),
    };
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let _ = writeln!(
            stdout,
            "{}",
            redact(&render::json_text(&render::json(&report)))
        );
    } else {
        for line in render::text(&report, args.verbose) {
            let _ = writeln!(stdout, "{}", ckv_side::escape_untrusted(&redact(&line)));
        }
    }
    for e in &report.errors {
        eprintln!("ckv-check: {}", ckv_side::escape_untrusted(&redact(e)));
    }
    ExitCode::from(report.exit_code() as u8)
}

/// Builds the report, and returns the token (when one is configured) so the
/// caller can make sure it is never printed.
fn run(args: &Args) -> (Report, Option<String>) {
    let format = args.format.unwrap_or_else(|| Format::of_path(&args.config));
    let mut report = Report {
        config_path: args.config.display().to_string(),
        format: format.as_str(),
        ..Report::default()
    };
    let section = match input::load(&args.config, format) {
        Ok(s) => s,
        Err(e) => {
            report.errors.push(e);
            return (report, None);
        }
    };
    let token = section
        .get("token")
        .and_then(Value::as_str)
        .map(str::to_string);
    let (config, warnings) = match ckv_side::parse_config(section.to_string().as_bytes()) {
        Ok(c) => c,
        Err(e) => {
            report.errors.push(format!(
                "ckv refuses this discovery.consul_kv configuration: {e}"
            ));
            return (report, token);
        }
    };
    let settings = ckv_side::settings(&config);
    let apisix_prefix = match section.get("prefix") {
        Some(Value::String(p)) => p.clone(),
        _ => "upstreams".to_string(),
    };
    report.prefix = settings.prefix.clone();
    report.apisix_prefix = apisix_prefix.clone();
    report.weight = settings.weight;
    for w in warnings {
        report
            .findings
            .push(Finding::note("config_warning", None, format!("ckv: {w}")));
    }
    if apisix_prefix != settings.prefix {
        report.findings.push(Finding::diff(
            "prefix",
            None,
            format!(
                "APISIX uses the prefix verbatim ({apisix_prefix:?}) in its URL and key pattern; ckv trims the slashes to {:?}",
                settings.prefix
            ),
        ));
    }
    for s in settings.servers.iter().filter(|s| s.https) {
        report.findings.push(Finding::diff(
            "https_server",
            None,
            format!("{}: APISIX refuses https:// servers (its module fails at start); ckv reads it over TLS", s.url),
        ));
    }
    let rules = match apisix::ApisixRules::new(&apisix_prefix, &settings.skip_keys, settings.weight)
    {
        Ok(r) => r,
        Err(e) => {
            report.errors.push(e);
            return (report, token);
        }
    };
    let token_value = match ckv_side::token_of(&config) {
        Ok(t) => t,
        Err(e) => {
            report.errors.push(ckv_side::redact(&config, &e));
            return (report, token);
        }
    };
    // A token read from `token_file` is hidden from the output too.
    let token = if token_value.is_empty() {
        token
    } else {
        Some(token_value.clone())
    };
    for server in &settings.servers {
        let request = fetch::Request {
            url: &server.url,
            prefix: &settings.prefix,
            token: &token_value,
            connect_timeout: settings.connect_timeout,
            read_timeout: settings.read_timeout,
            max_bytes: settings.max_response_bytes,
            ca_file: settings.tls_ca_file.as_deref(),
            verify: settings.tls_verify,
        };
        let read = match fetch::read(&request) {
            Ok(r) => r,
            Err(e) => {
                let e = ckv_side::redact(&config, &e);
                report.errors.push(format!("cannot read the prefix: {e}"));
                report.servers.push(ServerReport {
                    url: server.url.clone(),
                    error: Some(e),
                    ..ServerReport::default()
                });
                continue;
            }
        };
        let under = format!("{}/", settings.prefix);
        let ckv_keys: Vec<usize> = read
            .entries
            .iter()
            .enumerate()
            .filter(|(_, (k, _))| k.starts_with(&under))
            .map(|(i, _)| i)
            .collect();
        let ckv_entries: Vec<(String, Option<String>)> =
            ckv_keys.iter().map(|&i| read.entries[i].clone()).collect();
        let view = ckv_side::evaluate(&config, &server.url, &ckv_entries);
        let mut server_report = compare::compare_server(&ServerInput {
            url: &server.url,
            status: read.status,
            entries: &read.entries,
            filtered_by_acls: read.filtered_by_acls,
            settings: &settings,
            apisix: &rules,
            ckv: &view,
            ckv_keys: &ckv_keys,
        });
        server_report.index = read.index;
        server_report.bytes = read.bytes;
        report.servers.push(server_report);
    }
    report.findings.extend(compare::behaviour_notes(&settings));
    (report, token)
}
