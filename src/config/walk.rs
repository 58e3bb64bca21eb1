//! The document walk: reads each field through its [`fields`] entry, applies
//! the checks that involve more than one value, and builds the [`Config`].

use std::path::PathBuf;

use serde_json::{Map, Value};

use super::errors::{show, show_str, type_name, ConfigError};
use super::fields::{self, Rule, MAX_MS};
use super::reader::{as_array, as_object, int_value, path_string, string, Obj};
use super::secret::Secret;
use super::servers::parse_servers;
use super::token_file::TokenFile;
use super::{
    Backoff, Cluster, Config, Consistency, DefaultService, Dump, EmptyPrefixPolicy, Scheme, Scope,
    Server, Share, Timeouts,
};

/// `tls` while it is read; [`Config`] keeps its fields flat.
#[derive(Default)]
struct Tls {
    ca_file: Option<PathBuf>,
    verify: bool,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    server_name: Option<String>,
}

pub(crate) fn parse_config(
    map: &Map<String, Value>,
    warnings: &mut Vec<String>,
) -> Result<Config, ConfigError> {
    let mut o = Obj::new(map, "");

    let servers = parse_servers(&mut o)?;
    let token = parse_token(&mut o)?;
    let prefix = match o.get(fields::PREFIX.key()) {
        None => fields::PREFIX.default_str().to_string(),
        Some(v) => normalize_prefix(string(v, fields::PREFIX.path)?)?,
    };
    let weight = fields::WEIGHT.int(&mut o)?;
    let keepalive = fields::KEEPALIVE.bool(&mut o)?;
    let fetch_interval = fields::FETCH_INTERVAL.duration(&mut o)?;
    let timeout = parse_timeouts(&mut o, warnings)?;
    let skip_keys = parse_skip_keys(&mut o, &prefix, warnings)?;
    let default_service = parse_default_service(&mut o, warnings)?;
    let dump = parse_dump(&mut o, warnings)?;
    let (tls, tls_given) = parse_tls(&mut o, warnings)?;
    let max_response_bytes = fields::MAX_RESPONSE_BYTES.int(&mut o)?;
    let on_empty_prefix = parse_on_empty_prefix(&mut o)?;
    let gzip = fields::GZIP.bool(&mut o)?;
    let backoff = parse_backoff(&mut o, warnings)?;
    let share = parse_share(&mut o, warnings)?;
    let cluster = parse_cluster(&mut o, &servers, warnings)?;
    let consistency = parse_consistency(&mut o)?;
    let max_stale = fields::MAX_STALE
        .read_int(&mut o)?
        .map(|n| std::time::Duration::from_secs(u64::try_from(n).unwrap_or(u64::MAX)));
    let scope = Scope {
        dc: parse_name(&mut o, fields::DC)?,
        namespace: parse_name(&mut o, fields::NAMESPACE)?,
        partition: parse_name(&mut o, fields::PARTITION)?,
    };
    let token_file = match o.get(fields::TOKEN_FILE.key()) {
        None => None,
        Some(v) => Some(PathBuf::from(path_string(v, fields::TOKEN_FILE.path)?)),
    };
    o.finish(warnings);

    if tls_given && !servers.iter().any(|s| s.scheme == Scheme::Https) {
        warnings.push("tls is set but no server uses https://; it has no effect".to_string());
    }
    if token_file.is_some() && !token.is_empty() {
        return Err(ConfigError::new(
            fields::TOKEN_FILE.path,
            "token and token_file are both set; give one of them",
        ));
    }
    if max_stale.is_some() && consistency != Consistency::Stale {
        warnings.push(format!(
            "max_stale is set but consistency is \"{}\"; it has no effect",
            consistency.as_str()
        ));
    }
    // With a cluster, the one data source is the cluster, named `name`.
    let (sources, cluster) = match cluster {
        None => (servers, None),
        Some((name, failover_after, failback_interval)) => {
            let first = &servers[0];
            let source = Server {
                url: name,
                scheme: first.scheme,
                host: first.host.clone(),
                port: first.port,
            };
            let cluster = Cluster {
                members: servers,
                failover_after,
                failback_interval,
            };
            (vec![source], Some(cluster))
        }
    };

    Ok(Config {
        servers: sources,
        token,
        prefix,
        weight: u32::try_from(weight).unwrap_or(u32::MAX),
        keepalive,
        fetch_interval,
        timeout,
        skip_keys,
        default_service,
        dump,
        tls_ca_file: tls.ca_file,
        tls_verify: tls.verify,
        max_response_bytes: usize::try_from(max_response_bytes).unwrap_or(usize::MAX),
        on_empty_prefix,
        gzip,
        backoff,
        share,
        cluster,
        consistency,
        max_stale,
        scope,
        token_file: token_file.map(TokenFile::new),
        tls_cert_file: tls.cert_file,
        tls_key_file: tls.key_file,
        tls_server_name: tls.server_name,
    })
}

