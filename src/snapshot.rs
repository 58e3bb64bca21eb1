//! The immutable picture of every service that readers see.
//!
//! A snapshot is built off the nginx event loop, then published whole: a
//! reader holds an `Arc<Snapshot>` and never waits for the writer. Each
//! service carries its node list already rendered as JSON and the generation
//! at which it last changed, so a caller can tell cheaply whether one service
//! moved.
//!
//! The services live in one table in the shared file format
//! (`shared::codec`): built in the heap by the leader (or from the dump), or
//! a read-only mapping of the leader's file in a follower. Either way a
//! lookup borrows from the table, and the table lives as long as any holder
//! of the snapshot, even after the leader removed the file.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;
use std::sync::{Arc, OnceLock};

use crate::shared::codec::Table;

/// One service as the leader's models hold it: its nodes, pre-rendered, and
/// when they last changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Snapshot sequence number at which this service last changed.
    pub generation: u64,
    /// Index of the configured server the service comes from.
    pub server: u16,
    pub node_count: u32,
    /// JSON array of node objects (`[{"host":..,"port":..,"weight":..}]`).
    pub nodes_json: Arc<str>,
}

impl Service {
    /// This service under `name`, borrowed.
    pub fn as_ref<'a>(&'a self, name: &'a str) -> ServiceRef<'a> {
        ServiceRef {
            name: Name::whole(name),
            generation: self.generation,
            server: self.server,
            node_count: self.node_count,
            nodes_json: &self.nodes_json,
        }
    }
}

/// A service name as a table holds it: a head that many names share (their
/// server's `{server url}/v1/kv/{prefix}/`, stored once per file) and the
/// rest. The name is the two side by side; it compares, hashes and prints
/// as that one string.
#[derive(Clone, Copy)]
pub struct Name<'a> {
    head: &'a str,
    tail: &'a str,
}

impl<'a> Name<'a> {
    pub fn new(head: &'a str, tail: &'a str) -> Name<'a> {
        Name { head, tail }
    }

    /// A name held in one piece.
    pub fn whole(name: &'a str) -> Name<'a> {
        Name {
            head: "",
            tail: name,
        }
    }

    /// The shared head and the rest.
    pub fn parts(&self) -> (&'a str, &'a str) {
        (self.head, self.tail)
    }

    pub fn len(&self) -> usize {
        self.head.len() + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether this is the name `other`.
    pub fn is(&self, other: &str) -> bool {
        let o = other.as_bytes();
        o.len() == self.len()
            && o[..self.head.len()] == *self.head.as_bytes()
            && o[self.head.len()..] == *self.tail.as_bytes()
    }

    /// The name in one piece: borrowed when it is held in one piece.
    pub fn to_str(&self) -> Cow<'a, str> {
        if self.head.is_empty() {
            Cow::Borrowed(self.tail)
        } else {
            Cow::Owned(format!("{}{}", self.head, self.tail))
        }
    }

    /// Whether the name's bytes start with `p`.
    pub fn starts_with(&self, p: &[u8]) -> bool {
        let (h, t) = (self.head.as_bytes(), self.tail.as_bytes());
        if p.len() <= h.len() {
            return h.starts_with(p);
        }
        p[..h.len()] == *h && t.starts_with(&p[h.len()..])
    }

    /// The name without its first `n` bytes, in at most two pieces (`n`
    /// is at a character boundary).
    pub fn after(&self, n: usize) -> (&'a str, &'a str) {
        if n <= self.head.len() {
            (self.head.get(n..).unwrap_or(""), self.tail)
        } else {
            ("", self.tail.get(n - self.head.len()..).unwrap_or(""))
        }
    }

    /// Appends the name to `out`.
    pub fn push_to(&self, out: &mut String) {
        out.push_str(self.head);
        out.push_str(self.tail);
    }

    fn bytes(&self) -> impl Iterator<Item = u8> + 'a {
        self.head.bytes().chain(self.tail.bytes())
    }
}

impl Ord for Name<'_> {
    fn cmp(&self, other: &Name<'_>) -> Ordering {
        // Names of one table share their head: same bytes, same place.
        let same_head = self.head.len() == other.head.len()
            && (self.head.is_empty()
                || std::ptr::eq(self.head.as_ptr(), other.head.as_ptr())
                || self.head == other.head);
        if same_head {
            return self.tail.cmp(other.tail);
        }
        self.bytes().cmp(other.bytes())
    }
}

