//! Reading snapshot files of the previous release (`CKVSNAP1`): during a
//! reload a new follower may read an old leader's file (`inherit_previous`).
//! They are decoded and laid out again in the current format, in the heap.
//!
//! ```text
//! "CKVSNAP1" seq:u64 flags:u8 [received_us:u64] count:u32
//! count × { server:u16 generation:u64 node_count:u32
//!           name_len:u32 name[name_len] json_len:u32 json[json_len] }
//! ```
//!
//! `received_us` is present when flag 4 is set; flag 1 is "from the dump",
//! 2 is "synced". Services may come in any order.

use crate::snapshot::{Meta, Name, ServiceRef};

pub const MAGIC: &[u8; 8] = b"CKVSNAP1";
const FLAG_FROM_DUMP: u8 = 1;
const FLAG_SYNCED: u8 = 2;
const FLAG_RECEIVED: u8 = 4;
/// The smallest service: server, generation, node_count, two lengths.
const MIN_SERVICE: usize = 22;

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
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn str(&mut self) -> Result<&'a str, String> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|e| format!("snapshot string: {e}"))
    }
}

/// Decodes a `CKVSNAP1` file; the services borrow from `buf`.
pub fn decode(buf: &[u8]) -> Result<(Meta, Vec<ServiceRef<'_>>), String> {
    let mut r = Reader { buf, pos: 0 };
    if r.take(8)? != MAGIC {
        return Err("not a ckv snapshot (bad magic)".into());
    }
    let seq = r.u64()?;
    let [flags] = r.array()?;
    let received_us = if flags & FLAG_RECEIVED != 0 {
        r.u64()?
    } else {
        0
    };
    let count = r.u32()? as usize;
    // Refuse counts the rest of the buffer cannot hold before allocating.
    if count > (buf.len() - r.pos) / MIN_SERVICE {
        return Err(format!(
            "snapshot claims {count} services in {} bytes",
            buf.len()
        ));
    }
    let mut services = Vec::new();
    services
        .try_reserve_exact(count)
        .map_err(|_| format!("cannot allocate {count} services"))?;
    for _ in 0..count {
        let server = u16::from_le_bytes(r.array()?);
        let generation = r.u64()?;
        let node_count = r.u32()?;
        let name = r.str()?;
        let nodes_json = r.str()?;
        services.push(ServiceRef {
            name: Name::whole(name),
            generation,
            server,
            node_count,
            nodes_json,
        });
    }
    if r.pos != buf.len() {
        return Err(format!(
            "{} stray bytes after the snapshot",
            buf.len() - r.pos
        ));
    }
    let meta = Meta {
        seq,
        from_dump: flags & FLAG_FROM_DUMP != 0,
        synced: flags & FLAG_SYNCED != 0,
        received_us,
    };
    Ok((meta, services))
}

/// Writes a `CKVSNAP1` file, as the previous release did: for tests of the
/// reading side only.
#[doc(hidden)]
pub fn encode(meta: &Meta, services: &[ServiceRef<'_>], with_received: bool) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&meta.seq.to_le_bytes());
    let mut flags = 0;
    if meta.from_dump {
        flags |= FLAG_FROM_DUMP;
    }
    if meta.synced {
        flags |= FLAG_SYNCED;
    }
    if with_received {
        flags |= FLAG_RECEIVED;
    }
    out.push(flags);
    if with_received {
        out.extend_from_slice(&meta.received_us.to_le_bytes());
    }
    out.extend_from_slice(&(services.len() as u32).to_le_bytes());
    for s in services {
        out.extend_from_slice(&s.server.to_le_bytes());
        out.extend_from_slice(&s.generation.to_le_bytes());
        out.extend_from_slice(&s.node_count.to_le_bytes());
        let name = s.name.to_str();
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(s.nodes_json.len() as u32).to_le_bytes());
        out.extend_from_slice(s.nodes_json.as_bytes());
    }
    out
}