/// `cluster`: its name (default: the first server's URL), `failover_after`
/// and `failback_interval`.
fn parse_cluster(
    o: &mut Obj<'_>,
    servers: &[Server],
    warnings: &mut Vec<String>,
) -> Result<Option<(String, u32, std::time::Duration)>, ConfigError> {
    let Some(mut sub) = o.object("cluster")? else {
        return Ok(None);
    };
    let name = match sub.get(fields::CLUSTER_NAME.key()) {
        None => servers[0].url.clone(),
        Some(v) => {
            let n = string(v, fields::CLUSTER_NAME.path)?;
            let valid = (1..=255).contains(&n.len())
                && !n.ends_with('/')
                && n.bytes().all(|b| b.is_ascii_graphic());
            if !valid {
                return Err(ConfigError::new(
                    fields::CLUSTER_NAME.path,
                    format!(
                        "expected 1 to 255 printable ASCII characters without spaces, not ending in \"/\", got {}",
                        show(v)
                    ),
                ));
            }
            n.to_string()
        }
    };
    let failover_after = fields::CLUSTER_FAILOVER_AFTER.int(&mut sub)?;
    let failback = fields::CLUSTER_FAILBACK_INTERVAL.duration(&mut sub)?;
    sub.finish(warnings);
    if servers.len() == 1 {
        warnings.push(
            "cluster is set with a single server: there is no other member to fail over to"
                .to_string(),
        );
    }
    Ok(Some((
        name,
        u32::try_from(failover_after).unwrap_or(u32::MAX),
        failback,
    )))
}

fn parse_consistency(o: &mut Obj<'_>) -> Result<Consistency, ConfigError> {
    let field = fields::CONSISTENCY;
    let v = o.get(field.key());
    let spelled = match v {
        None => field.default_str(),
        Some(Value::String(s)) => s.as_str(),
        Some(_) => "",
    };
    Consistency::ALL
        .into_iter()
        .find(|c| c.as_str() == spelled)
        .ok_or_else(|| one_of_error(field, v.unwrap_or(&Value::Null)))
}

