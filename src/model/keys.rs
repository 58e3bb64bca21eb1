//! The keys of the last accepted response, end to end in one buffer.
//!
//! One allocation for every key instead of one box each, in key order after
//! a compaction, so that walking a response against the previous one reads
//! memory front to back. A record is the key, followed by its base64 value
//! only when the entry has no usable `ModifyIndex` (the value is then what
//! tells a change).

/// Where a piece of text lives in one of the model's buffers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Span {
    pub off: u32,
    pub len: u32,
}

impl Span {
    pub fn range(self) -> std::ops::Range<usize> {
        self.off as usize..self.off as usize + self.len as usize
    }
}

/// Appends `text` to `buf`; `None` when the buffer would outgrow a `u32`
/// offset (4 GiB of text: far beyond any response the watcher accepts).
pub(super) fn push_text(buf: &mut String, parts: &[&str]) -> Option<Span> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let off = u32::try_from(buf.len()).ok()?;
    let len32 = u32::try_from(len).ok()?;
    off.checked_add(len32)?;
    for p in parts {
        buf.push_str(p);
    }
    Some(Span { off, len: len32 })
}

#[derive(Debug, Default)]
pub(super) struct KeyArena {
    bytes: String,
    /// Bytes of records no entry refers to any more.
    garbage: usize,
}

impl KeyArena {
    /// The key of the record at `key` (keys are valid UTF-8 when stored, but
    /// only bytes are compared).
    #[inline]
    pub fn get(&self, key: Span) -> &[u8] {
        // Spans are only made by `push` on this arena (and remapped by
        // `compact`), so the range is always in bounds.
        self.bytes.as_bytes().get(key.range()).unwrap_or_default()
    }

    /// The key of the record at `key` as text (keys are stored whole, so
    /// always found).
    #[inline]
    pub fn get_str(&self, key: Span) -> &str {
        self.bytes.get(key.range()).unwrap_or_default()
    }

    /// The value stored after the key of a record.
    pub fn value_after(&self, key: Span, value_len: u32) -> &[u8] {
        let start = key.off as usize + key.len as usize;
        self.bytes
            .as_bytes()
            .get(start..start + value_len as usize)
            .unwrap_or_default()
    }

    /// Stores a key (and, for an entry without an index, its value).
    pub fn push(&mut self, key: &str, value: Option<&str>) -> Option<Span> {
        let span = push_text(&mut self.bytes, &[key, value.unwrap_or_default()])?;
        Some(Span {
            off: span.off,
            len: key.len() as u32,
        })
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Room for `bytes` more without growing.
    pub fn reserve(&mut self, bytes: usize) {
        self.bytes.reserve(bytes);
    }

    /// Undoes every `push` since the arena was `len` long.
    pub fn truncate(&mut self, len: usize, garbage: usize) {
        self.bytes.truncate(len);
        self.garbage = garbage;
    }

    pub fn garbage(&self) -> usize {
        self.garbage
    }

    pub fn forget(&mut self, bytes: usize) {
        self.garbage += bytes;
    }

    /// Copies the live records, in the order given, into a buffer of their
    /// exact size, when dead records outweigh live ones (or the buffer holds
    /// far more capacity than text). `records` yields each live record's key
    /// span and full length, and receives its new key span.
    pub fn compact_if_wasteful<'e>(&mut self, records: impl Iterator<Item = (&'e mut Span, u32)>) {
        let live = self.bytes.len() - self.garbage;
        let wasteful =
            self.garbage > live.max(4096) || self.bytes.capacity() > 2 * self.bytes.len() + 4096;
        if !wasteful {
            return;
        }
        let mut fresh = String::with_capacity(live);
        for (key, record_len) in records {
            let start = key.off as usize;
            let record = self
                .bytes
                .get(start..start + record_len as usize)
                .unwrap_or_default();
            key.off = fresh.len() as u32;
            fresh.push_str(record);
        }
        self.bytes = fresh;
        self.garbage = 0;
    }
}
