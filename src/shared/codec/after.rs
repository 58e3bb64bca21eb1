//! Validation of a follower's next file against the table it serves now.
//!
//! Most files differ from the previous one in a few services' nodes (the
//! leader patches its snapshot, `patch.rs`). The expensive checks of a
//! validation are per name: its order against the previous name and the
//! index lookup that must reach it, a random read into the index. A record
//! whose name is, byte for byte, the name of the previous table's record at
//! the same place, in a file with the previous table's heads, seed, counts
//! and index, passed those checks already: only its nodes are checked
//! (UTF-8) again, and only when they differ.

use super::{raw_record, u32_at, validate_header, validated, Table, HEADER_LEN};

/// The layout of `b` when it is such a file and every check holds; `None`
/// otherwise, for a whole validation (which names what is wrong).
pub(super) fn validate_after(b: &[u8], prev: &Table) -> Option<Table> {
    let p = prev.as_bytes();
    let (l, heads) = validate_header(b).ok()?;
    let seed = u32_at(b, 36)?;
    if l.count != prev.count
        || l.slots != prev.mask + 1
        || seed != prev.seed
        || l.records_at != prev.records_at
        || b.get(HEADER_LEN..l.records_at)? != p.get(HEADER_LEN..prev.records_at)?
        || b.get(l.index_at()..)? != p.get(prev.index_at..)?
    {
        return None;
    }
    let mut at = l.records_at;
    let mut nodes = 0u64;
    for i in 0..l.count {
        if u32_at(b, l.offsets_at + 4 * i)? as usize != at {
            return None;
        }
        let r = raw_record(b, at, l.offsets_at)?;
        let was_at = u32_at(p, prev.offsets_at + 4 * i)? as usize;
        let was = raw_record(p, was_at, prev.offsets_at)?;
        // Server, head, tail length, then the tail: the same name.
        if b.get(at + 12..at + 20)? != p.get(was_at + 12..was_at + 20)?
            || b.get(r.tail.0..r.tail.0 + r.tail.1)?
                != p.get(was.tail.0..was.tail.0 + was.tail.1)?
        {
            return None;
        }
        let json = b.get(r.json.0..r.json.0 + r.json.1)?;
        if json != p.get(was.json.0..was.json.0 + was.json.1)? {
            std::str::from_utf8(json).ok()?;
        }
        nodes += u64::from(r.node_count);
        at = r.end;
    }
    if at != l.offsets_at {
        return None;
    }
    Some(validated(b, &l, heads, nodes))
}