impl PartialOrd for Name<'_> {
    fn partial_cmp(&self, other: &Name<'_>) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Name<'_> {
    fn eq(&self, other: &Name<'_>) -> bool {
        self.len() == other.len() && self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Name<'_> {}

impl PartialEq<str> for Name<'_> {
    fn eq(&self, other: &str) -> bool {
        self.is(other)
    }
}

impl PartialEq<&str> for Name<'_> {
    fn eq(&self, other: &&str) -> bool {
        self.is(other)
    }
}

impl fmt::Display for Name<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.head)?;
        f.write_str(self.tail)
    }
}

impl fmt::Debug for Name<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.to_str(), f)
    }
}

/// One service of a snapshot, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceRef<'a> {
    /// The full APISIX service name, `{server url}/v1/kv/{prefix}/{service}/`.
    pub name: Name<'a>,
    pub generation: u64,
    pub server: u16,
    pub node_count: u32,
    pub nodes_json: &'a str,
}

impl ServiceRef<'_> {
    /// An owned copy (new allocations), for the models.
    pub fn to_service(&self) -> Service {
        Service {
            generation: self.generation,
            server: self.server,
            node_count: self.node_count,
            nodes_json: Arc::from(self.nodes_json),
        }
    }
}

/// What a snapshot says besides its services.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meta {
    pub seq: u64,
    pub from_dump: bool,
    pub synced: bool,
    pub received_us: u64,
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Increases by one for every published change; 0 is "nothing yet".
    pub seq: u64,
    /// True when the content came from the dump file, not from Consul.
    pub from_dump: bool,
    /// True once every configured server has answered at least once.
    pub synced: bool,
    /// Unix time in microseconds at which the leader received the Consul
    /// response this snapshot was built from (0: not from a response, e.g.
    /// a dump). Wall-clock, so that every process of the host can measure
    /// propagation against it.
    pub received_us: u64,
    /// The services, keyed by the full APISIX service name.
    table: Arc<Table>,
}

impl Default for Snapshot {
    fn default() -> Snapshot {
        static EMPTY: OnceLock<Arc<Table>> = OnceLock::new();
        let table = EMPTY
            .get_or_init(|| Arc::new(Table::build(&Meta::default(), Vec::new())))
            .clone();
        Snapshot::with_table(table)
    }
}

impl PartialEq for Snapshot {
    fn eq(&self, other: &Snapshot) -> bool {
        self.meta() == other.meta() && self.iter().eq(other.iter())
    }
}

impl Eq for Snapshot {}

impl Snapshot {
    /// A snapshot of `services` (in any order) with the given fields.
    pub fn new<'a>(meta: Meta, services: impl IntoIterator<Item = ServiceRef<'a>>) -> Snapshot {
        Snapshot::from_table(Table::build(&meta, services.into_iter().collect()))
    }

    /// The snapshot of `services` made from `prev` by rewriting only the
    /// records that changed ([`Table::patched`]: the caller vouches that
    /// the names are `prev`'s, in order). `None` when `prev` cannot be
    /// patched: build the snapshot instead.
    /// The patch is written into `room` when it is large enough (see
    /// [`Table::patched_in`]).
    pub fn patched<'a>(
        prev: &Snapshot,
        meta: Meta,
        services: impl IntoIterator<Item = ServiceRef<'a>>,
        room: Vec<u8>,
    ) -> Option<Snapshot> {
        Table::patched_in(&prev.table, &meta, services, room).map(Snapshot::from_table)
    }

    /// The buffer of a snapshot built in the heap, when nothing else holds
    /// the snapshot (to build the next one in); `None` otherwise.
    pub fn into_heap_bytes(snapshot: Arc<Snapshot>) -> Option<Vec<u8>> {
        let table = Arc::try_unwrap(snapshot).ok()?.table;
        Arc::try_unwrap(table).ok()?.into_heap_bytes()
    }

    /// The snapshot a table holds (fields from its header).
    pub fn from_table(table: Table) -> Snapshot {
        Snapshot::with_table(Arc::new(table))
    }

    fn with_table(table: Arc<Table>) -> Snapshot {
        let m = *table.meta();
        Snapshot {
            seq: m.seq,
            from_dump: m.from_dump,
            synced: m.synced,
            received_us: m.received_us,
            table,
        }
    }

    /// This snapshot served from `mapping`, a mapping of the file it was
    /// written to; None when the mapping holds other bytes.
    pub fn remapped(&self, mapping: memmap2::Mmap) -> Option<Snapshot> {
        let table = self.table.remapped(mapping)?;
        Some(Snapshot {
            table: Arc::new(table),
            ..self.clone()
        })
    }

    /// Everything but the services.
    pub fn meta(&self) -> Meta {
        Meta {
            seq: self.seq,
            from_dump: self.from_dump,
            synced: self.synced,
            received_us: self.received_us,
        }
    }

    pub(crate) fn table(&self) -> &Table {
        &self.table
    }

    /// True when the services are read from a mapping of the leader's file.
    pub fn is_mapped(&self) -> bool {
        self.table.is_mapped()
    }

    pub fn get(&self, name: &str) -> Option<ServiceRef<'_>> {
        self.table.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.table.position(name).is_some()
    }

    /// Number of services.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Service `i` in name order (0 ≤ i < len).
    pub fn nth(&self, i: usize) -> Option<ServiceRef<'_>> {
        self.table.nth(i)
    }

    /// Every service, names in byte order.
    pub fn iter(&self) -> impl Iterator<Item = ServiceRef<'_>> + '_ {
        self.table.iter()
    }

    pub fn node_count(&self) -> u64 {
        self.table.node_count()
    }

    /// `{"<name>":[nodes],...}` in name order: APISIX's `all_nodes()` shape.
    pub fn all_nodes_json(&self) -> String {
        let total: usize = self
            .iter()
            .map(|s| s.name.len() + s.nodes_json.len() + 4)
            .sum();
        let mut out = String::with_capacity(total + 2);
        out.push('{');
        for (i, s) in self.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let (head, tail) = s.name.parts();
            out.push('"');
            push_json_escaped(&mut out, head);
            push_json_escaped(&mut out, tail);
            out.push('"');
            out.push(':');
            out.push_str(s.nodes_json);
        }
        out.push('}');
        out
    }
}

