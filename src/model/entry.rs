//! What the model remembers of one key, and how it tells whether the next
//! response repeats it without looking at the value again.
//!
//! Consul gives every entry a `ModifyIndex` and raises it on every write, so
//! an equal index means an equal value: the entry is skipped after a length
//! and hash check of the base64 text (which catches a server that reuses an
//! index for a new value; that entry is parsed again). A new index always
//! means parsing again, even if the text looks the same. Without a usable
//! index (absent, null, not a number: never from Consul) the base64 text is
//! kept beside the key and compared whole.

use super::keys::{KeyArena, Span};
use crate::kv::{Field, RawEntry};
use std::borrow::Cow;

/// What the entry contributed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Node,
    /// `check_status: false`, a `skip_keys` match, or a folder key.
    Quiet,
    Malformed,
}

/// `flags` bits.
pub(super) const HAS_INDEX: u8 = 1;
/// The base64 value is stored after the key in the arena.
pub(super) const VALUE_STORED: u8 = 2;
/// `json` points into this response's fresh node text, not (yet) into the
/// service's `nodes_json`.
pub(super) const FRESH: u8 = 4;
/// `json` is a value's tail in this response's memo text; the node's host
/// and port are read from the key when the service is rendered (no copy of
/// the node is made before its service's `nodes_json`).
pub(super) const FRESH_TAIL: u8 = 32;
/// Bits 3-4: which kind of JSON value `Value` was.
const VALUE_KIND_SHIFT: u8 = 3;
const VALUE_KIND_MASK: u8 = 3 << VALUE_KIND_SHIFT;

pub(super) const NO_SLOT: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
pub(super) struct Entry {
    /// The key's record in the [`KeyArena`].
    pub key: Span,
    pub index: u64,
    pub value_len: u32,
    pub value_hash: u32,
    /// The service slot of a node.
    pub slot: u32,
    /// A node's JSON object: a range of its service's `nodes_json`, or of
    /// the fresh text while `FRESH` is set, or the value's tail while
    /// `FRESH_TAIL` is.
    pub json: Span,
    pub kind: Kind,
    pub flags: u8,
}

impl Entry {
    pub fn is_node(&self) -> bool {
        self.kind == Kind::Node
    }

    /// Length of the entry's arena record (key, and value if stored).
    pub fn record_len(&self) -> u32 {
        if self.flags & VALUE_STORED != 0 {
            self.key.len + self.value_len
        } else {
            self.key.len
        }
    }
}

/// The parts of a `Value` field that are compared cheaply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fingerprint {
    kind: u8,
    len: u32,
    hash: u32,
}

impl Fingerprint {
    #[inline(always)]
    pub fn of(value: &Field<Cow<'_, str>>) -> Self {
        let (kind, text) = match value {
            Field::Ok(v) => (0, &**v),
            Field::Null => (1, ""),
            Field::Absent => (2, ""),
            Field::WrongType(t) => (3, *t),
        };
        Fingerprint {
            kind,
            len: u32::try_from(text.len()).unwrap_or(u32::MAX),
            hash: quick_hash(text.as_bytes()),
        }
    }

    pub fn of_entry(e: &Entry) -> Self {
        Fingerprint {
            kind: (e.flags & VALUE_KIND_MASK) >> VALUE_KIND_SHIFT,
            len: e.value_len,
            hash: e.value_hash,
        }
    }

    /// Writes the fingerprint into `e`.
    pub fn store(self, e: &mut Entry) {
        e.value_len = self.len;
        e.value_hash = self.hash;
        e.flags = (e.flags & !VALUE_KIND_MASK) | (self.kind << VALUE_KIND_SHIFT);
    }
}

/// The `ModifyIndex` of a raw entry when it is usable.
pub(super) fn index_of(raw: &RawEntry<'_>) -> Option<u64> {
    match raw.modify_index {
        Field::Ok(i) => Some(i),
        _ => None,
    }
}

/// Whether `raw` carries the value `e` was parsed from.
#[inline(always)]
pub(super) fn unchanged(e: &Entry, raw: &RawEntry<'_>, keys: &KeyArena) -> bool {
    match raw.modify_index {
        Field::Ok(i) => {
            if e.flags & HAS_INDEX == 0 || e.index != i {
                return false;
            }
            match &raw.value {
                // The common case, kept short.
                Field::Ok(v) => {
                    e.flags & VALUE_KIND_MASK == 0
                        && e.value_len as usize == v.len()
                        && e.value_hash == quick_hash(v.as_bytes())
                }
                other => Fingerprint::of_entry(e) == Fingerprint::of(other),
            }
        }
        _ => {
            e.flags & VALUE_STORED != 0
                && Fingerprint::of_entry(e) == Fingerprint::of(&raw.value)
                && match &raw.value {
                    Field::Ok(v) => keys.value_after(e.key, e.value_len) == v.as_bytes(),
                    _ => true,
                }
        }
    }
}

/// A fast 32-bit hash of a short text: two multiply lanes over 16-byte
/// steps. It only has to tell a changed value from the one seen under the
/// same index (a server that reuses an index), on every key of every
/// response, so speed matters more than strength.
#[inline]
pub(super) fn quick_hash(b: &[u8]) -> u32 {
    const K1: u64 = 0x9E37_79B9_7F4A_7C15;
    const K2: u64 = 0xC2B2_AE3D_27D4_EB4F;
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[i..i + 8]);
        u64::from_le_bytes(w)
    };
    let (mut a, mut c) = (b.len() as u64, K2);
    let mut i = 0;
    while i + 16 <= b.len() {
        a = (a ^ word(i)).wrapping_mul(K1).rotate_left(29);
        c = (c ^ word(i + 8)).wrapping_mul(K2).rotate_left(31);
        i += 16;
    }
    if b.len() >= 8 {
        // The last 8 bytes (overlapping what was read: still deterministic).
        a = (a ^ word(b.len() - 8)).wrapping_mul(K1).rotate_left(29);
        if i + 8 < b.len() {
            c = (c ^ word(i)).wrapping_mul(K2).rotate_left(31);
        }
    } else {
        let mut w = [0u8; 8];
        w[..b.len()].copy_from_slice(b);
        a = (a ^ u64::from_le_bytes(w)).wrapping_mul(K1).rotate_left(29);
    }
    let h = (a ^ c.rotate_left(17)).wrapping_mul(K2);
    (h >> 32) as u32 ^ h as u32
}

/// Byte equality of two keys, inlined (keys are short; a call to `memcmp`
/// per key costs more than the comparison).
#[inline]
pub(super) fn same_key(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let word = |s: &[u8], i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&s[i..i + 8]);
        u64::from_ne_bytes(w)
    };
    let n = a.len();
    if n < 8 {
        return a == b;
    }
    let mut i = 0;
    while i + 8 < n {
        if word(a, i) != word(b, i) {
            return false;
        }
        i += 8;
    }
    // The last 8 bytes, overlapping the previous word.
    word(a, n - 8) == word(b, n - 8)
}