/// `dc`, `namespace`, `partition`: 1 to 64 characters from `A-Z a-z 0-9 . _ -`
/// (what Consul accepts for these names), sent as query parameters.
fn parse_name(o: &mut Obj<'_>, field: fields::Field) -> Result<Option<String>, ConfigError> {
    let Some(v) = o.get(field.key()) else {
        return Ok(None);
    };
    let s = string(v, field.path)?;
    let valid = (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !valid {
        return Err(ConfigError::new(
            field.path,
            format!(
                "expected 1 to 64 characters from A-Z a-z 0-9 . _ -, got {}",
                show(v)
            ),
        ));
    }
    Ok(Some(s.to_string()))
}

fn parse_token(o: &mut Obj<'_>) -> Result<Secret, ConfigError> {
    let path = fields::TOKEN.path;
    match o.get(fields::TOKEN.key()) {
        None => Ok(Secret::default()),
        Some(Value::String(t)) if t.chars().any(char::is_control) => Err(ConfigError::new(
            path,
            "must not contain control characters",
        )),
        Some(Value::String(t)) => Ok(Secret::new(t.as_str())),
        // Never show the value: it may be the secret.
        Some(v) => Err(ConfigError::new(
            path,
            format!("expected a string, got {}", type_name(v)),
        )),
    }
}

fn normalize_prefix(raw: &str) -> Result<String, ConfigError> {
    let p = raw.trim_matches('/');
    let fail = |why: &str| {
        Err(ConfigError::new(
            fields::PREFIX.path,
            format!("{why}, got {}", show_str(raw)),
        ))
    };
    if p.is_empty() {
        return fail("must not be empty or only \"/\"");
    }
    if p.contains("//") {
        return fail("must not contain \"//\"");
    }
    if p.chars().any(char::is_control) {
        return fail("must not contain control characters");
    }
    if p.contains(['?', '#']) {
        return fail("must not contain \"?\" or \"#\"");
    }
    Ok(p.to_string())
}

fn parse_timeouts(o: &mut Obj<'_>, warnings: &mut Vec<String>) -> Result<Timeouts, ConfigError> {
    let Some(mut sub) = o.object("timeout")? else {
        return Ok(Timeouts {
            connect: fields::TIMEOUT_CONNECT.default_duration(),
            read: fields::TIMEOUT_READ.default_duration(),
            wait: fields::TIMEOUT_WAIT.default_duration(),
        });
    };
    let t = Timeouts {
        connect: fields::TIMEOUT_CONNECT.duration(&mut sub)?,
        read: fields::TIMEOUT_READ.duration(&mut sub)?,
        wait: fields::TIMEOUT_WAIT.duration(&mut sub)?,
    };
    sub.finish(warnings);
    Ok(t)
}

fn parse_skip_keys(
    o: &mut Obj<'_>,
    prefix: &str,
    warnings: &mut Vec<String>,
) -> Result<Vec<String>, ConfigError> {
    let Some(v) = o.get(fields::SKIP_KEYS.key()) else {
        return Ok(Vec::new());
    };
    let items = match as_array(v) {
        Some(items) if !items.is_empty() => items,
        _ => {
            return Err(ConfigError::new(
                fields::SKIP_KEYS.path,
                format!("expected a non-empty array of strings, got {}", show(v)),
            ))
        }
    };
    let want = format!("{prefix}/");
    let mut keys = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = format!("skip_keys[{i}]");
        let k = string(item, &path)?;
        if !(k.starts_with(&want) && k.ends_with('/') && k.len() > want.len()) {
            warnings.push(format!(
                "{path}: {} can never match: skip_keys are compared exactly with \"{prefix}/<service>/\"",
                show_str(k)
            ));
        }
        keys.push(k.to_string());
    }
    Ok(keys)
}

fn parse_default_service(
    o: &mut Obj<'_>,
    warnings: &mut Vec<String>,
) -> Result<Option<DefaultService>, ConfigError> {
    let Some(mut sub) = o.object("default_service")? else {
        return Ok(None);
    };
    let host_field = fields::DEFAULT_SERVICE_HOST;
    let host = match sub.get(host_field.key()) {
        None => return Err(ConfigError::new(host_field.path, "required")),
        Some(v) => string(v, host_field.path)?,
    };
    if host.is_empty() {
        return Err(ConfigError::new(
            host_field.path,
            "expected a non-empty string, got \"\"",
        ));
    }
    let port = match fields::DEFAULT_SERVICE_PORT.read_int(&mut sub)? {
        None => {
            return Err(ConfigError::new(
                fields::DEFAULT_SERVICE_PORT.path,
                "required",
            ))
        }
        Some(p) => u16::try_from(p).unwrap_or(u16::MAX),
    };
    let mut metadata = match sub.get("metadata") {
        None => Map::new(),
        Some(v) => match as_object(v) {
            Some(m) => m.clone(),
            None => {
                return Err(ConfigError::new(
                    "default_service.metadata",
                    format!("expected an object, got {}", show(v)),
                ))
            }
        },
    };
    for field in fields::DEFAULT_SERVICE_METADATA {
        let n = match metadata.get(field.key()) {
            None | Some(Value::Null) => field.default_int() as i64,
            Some(v) => match int_value(v).and_then(|n| i64::try_from(n).ok()) {
                Some(n) => n,
                None => {
                    return Err(ConfigError::new(
                        field.path,
                        format!("expected an integer, got {}", show(v)),
                    ))
                }
            },
        };
        metadata.insert(field.key().to_string(), Value::from(n));
    }
    sub.finish(warnings);
    Ok(Some(DefaultService {
        host: host.to_string(),
        port,
        metadata,
    }))
}

