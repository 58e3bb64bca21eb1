//! Reading snapshot files of the previous layout (`CKVSNAP2`): during a
//! reload a new follower may read an old leader's file. Its records are
//! checked (extents and UTF-8) and laid out again in the current format, in
//! the heap; its index is not read, the new table gets its own.
//!
//! ```text
//! header (64 bytes): magic "CKVSNAP2", seq u64, received_us u64,
//!   flags u32 (1 from the dump, 2 synced, 4 seeded hash), count u32,
//!   slots u32, seed u32, offsets_at u64, index_at u64, file_len u64
//! records from byte 64 up to offsets_at:
//!   generation u64, node_count u32, server u16, name_len u32, json_len u32,
//!   name[name_len], json[json_len]
//! ```

use super::codec::{u16_at, u32_at, u64_at};
use crate::snapshot::{Meta, Name, ServiceRef};

pub const MAGIC: &[u8; 8] = b"CKVSNAP2";
const HEADER_LEN: usize = 64;
const RECORD_FIXED: usize = 22;
const FLAG_FROM_DUMP: u32 = 1;
const FLAG_SYNCED: u32 = 2;
const KNOWN_FLAGS: u32 = 1 | 2 | 4;

fn text<'a>(b: &'a [u8], at: usize, len: usize, what: &str) -> Result<&'a str, String> {
    let bytes = at
        .checked_add(len)
        .and_then(|end| b.get(at..end))
        .ok_or_else(|| format!("{what} at byte {at} runs past the records"))?;
    std::str::from_utf8(bytes).map_err(|e| format!("{what} at byte {at} is not UTF-8: {e}"))
}

/// Decodes a `CKVSNAP2` file; the services borrow from `b`.
pub fn decode(b: &[u8]) -> Result<(Meta, Vec<ServiceRef<'_>>), String> {
    if b.len() < HEADER_LEN || &b[..8] != MAGIC {
        return Err("not a ckv snapshot of layout 2 (bad magic or truncated)".into());
    }
    let field = |at: usize| u64_at(b, at).unwrap_or(0);
    let small = |at: usize| u32_at(b, at).unwrap_or(0);
    let flags = small(24);
    if flags & !KNOWN_FLAGS != 0 {
        return Err(format!("unknown flags {flags:#x} in the header"));
    }
    let count = small(28) as usize;
    let (offsets_at, file_len) = (field(40), field(56));
    if file_len != b.len() as u64 {
        return Err(format!(
            "snapshot is {} bytes, its header says {file_len} (truncated or padded)",
            b.len()
        ));
    }
    if offsets_at < HEADER_LEN as u64 || offsets_at > file_len {
        return Err(format!(
            "offset table at byte {offsets_at}, outside the file"
        ));
    }
    let end = offsets_at as usize;
    // Refuse counts the records cannot hold before allocating.
    if count > (end - HEADER_LEN) / RECORD_FIXED {
        return Err(format!(
            "snapshot claims {count} services in {end} bytes of records"
        ));
    }
    let mut services = Vec::with_capacity(count);
    let mut at = HEADER_LEN;
    for i in 0..count {
        let fixed = b
            .get(at..at + RECORD_FIXED)
            .filter(|_| at + RECORD_FIXED <= end)
            .ok_or_else(|| format!("record {i} at byte {at} runs past the records"))?;
        let generation = u64_at(fixed, 0).unwrap_or(0);
        let node_count = u32_at(fixed, 8).unwrap_or(0);
        let server = u16_at(fixed, 12).unwrap_or(0);
        let name_len = u32_at(fixed, 14).unwrap_or(0) as usize;
        let json_len = u32_at(fixed, 18).unwrap_or(0) as usize;
        let name_at = at + RECORD_FIXED;
        let json_at = name_at.saturating_add(name_len);
        let rec_end = json_at.saturating_add(json_len);
        if rec_end > end {
            return Err(format!("record {i} at byte {at} runs past the records"));
        }
        services.push(ServiceRef {
            name: Name::whole(text(b, name_at, name_len, "name")?),
            generation,
            server,
            node_count,
            nodes_json: text(b, json_at, json_len, "nodes")?,
        });
        at = rec_end;
    }
    if at != end {
        return Err(format!("{} stray bytes after the last record", end - at));
    }
    let meta = Meta {
        seq: field(8),
        from_dump: flags & FLAG_FROM_DUMP != 0,
        synced: flags & FLAG_SYNCED != 0,
        received_us: field(16),
    };
    Ok((meta, services))
}

/// Writes a `CKVSNAP2` file as the previous layout did (index left empty,
/// which this reader never looks at): for tests of the reading side only.
#[doc(hidden)]
pub fn encode(meta: &Meta, services: &[ServiceRef<'_>]) -> Vec<u8> {
    let mut records = Vec::new();
    let mut offsets = Vec::new();
    for s in services {
        offsets.push((HEADER_LEN + records.len()) as u64);
        let name = s.name.to_str();
        records.extend_from_slice(&s.generation.to_le_bytes());
        records.extend_from_slice(&s.node_count.to_le_bytes());
        records.extend_from_slice(&s.server.to_le_bytes());
        records.extend_from_slice(&(name.len() as u32).to_le_bytes());
        records.extend_from_slice(&(s.nodes_json.len() as u32).to_le_bytes());
        records.extend_from_slice(name.as_bytes());
        records.extend_from_slice(s.nodes_json.as_bytes());
    }
    let slots = (services.len() * 2).max(1).next_power_of_two();
    let offsets_at = HEADER_LEN + records.len();
    let index_at = offsets_at + 8 * services.len();
    let file_len = index_at + 4 * slots;
    let mut flags = 0u32;
    if meta.from_dump {
        flags |= FLAG_FROM_DUMP;
    }
    if meta.synced {
        flags |= FLAG_SYNCED;
    }
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&meta.seq.to_le_bytes());
    out.extend_from_slice(&meta.received_us.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&(services.len() as u32).to_le_bytes());
    out.extend_from_slice(&(slots as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(offsets_at as u64).to_le_bytes());
    out.extend_from_slice(&(index_at as u64).to_le_bytes());
    out.extend_from_slice(&(file_len as u64).to_le_bytes());
    out.extend_from_slice(&records);
    for o in offsets {
        out.extend_from_slice(&o.to_le_bytes());
    }
    out.resize(file_len, 0);
    out
}
