//! The snapshot as bytes, for the shared directory. Little-endian, length
//! prefixed, checked on read: a truncated or foreign file is an error, never a
//! panic.
//!
//! ```text
//! "CKVSNAP1" seq:u64 flags:u8 [received_us:u64] count:u32
//! count × { server:u16 generation:u64 node_count:u32
//!           name_len:u32 name[name_len] json_len:u32 json[json_len] }
//! ```
//!
//! `received_us` is present when flag `FLAG_RECEIVED` is set (this release
//! always sets it); a snapshot without it (the previous release) reads with
//! `received_us = 0`.

use std::collections::HashMap;
use std::sync::Arc;

use crate::snapshot::{Service, Snapshot};

const MAGIC: &[u8; 8] = b"CKVSNAP1";
const FLAG_FROM_DUMP: u8 = 1;
const FLAG_SYNCED: u8 = 2;
/// `received_us` follows the flags.
const FLAG_RECEIVED: u8 = 4;

pub fn encode(s: &Snapshot) -> Vec<u8> {
    let size: usize = s
        .services
        .iter()
        .map(|(n, v)| n.len() + v.nodes_json.len() + 22)
        .sum();
    let mut out = Vec::with_capacity(size + 29);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&s.seq.to_le_bytes());
    let mut flags = FLAG_RECEIVED;
    if s.from_dump {
        flags |= FLAG_FROM_DUMP;
    }
    if s.synced {
        flags |= FLAG_SYNCED;
    }
    out.push(flags);
    out.extend_from_slice(&s.received_us.to_le_bytes());
    out.extend_from_slice(&(s.services.len() as u32).to_le_bytes());
    for (name, svc) in &s.services {
        out.extend_from_slice(&svc.server.to_le_bytes());
        out.extend_from_slice(&svc.generation.to_le_bytes());
        out.extend_from_slice(&svc.node_count.to_le_bytes());
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(svc.nodes_json.len() as u32).to_le_bytes());
        out.extend_from_slice(svc.nodes_json.as_bytes());
    }
    out
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| format!("snapshot truncated at byte {}", self.pos))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn str(&mut self) -> Result<&'a str, String> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|e| format!("snapshot string: {e}"))
    }
}

/// Decodes a snapshot. Services whose generation is unchanged from
/// `previous` share its allocations, so following a change costs little.
pub fn decode(buf: &[u8], previous: Option<&Snapshot>) -> Result<Snapshot, String> {
    let mut r = Reader { buf, pos: 0 };
    if r.take(8)? != MAGIC {
        return Err("not a ckv snapshot (bad magic)".into());
    }
    let seq = r.u64()?;
    let flags = r.u8()?;
    let received_us = if flags & FLAG_RECEIVED != 0 {
        r.u64()?
    } else {
        0
    };
    let count = r.u32()? as usize;
    // Each service takes at least 22 bytes: refuse counts the rest of the
    // buffer cannot hold, before allocating anything for them.
    if count > (buf.len() - r.pos) / 22 {
        return Err(format!(
            "snapshot claims {count} services in {} bytes",
            buf.len()
        ));
    }
    // Grow as entries decode, so a lying count costs nothing, and an
    // allocation failure is an error (not an abort).
    let mut services = HashMap::with_capacity(count.min(1024));
    for _ in 0..count {
        services
            .try_reserve(1)
            .map_err(|_| format!("cannot allocate {count} services"))?;
        let server = r.u16()?;
        let generation = r.u64()?;
        let node_count = r.u32()?;
        let name = r.str()?;
        let json = r.str()?;
        let reused = previous
            .and_then(|p| p.services.get_key_value(name))
            .filter(|(_, old)| old.generation == generation && *old.nodes_json == *json);
        let (name, nodes_json) = match reused {
            Some((k, old)) => (k.clone(), old.nodes_json.clone()),
            None => (Arc::from(name), Arc::from(json)),
        };
        services.insert(
            name,
            Service {
                generation,
                server,
                node_count,
                nodes_json,
            },
        );
    }
    if r.pos != buf.len() {
        return Err(format!(
            "{} stray bytes after the snapshot",
            buf.len() - r.pos
        ));
    }
    Ok(Snapshot {
        seq,
        services,
        from_dump: flags & FLAG_FROM_DUMP != 0,
        synced: flags & FLAG_SYNCED != 0,
        received_us,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        let mut s = Snapshot {
            seq: 42,
            synced: true,
            received_us: 1_700_000_000_123_456,
            ..Snapshot::default()
        };
        for i in 0..3u16 {
            s.services.insert(
                format!("http://h:1/v1/kv/upstreams/s{i}/").into(),
                Service {
                    generation: 40 + u64::from(i),
                    server: i,
                    node_count: 1,
                    nodes_json: format!(r#"[{{"host":"10.0.0.{i}","port":80,"weight":1}}]"#).into(),
                },
            );
        }
        s
    }

    #[test]
    fn round_trip_and_reuse() {
        let s = sample();
        let bytes = encode(&s);
        let back = decode(&bytes, None).unwrap();
        assert_eq!(back, s);
        let again = decode(&bytes, Some(&back)).unwrap();
        let name = "http://h:1/v1/kv/upstreams/s1/";
        assert!(Arc::ptr_eq(
            &again.services[name].nodes_json,
            &back.services[name].nodes_json
        ));
    }

    #[test]
    fn a_snapshot_without_receive_time_still_reads() {
        let s = sample();
        let v2 = encode(&s);
        assert_eq!(v2[16] & FLAG_RECEIVED, FLAG_RECEIVED);
        // The previous release's layout: no flag, no received_us.
        let mut v1 = v2[..17].to_vec();
        v1[16] &= !FLAG_RECEIVED;
        v1.extend_from_slice(&v2[25..]);
        let back = decode(&v1, None).unwrap();
        assert_eq!(back.received_us, 0);
        assert_eq!(back.services, s.services);
        assert_eq!(back.seq, 42);
        assert_eq!(decode(&v2, None).unwrap().received_us, s.received_us);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = encode(&sample());
        for n in 0..bytes.len() {
            assert!(
                decode(&bytes[..n], None).is_err(),
                "prefix of {n} bytes accepted"
            );
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(decode(&extra, None).is_err());
        let mut huge = bytes[..25].to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&huge, None).unwrap_err().contains("claims"));
    }
}