fn parse_dump(o: &mut Obj<'_>, warnings: &mut Vec<String>) -> Result<Option<Dump>, ConfigError> {
    let Some(mut sub) = o.object("dump")? else {
        return Ok(None);
    };
    let path = match sub.get(fields::DUMP_PATH.key()) {
        None => return Err(ConfigError::new(fields::DUMP_PATH.path, "required")),
        Some(v) => path_string(v, fields::DUMP_PATH.path)?,
    };
    let dump = Dump {
        path: PathBuf::from(path),
        load_on_init: fields::DUMP_LOAD_ON_INIT.bool(&mut sub)?,
        expire: u64::try_from(fields::DUMP_EXPIRE.int(&mut sub)?).unwrap_or(u64::MAX),
    };
    sub.finish(warnings);
    Ok(Some(dump))
}

/// `tls`, and whether it was given at all (for the "no https server" warning).
fn parse_tls(o: &mut Obj<'_>, warnings: &mut Vec<String>) -> Result<(Tls, bool), ConfigError> {
    let Some(mut sub) = o.object("tls")? else {
        return Ok((
            Tls {
                verify: fields::TLS_VERIFY.default_bool(),
                ..Tls::default()
            },
            false,
        ));
    };
    let mut path = |field: fields::Field| -> Result<Option<PathBuf>, ConfigError> {
        match sub.get(field.key()) {
            None => Ok(None),
            Some(v) => Ok(Some(PathBuf::from(path_string(v, field.path)?))),
        }
    };
    let ca_file = path(fields::TLS_CA_FILE)?;
    let cert_file = path(fields::TLS_CERT_FILE)?;
    let key_file = path(fields::TLS_KEY_FILE)?;
    if cert_file.is_some() != key_file.is_some() {
        let missing = if cert_file.is_some() {
            fields::TLS_KEY_FILE
        } else {
            fields::TLS_CERT_FILE
        };
        return Err(ConfigError::new(
            missing.path,
            "required when tls.cert_file or tls.key_file is set (a client certificate needs both)",
        ));
    }
    let server_name = match sub.get(fields::TLS_SERVER_NAME.key()) {
        None => None,
        Some(v) => {
            let n = string(v, fields::TLS_SERVER_NAME.path)?;
            if rustls::pki_types::ServerName::try_from(n).is_err() {
                return Err(ConfigError::new(
                    fields::TLS_SERVER_NAME.path,
                    format!("expected a DNS name or an IP address, got {}", show(v)),
                ));
            }
            Some(n.to_string())
        }
    };
    let verify = fields::TLS_VERIFY.bool(&mut sub)?;
    sub.finish(warnings);
    Ok((
        Tls {
            ca_file,
            verify,
            cert_file,
            key_file,
            server_name,
        },
        true,
    ))
}

fn parse_on_empty_prefix(o: &mut Obj<'_>) -> Result<EmptyPrefixPolicy, ConfigError> {
    let field = fields::ON_EMPTY_PREFIX;
    let v = o.get(field.key());
    let spelled = match v {
        None => field.default_str(),
        Some(Value::String(s)) => s.as_str(),
        Some(_) => "",
    };
    EmptyPrefixPolicy::ALL
        .into_iter()
        .find(|p| p.as_str() == spelled)
        .ok_or_else(|| on_empty_prefix_error(v.unwrap_or(&Value::Null)))
}

