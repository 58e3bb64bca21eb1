//! `PUT /v1/acl/bootstrap` as Consul 1.14 answers it (`agent/acl_endpoint.go`
//! `ACLBootstrap`): once 200 with the new management token, then
//! `403 Permission denied: ACL bootstrap no longer allowed (reset index: N)`;
//! `401 ACL support disabled` when ACLs are off.
//!
//! The double has one management token (`--token`), so the bootstrap hands
//! out that secret: a client that bootstraps and then uses the `SecretID` works
//! as against Consul. Consul 1.14 ignores the request body (a
//! `BootstrapSecret` is a 1.15+ feature), and so does the double.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hyper::{Method, StatusCode};
use rand::Rng;

use crate::body::Reply;
use crate::state::{lock, Shared};

/// The built-in policy every bootstrap token carries.
const GLOBAL_MANAGEMENT_ID: &str = "00000000-0000-0000-0000-000000000001";

pub fn handle(shared: &Shared, method: &Method) -> Reply {
    const ALLOW: &str = "OPTIONS,PUT";
    if method == Method::OPTIONS {
        return Reply::new(StatusCode::OK).header("allow", ALLOW);
    }
    if method != Method::PUT {
        return Reply::text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {method} not allowed"),
        )
        .header("allow", ALLOW);
    }
    let Some(secret) = shared.cfg.token.as_deref() else {
        return Reply::text(StatusCode::UNAUTHORIZED, "ACL support disabled");
    };
    let mut done = lock(&shared.acl_bootstrap_index);
    if let Some(reset) = *done {
        return Reply::text(
            StatusCode::FORBIDDEN,
            format!("Permission denied: ACL bootstrap no longer allowed (reset index: {reset})"),
        );
    }
    // An ACL write through Raft: it consumes an index but leaves the KV tables alone.
    let index = shared.write().consume_index();
    *done = Some(index);
    Reply::json(StatusCode::OK, token_json(secret, index))
}

/// `aclBootstrapResponse`: the legacy `ID`, then the `structs.ACLToken`
/// fields in Go's field order (serde_json's map would sort them), compact.
fn token_json(secret: &str, index: u64) -> String {
    use serde_json::{json, Value};
    let mut hash = [0u8; 32];
    rand::thread_rng().fill(&mut hash);
    let fields: [(&str, Value); 10] = [
        ("ID", json!(secret)),
        ("AccessorID", json!(random_uuid())),
        ("SecretID", json!(secret)),
        ("Description", json!("Bootstrap Token (Global Management)")),
        (
            "Policies",
            json!([{"ID": GLOBAL_MANAGEMENT_ID, "Name": "global-management"}]),
        ),
        ("Local", json!(false)),
        ("CreateTime", json!(rfc3339_nano_utc(SystemTime::now()))),
        (
            "Hash",
            json!(base64::engine::general_purpose::STANDARD.encode(hash)),
        ),
        ("CreateIndex", json!(index)),
        ("ModifyIndex", json!(index)),
    ];
    let parts: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}:{v}", Value::from(*k)))
        .collect();
    format!("{{{}}}", parts.join(","))
}

fn random_uuid() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Go's `time.RFC3339Nano` for a UTC instant (trailing zeros of the fraction dropped).
fn rfc3339_nano_utc(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    let mut s = format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
    let nanos = d.subsec_nanos();
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn go_time_format() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 120_000_000);
        assert_eq!(rfc3339_nano_utc(t), "2023-11-14T22:13:20.12Z");
        assert_eq!(rfc3339_nano_utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339_nano_utc(leap), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn uuid_shape() {
        let u = random_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(u.matches('-').count(), 4);
    }
}
