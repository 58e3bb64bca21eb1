//! Consul's `[]DirEntry` JSON. Every entry keeps its compact rendering from
//! the time it was written (`Entry::compact_json`), so a `?recurse` answer
//! is a concatenation instead of a fresh render: at 100k keys the double
//! must not be what a propagation measurement measures.

use bytes::Bytes;

use crate::gocompat::write_json_string;
use crate::store::Entry;

fn push_u64(out: &mut Vec<u8>, n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

fn push_base64(out: &mut Vec<u8>, v: &[u8]) {
    use base64::Engine;
    let engine = &base64::engine::general_purpose::STANDARD;
    let start = out.len();
    out.resize(start + base64::encoded_len(v.len(), true).unwrap_or(0), 0);
    let n = engine.encode_slice(v, &mut out[start..]).unwrap_or(0);
    out.truncate(start + n);
}

/// One entry as a JSON object; `pretty` indents it as the second level of
/// a `?pretty` array.
fn write_entry(out: &mut Vec<u8>, k: &[u8], e: &Entry, pretty: bool) {
    let (nl, ind1, ind2, colon) = if pretty {
        ("\n", "    ", "        ", ": ")
    } else {
        ("", "", "", ":")
    };
    let field = |out: &mut Vec<u8>, name: &str, first: bool| {
        if !first {
            out.push(b',');
        }
        out.extend_from_slice(nl.as_bytes());
        out.extend_from_slice(ind2.as_bytes());
        out.push(b'"');
        out.extend_from_slice(name.as_bytes());
        out.push(b'"');
        out.extend_from_slice(colon.as_bytes());
    };
    out.extend_from_slice(nl.as_bytes());
    out.extend_from_slice(ind1.as_bytes());
    out.push(b'{');
    field(out, "LockIndex", true);
    push_u64(out, e.lock_index);
    field(out, "Key", false);
    write_json_string(out, k);
    field(out, "Flags", false);
    push_u64(out, e.flags);
    field(out, "Value", false);
    match &e.value {
        Some(v) => {
            out.push(b'"');
            push_base64(out, v);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    if let Some(s) = &e.session {
        field(out, "Session", false);
        write_json_string(out, s.as_bytes());
    }
    field(out, "CreateIndex", false);
    push_u64(out, e.create_index);
    field(out, "ModifyIndex", false);
    push_u64(out, e.modify_index);
    out.extend_from_slice(nl.as_bytes());
    out.extend_from_slice(ind1.as_bytes());
    out.push(b'}');
}

/// The compact object of one entry, kept in [`Entry::compact_json`].
pub fn compact_entry(k: &[u8], e: &Entry) -> Bytes {
    let mut out =
        Vec::with_capacity(96 + k.len() + e.value.as_ref().map_or(0, |v| v.len() * 4 / 3));
    write_entry(&mut out, k, e, false);
    Bytes::from(out)
}

/// Serialises entries as Consul's `[]DirEntry` JSON, rendering each one
/// afresh; returns how many.
pub fn write_entries<'a>(
    out: &mut Vec<u8>,
    entries: impl Iterator<Item = (&'a [u8], &'a Entry)>,
    pretty: bool,
) -> usize {
    let mut n = 0;
    out.push(b'[');
    for (k, e) in entries {
        if n > 0 {
            out.push(b',');
        }
        n += 1;
        write_entry(out, k, e, pretty);
    }
    if pretty && n > 0 {
        out.push(b'\n');
    }
    out.push(b']');
    if pretty {
        out.push(b'\n');
    }
    n
}

/// The compact array of `entries` from their stored renderings (the same
/// bytes as [`write_entries`] without `pretty`), in one allocation.
pub fn concat_compact(entries: &[&Entry]) -> Vec<u8> {
    let len = entries
        .iter()
        .map(|e| e.compact_json.len() + 1)
        .sum::<usize>()
        + 2;
    let mut out = Vec::with_capacity(len);
    out.push(b'[');
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&e.compact_json);
    }
    out.push(b']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &[u8], value: Option<&[u8]>, session: Option<&str>, index: u64) -> Entry {
        let mut e = Entry {
            lock_index: index % 3,
            flags: index.wrapping_mul(7),
            value: value.map(<[u8]>::to_vec),
            session: session.map(str::to_owned),
            create_index: 1,
            modify_index: index,
            compact_json: Bytes::new(),
        };
        e.compact_json = compact_entry(key, &e);
        e
    }

    #[test]
    fn stored_renderings_concatenate_to_a_fresh_render() {
        let entries = [
            (
                &b"p/a/10.0.0.1:80"[..],
                entry(b"p/a/10.0.0.1:80", Some(br#"{"weight":1}"#), None, 5),
            ),
            (
                &b"p/\"q\\<>&\n"[..],
                entry(b"p/\"q\\<>&\n", None, Some("s-1"), u64::MAX),
            ),
            (
                &b"p/\xc3\xa9\xff"[..],
                entry(b"p/\xc3\xa9\xff", Some(&[0, 255, 10]), None, 0),
            ),
        ];
        for n in 0..=entries.len() {
            let mut fresh = Vec::new();
            write_entries(&mut fresh, entries[..n].iter().map(|(k, e)| (*k, e)), false);
            let refs: Vec<&Entry> = entries[..n].iter().map(|(_, e)| e).collect();
            assert_eq!(
                String::from_utf8_lossy(&concat_compact(&refs)),
                String::from_utf8_lossy(&fresh)
            );
        }
        let mut fresh = Vec::new();
        write_entries(&mut fresh, entries.iter().map(|(k, e)| (*k, e)), false);
        let v: serde_json::Value = serde_json::from_slice(&fresh).unwrap();
        assert_eq!(v[1]["ModifyIndex"], u64::MAX);
        assert_eq!(v[1]["Session"], "s-1");
        assert_eq!(v[1]["Value"], serde_json::Value::Null);
    }
}
