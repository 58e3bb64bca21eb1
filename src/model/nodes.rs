//! Turning one key and value into a node's JSON object, written straight
//! into the response's fresh text.
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
    /// A node of `service_path`; its JSON object is at `json` in the fresh
    /// text.
    Node {
        service_path: &'k str,
        json: Span,
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
    tails: String,
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
            ValuePart::Tail(tail) => {
                let port = itoa_u16(parsed.port);
                let tail = scratch.tails.get(tail.range()).unwrap_or_default();
                let json = push_text(
                    &mut scratch.fresh,
                    &[
                        "{\"host\":\"",
                        parsed.host,
                        "\",\"port\":",
                        port.as_str(),
                        tail,
                    ],
                );
                match json {
                    Some(json) => Parsed::Node {
                        service_path: parsed.service_path,
                        json,
                    },
                    None => Parsed::Malformed(TOO_MUCH.into()),
                }
            }
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

/// `port` in decimal, without going through `fmt`.
fn itoa_u16(port: u16) -> PortText {
    let mut buf = [0u8; 5];
    let mut n = port;
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    PortText { buf, start: i }
}

struct PortText {
    buf: [u8; 5],
    start: usize,
}

impl PortText {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[self.start..]).unwrap_or_default()
    }
}
