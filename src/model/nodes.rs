//! Turning one key and value into a node's JSON object: the part that comes
//! from the value, with the key's host and port put in front when the
//! service is rendered.
//!
//! Values repeat: most services' nodes carry the same `{"weight":1,...}`.
//! What a value contributes to a node does not depend on the key (only
//! `host` and `port` do), so each distinct base64 text is parsed once per
//! response: `kv::parse_entry` runs on a probe key under the prefix, and the
//! part of its node after the probe's host and port is reused for every key
//! with that value. If the parser ever renders the probe differently, the
//! memo turns itself off and every entry goes through `parse_entry` whole.

use std::borrow::Cow;

use rustc_hash::FxHashMap;

use super::keys::{push_text, Span};
use crate::kv::{self, Field, Outcome, Rules};

const PROBE_HOST: &str = "h";
const PROBE_PORT: u16 = 1;
/// After this many lookups with fewer than half of them hits, the memo is
/// only in the way (every value distinct) and is not used further.
const MEMO_TRIAL: u32 = 1024;

/// What a key and value gave.
pub(super) enum Parsed<'k> {
    /// A node of `service_path`. Its JSON object is at `json` in the fresh
    /// text, or, with `tail`, is `{"host":"..","port":N` from the key
    /// followed by the text at `json` in the memo's tails.
    Node {
        service_path: &'k str,
        json: Span,
        tail: bool,
    },
    Quiet,
    Malformed(String),
}

/// The part of a node that comes from the value.
#[derive(Clone)]
enum ValuePart {
    /// The node text after `{"host":"..","port":N` (starts with `,`).
    Tail(Span),
    Quiet,
    Malformed(String),
}

/// Per model: the rules and the probe.
#[derive(Debug)]
pub(super) struct NodeParser {
    rules: Rules,
    /// The rules without `skip_keys`, so that the probe is never skipped.
    probe_rules: Rules,
    probe_key: String,
    /// `{"host":"h","port":1`: what the probe's node must start with.
    probe_head: String,
}

/// Per response: the value memo and the fresh node text.
#[derive(Default)]
pub(super) struct Scratch<'v> {
    memo: FxHashMap<&'v str, ValuePart>,
    /// The value parts of nodes after their host and port.
    pub tails: String,
    lookups: u32,
    hits: u32,
    memo_off: bool,
    /// Every node JSON object parsed in this response.
    pub fresh: String,
}

impl NodeParser {
    pub fn new(rules: Rules) -> Self {
        let probe_rules = Rules {
            skip_keys: Vec::new(),
            ..rules.clone()
        };
        NodeParser {
            probe_key: format!("{}/s/{PROBE_HOST}:{PROBE_PORT}", rules.prefix),
            probe_head: format!("{{\"host\":\"{PROBE_HOST}\",\"port\":{PROBE_PORT}"),
            rules,
            probe_rules,
        }
    }

    pub fn parse<'k, 'v>(
        &self,
        key: &'k str,
        value: &'v Field<Cow<'v, str>>,
        scratch: &mut Scratch<'v>,
    ) -> Parsed<'k> {
        let parsed = match kv::parse_key(key, &self.rules.prefix) {
            Ok(Some(p)) if !self.rules.skip_keys.iter().any(|s| s == p.service_path) => p,
            // Not a node: the parser says why (no value is decoded).
            _ => return self.whole(key, value, scratch),
        };
        let part = match self.value_part(value, scratch) {
            Some(part) => part,
            None => return self.whole(key, value, scratch),
        };
        match part {
            ValuePart::Tail(tail) => Parsed::Node {
                service_path: parsed.service_path,
                json: tail,
                tail: true,
            },
            ValuePart::Quiet => Parsed::Quiet,
            ValuePart::Malformed(reason) => Parsed::Malformed(reason),
        }
    }

    /// The value's part of a node, from the memo or the probe; `None` if the
    /// probe does not render as expected.
    fn value_part<'v>(
        &self,
        value: &'v Field<Cow<'v, str>>,
        scratch: &mut Scratch<'v>,
    ) -> Option<ValuePart> {
        let text = match value {
            Field::Ok(v) if !scratch.memo_off => Some(&**v),
            _ => None,
        };
        if let Some(text) = text {
            scratch.lookups += 1;
            if let Some(part) = scratch.memo.get(text) {
                scratch.hits += 1;
                return Some(part.clone());
            }
            if scratch.lookups == MEMO_TRIAL && scratch.hits < MEMO_TRIAL / 2 {
                scratch.memo_off = true;
                scratch.memo = FxHashMap::default();
            }
        }
        let part = match kv::parse_entry(&self.probe_key, value, &self.probe_rules) {
            Outcome::Node { json, .. } => {
                let tail = json.strip_prefix(self.probe_head.as_str())?;
                ValuePart::Tail(push_text(&mut scratch.tails, &[tail])?)
            }
            Outcome::Dropped(_) | Outcome::Ignored => ValuePart::Quiet,
            Outcome::Malformed(reason) => ValuePart::Malformed(reason),
        };
        if let Some(text) = text.filter(|_| !scratch.memo_off) {
            scratch.memo.insert(text, part.clone());
        }
        Some(part)
    }

    /// The parser's own verdict on the whole entry.
    fn whole<'k>(
        &self,
        key: &'k str,
        value: &Field<Cow<'_, str>>,
        scratch: &mut Scratch<'_>,
    ) -> Parsed<'k> {
        match kv::parse_entry(key, value, &self.rules) {
            Outcome::Node { json, .. } => {
                // The parser's service path is the start of the key.
                let Ok(Some(p)) = kv::parse_key(key, &self.rules.prefix) else {
                    return Parsed::Quiet;
                };
                match push_text(&mut scratch.fresh, &[&json]) {
                    Some(json) => Parsed::Node {
                        service_path: p.service_path,
                        json,
                        tail: false,
                    },
                    None => Parsed::Malformed(TOO_MUCH.into()),
                }
            }
            Outcome::Dropped(_) | Outcome::Ignored => Parsed::Quiet,
            Outcome::Malformed(reason) => Parsed::Malformed(reason),
        }
    }
}

const TOO_MUCH: &str = "the response holds more than 4 GiB of node text";

/// The `{"host":"..","port":N` of a node from its key (as `kv::parse_key`
/// checked it) and its service path's length: host and port are the key's
/// text after the service path, split at its last `:` (after a bracketed
/// IPv6 literal comes only `:port`), and the port is written without the
/// leading zeros the key may have (as a number). `None` if the key does not
/// have that shape.
pub(super) fn node_head(key: &str, path_len: usize) -> Option<(&str, &str)> {
    let node = key.get(path_len..)?;
    let colon = node.bytes().rposition(|b| b == b':')?;
    // `:` is ASCII: both sides are whole text.
    let host = node.get(..colon)?;
    let digits = node.get(colon + 1..)?;
    let port = digits.trim_start_matches('0');
    (!port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit()))
        .then_some((host, port))
}

/// `{"host":"` before a node's host, `","port":` before its port.
pub(super) const HOST_OPEN: &str = "{\"host\":\"";
pub(super) const PORT_OPEN: &str = "\",\"port\":";
