//! `ckv-consul-double --listen 127.0.0.1:8500 [options]`: see `--help`.

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use ckv_consul_double::gocompat::{duration_from_nanos, parse_go_duration};
use ckv_consul_double::{Config, ReadToken, Server};

const USAGE: &str = "\
ckv-consul-double: a Consul KV HTTP API test double (not a Consul replacement)

Usage: ckv-consul-double --listen ADDR [options]

  --listen ADDR            host:port to listen on (repeatable; port 0 = any free port)
  --token T                enable ACLs; T is the management token (default policy deny)
  --read-token T[=PREFIX]  (ACL mode) a token with key:read on PREFIX only (repeatable)
  --list-token T[=PREFIX]  (ACL mode) a token with key:list (read and list) on PREFIX
  --acl-key-list-policy    recurse/keys need key:list on the prefix (else 403)
  --max-wait DUR           max_query_time, cap on ?wait (default 10m)
  --default-wait DUR       default_query_time, for absent or <=0 ?wait
                           (default 5m, or --max-wait if smaller)
  --tombstone-ttl DUR      tombstone lifetime before reaping (default 15m)
  --start-index N          Raft index to start at (default 1000 + random 0..999)
  --max-index-skip N       each write consumes 1..=N indexes (default 3)
  --kv-max-value-size N    PUT body limit in bytes (default 524288)
  --max-conns-per-client N per-IP connection cap, raw 429 beyond (default 0 = off)
  --seed-file F            JSON object {\"key\": \"value\", ...} written at start
  --pid-file F             write the process id to F (removed on exit)
  --tls-cert F             every listener speaks TLS with this PEM certificate chain
  --tls-key F              ... and this PEM private key
  --tls-client-ca F        require client certificates issued by this PEM CA (mutual TLS)
  --help                   this text

Durations use Go syntax: 250ms, 2s, 1m30s.
Prints one line \"ckv-consul-double listening on ADDR [ADDR...]\" once ready.
Exits 0 on SIGTERM or SIGINT.";

struct Cli {
    config: Config,
    pid_file: Option<PathBuf>,
}

fn duration(flag: &str, v: &str) -> Result<Duration, String> {
    match parse_go_duration(v) {
        Some(n) if n >= 0 => Ok(duration_from_nanos(n)),
        _ => Err(format!("{flag}: invalid duration {v:?}")),
    }
}

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag}: invalid number {v:?}"))
}

fn parse_args(args: Vec<String>) -> Result<Option<Cli>, String> {
    let mut cfg = Config {
        listen: Vec::new(),
        ..Config::default()
    };
    let mut default_wait_set = false;
    let mut seed_file = None;
    let mut pid_file = None;
    let (mut tls_cert, mut tls_key, mut tls_client_ca) = (None, None, None);
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let needs_value = !matches!(flag.as_str(), "--help" | "-h" | "--acl-key-list-policy");
        let value = if needs_value {
            match inline.or_else(|| it.next()) {
                Some(v) => v,
                None => return Err(format!("{flag} needs a value")),
            }
        } else {
            String::new()
        };
        match flag.as_str() {
            "--help" | "-h" => return Ok(None),
            "--listen" => {
                let addrs: Vec<SocketAddr> = value
                    .to_socket_addrs()
                    .map_err(|e| format!("--listen {value}: {e}"))?
                    .collect();
                let first = addrs
                    .first()
                    .ok_or_else(|| format!("--listen {value}: no address"))?;
                cfg.listen.push(*first);
            }
            "--token" => cfg.token = Some(value),
            "--read-token" | "--list-token" => {
                let (secret, prefix) = value.split_once('=').unwrap_or((&value, ""));
                let token = ReadToken {
                    secret: secret.to_string(),
                    prefix: prefix.as_bytes().to_vec(),
                };
                if flag == "--list-token" {
                    cfg.list_tokens.push(token);
                } else {
                    cfg.read_tokens.push(token);
                }
            }
            "--acl-key-list-policy" => cfg.acl_key_list_policy = true,
            "--max-wait" => cfg.max_wait = duration(&flag, &value)?,
            "--default-wait" => {
                cfg.default_wait = duration(&flag, &value)?;
                default_wait_set = true;
            }
            "--tombstone-ttl" => cfg.tombstone_ttl = duration(&flag, &value)?,
            "--start-index" => cfg.start_index = number(&flag, &value)?,
            "--max-index-skip" => cfg.max_index_skip = number(&flag, &value)?,
            "--kv-max-value-size" => cfg.kv_max_value_size = number(&flag, &value)?,
            "--max-conns-per-client" => cfg.max_conns_per_client = number(&flag, &value)?,
            "--seed-file" => seed_file = Some(PathBuf::from(value)),
            "--pid-file" => pid_file = Some(PathBuf::from(value)),
            "--tls-cert" => tls_cert = Some(PathBuf::from(value)),
            "--tls-key" => tls_key = Some(PathBuf::from(value)),
            "--tls-client-ca" => tls_client_ca = Some(PathBuf::from(value)),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if cfg.listen.is_empty() {
        return Err("--listen is required".into());
    }
    cfg.tls = match (tls_cert, tls_key) {
        (Some(cert_file), Some(key_file)) => Some(ckv_consul_double::Tls {
            cert_file,
            key_file,
            client_ca_file: tls_client_ca,
        }),
        (None, None) if tls_client_ca.is_none() => None,
        _ => {
            return Err(
                "--tls-cert and --tls-key go together (and --tls-client-ca needs them)".into(),
            )
        }
    };
    if !default_wait_set && cfg.default_wait > cfg.max_wait {
        cfg.default_wait = cfg.max_wait;
    }
    if cfg.token.is_none() && !(cfg.read_tokens.is_empty() && cfg.list_tokens.is_empty()) {
        return Err("--read-token/--list-token need --token (ACL mode)".into());
    }
    if let Some(f) = seed_file {
        let text = std::fs::read(&f).map_err(|e| format!("--seed-file {}: {e}", f.display()))?;
        let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&text)
            .map_err(|e| format!("--seed-file {}: {e}", f.display()))?;
        for (k, v) in obj {
            match v {
                serde_json::Value::String(s) => cfg.seed.push((k.into_bytes(), s.into_bytes())),
                serde_json::Value::Null => {}
                _ => return Err(format!("--seed-file: value of {k:?} must be a string")),
            }
        }
    }
    Ok(Some(Cli {
        config: cfg,
        pid_file,
    }))
}

async fn signalled() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => std::future::pending::<()>().await,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn main() -> ExitCode {
    let cli = match parse_args(std::env::args().skip(1).collect()) {
        Ok(Some(c)) => c,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("ckv-consul-double: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ckv-consul-double: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = rt.block_on(async move {
        let server = match Server::bind(cli.config).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("ckv-consul-double: listen: {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Some(p) = &cli.pid_file {
            if let Err(e) = std::fs::write(p, format!("{}\n", std::process::id())) {
                eprintln!("ckv-consul-double: --pid-file {}: {e}", p.display());
                return ExitCode::FAILURE;
            }
        }
        let addrs: Vec<String> = server.local_addrs().iter().map(|a| a.to_string()).collect();
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "ckv-consul-double listening on {}", addrs.join(" "));
        let _ = out.flush();
        drop(out);
        server.run(signalled()).await;
        if let Some(p) = &cli.pid_file {
            let _ = std::fs::remove_file(p);
        }
        ExitCode::SUCCESS
    });
    rt.shutdown_timeout(Duration::from_millis(100));
    code
}