fn on_empty_prefix_error(v: &Value) -> ConfigError {
    one_of_error(fields::ON_EMPTY_PREFIX, v)
}

/// `expected "a" or "b", got ...` for a [`Rule::OneOf`] field.
fn one_of_error(field: fields::Field, v: &Value) -> ConfigError {
    let allowed = match field.rule {
        Rule::OneOf(values) => values
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(" or "),
        _ => String::new(),
    };
    ConfigError::new(field.path, format!("expected {allowed}, got {}", show(v)))
}

fn parse_backoff(o: &mut Obj<'_>, warnings: &mut Vec<String>) -> Result<Backoff, ConfigError> {
    let (initial_field, max_field) = (fields::BACKOFF_INITIAL, fields::BACKOFF_MAX);
    let (mut initial, mut max, mut max_given) =
        (initial_field.default_int(), max_field.default_int(), false);
    if let Some(mut sub) = o.object("backoff")? {
        initial = initial_field.int(&mut sub)?;
        if let Some(v) = sub.get(max_field.key()) {
            match int_value(v) {
                Some(ms) if (initial..=MAX_MS).contains(&ms) => {
                    max = ms;
                    max_given = true;
                }
                _ => {
                    return Err(ConfigError::new(
                        max_field.path,
                        format!(
                        "expected an integer from backoff.initial ({initial}) to {MAX_MS}, got {}",
                        show(v)
                    ),
                    ))
                }
            }
        }
        sub.finish(warnings);
    }
    if !max_given && max < initial {
        return Err(ConfigError::new(
            max_field.path,
            format!(
                "expected an integer >= backoff.initial ({initial}), got {max} (the default); set backoff.max"
            ),
        ));
    }
    let ms = |n: i128| std::time::Duration::from_millis(u64::try_from(n).unwrap_or(u64::MAX));
    Ok(Backoff {
        initial: ms(initial),
        max: ms(max),
    })
}

fn parse_share(o: &mut Obj<'_>, warnings: &mut Vec<String>) -> Result<Share, ConfigError> {
    let mut share = Share {
        enabled: fields::SHARE_ENABLED.default_bool(),
        dir: PathBuf::from(fields::SHARE_DIR.default_str()),
        group: None,
        previous_group: None,
    };
    let Some(mut sub) = o.object("share")? else {
        return Ok(share);
    };
    share.enabled = fields::SHARE_ENABLED.bool(&mut sub)?;
    if let Some(v) = sub.get(fields::SHARE_DIR.key()) {
        let dir = path_string(v, fields::SHARE_DIR.path)?;
        if !dir.starts_with('/') {
            return Err(ConfigError::new(
                fields::SHARE_DIR.path,
                format!("expected an absolute path, got {}", show(v)),
            ));
        }
        share.dir = PathBuf::from(dir);
    }
    if let Some(v) = sub.get(fields::SHARE_GROUP.key()) {
        share.group = Some(parse_group(v, &fields::SHARE_GROUP)?);
    }
    if let Some(v) = sub.get(fields::SHARE_PREVIOUS_GROUP.key()) {
        share.previous_group = Some(parse_group(v, &fields::SHARE_PREVIOUS_GROUP)?);
    }
    sub.finish(warnings);
    Ok(share)
}

/// 1 to 64 characters from `A-Z a-z 0-9 . _ -`, not `.` or `..` (the group
/// becomes part of a file name); a non-negative integer is taken as its digits.
fn parse_group(v: &Value, field: &fields::Field) -> Result<String, ConfigError> {
    let group = match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(_) => int_value(v).filter(|n| *n >= 0).map(|n| n.to_string()),
        _ => None,
    };
    let valid = |g: &str| {
        (1..=64).contains(&g.len())
            && g != "."
            && g != ".."
            && g.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    match group {
        Some(g) if valid(&g) => Ok(g),
        _ => Err(ConfigError::new(
            field.path,
            format!(
                "expected 1 to 64 characters from A-Z a-z 0-9 . _ - (not \".\" or \"..\"), got {}",
                show(v)
            ),
        )),
    }
}