/// Appends `s` as a JSON string literal.
pub fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    push_json_escaped(out, s);
    out.push('"');
}

/// Appends `s` escaped for the inside of a JSON string literal.
fn push_json_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc<'a>(name: &'a str, json: &'a str, n: u32) -> ServiceRef<'a> {
        ServiceRef {
            name: Name::whole(name),
            generation: 1,
            server: 0,
            node_count: n,
            nodes_json: json,
        }
    }

    #[test]
    fn all_nodes_is_sorted_and_valid_json() {
        let s = Snapshot::new(
            Meta::default(),
            [
                svc("b/", r#"[{"host":"h","port":1,"weight":1}]"#, 1),
                svc("a\"/", "[]", 0),
            ],
        );
        let out = s.all_nodes_json();
        assert_eq!(
            out,
            r#"{"a\"/":[],"b/":[{"host":"h","port":1,"weight":1}]}"#
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["b/"][0]["port"], 1);
        assert_eq!(s.node_count(), 1);
        assert_eq!(s.len(), 2);
        assert_eq!(s.nth(0).unwrap().name, "a\"/");
        assert!(s.contains("b/") && !s.contains("c/"));
        assert_eq!(Snapshot::default().all_nodes_json(), "{}");
    }

    #[test]
    fn a_name_in_two_pieces_is_the_whole_name() {
        let whole = "http://h/v1/kv/up/web/";
        for cut in 0..=whole.len() {
            let n = Name::new(&whole[..cut], &whole[cut..]);
            assert_eq!(n.len(), whole.len());
            assert!(n.is(whole) && n == whole && n == Name::whole(whole));
            assert!(!n.is("http://h/v1/kv/up/web") && !n.is("http://h/v1/kv/up/web//"));
            assert_eq!(n.to_str(), whole);
            assert_eq!(n.to_string(), whole);
            assert_eq!(format!("{n:?}"), format!("{whole:?}"));
            let mut out = String::from(">");
            n.push_to(&mut out);
            assert_eq!(out, format!(">{whole}"));
            for k in 0..=whole.len() {
                assert!(n.starts_with(&whole.as_bytes()[..k]));
                let (a, b) = n.after(k);
                assert_eq!(format!("{a}{b}"), whole[k..]);
            }
            assert!(!n.starts_with(b"http://x"));
            assert!(!n.starts_with(format!("{whole}x").as_bytes()));
            // Order is of the whole names, whatever the pieces.
            for other in [
                "http://h/v1/kv/up/a/",
                "http://h/v1/kv/up/web/x",
                "http://i/",
                "",
            ] {
                for c in 0..=other.len() {
                    let o = Name::new(&other[..c], &other[c..]);
                    assert_eq!(
                        n.cmp(&o),
                        whole.cmp(other),
                        "{whole:?} {cut} vs {other:?} {c}"
                    );
                    assert_eq!(n == o, whole == other);
                }
            }
        }
    }
}
