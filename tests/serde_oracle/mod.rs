//! The serde_json-based response parser ckv used before `src/kv/scan.rs`,
//! kept as the reference the scanner is compared with
//! (`tests/parse_differential.rs`, and the `response` fuzz target, which
//! includes this file by path). Same behaviour, same reason strings; only
//! the names are made public.

use std::borrow::Cow;
use std::fmt;

use ckv::kv::{Field, RawEntry, ResponseError};
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// Parses a whole `?recurse` response body, as `kv::parse_response` did. The body must be a JSON array;
/// elements that are not objects become entries whose key is `WrongType`.
pub fn parse_response(body: &[u8]) -> Result<Vec<RawEntry<'_>>, ResponseError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let entries = de.deserialize_any(EntriesVisitor).map_err(|e| {
        ResponseError(format!(
            "response is not valid JSON ({} bytes): {e}",
            body.len()
        ))
    })?;
    de.end()
        .map_err(|e| ResponseError(format!("trailing data after JSON array: {e}")))?;
    entries.ok_or_else(|| {
        ResponseError(format!(
            "response is not a JSON array (starts with {:?})",
            preview(body)
        ))
    })
}

fn preview(body: &[u8]) -> String {
    let n = body.len().min(40);
    String::from_utf8_lossy(&body[..n]).into_owned()
}

struct EntriesVisitor;

impl<'de> Visitor<'de> for EntriesVisitor {
    /// None when the document is valid JSON but not an array.
    type Value = Option<Vec<RawEntry<'de>>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array of KV entries")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(entry) = seq.next_element::<EntrySeed<'de>>()? {
            out.push(entry.0);
        }
        Ok(Some(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

struct EntrySeed<'a>(RawEntry<'a>);

impl<'de> Deserialize<'de> for EntrySeed<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(EntryVisitor).map(EntrySeed)
    }
}

struct EntryVisitor;

impl<'de> Visitor<'de> for EntryVisitor {
    type Value = RawEntry<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a KV entry object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entry = RawEntry::default();
        while let Some(name) = map.next_key::<FieldName>()? {
            match name {
                FieldName::Key => entry.key = map.next_value::<StrField<'de>>()?.0,
                FieldName::Value => entry.value = map.next_value::<StrField<'de>>()?.0,
                FieldName::ModifyIndex => entry.modify_index = map.next_value::<U64Field>()?.0,
                FieldName::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(entry)
    }

    // Anything that is not an object: an entry whose key has the wrong type.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(not_an_object())
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(not_an_object())
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(not_an_object())
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(not_an_object())
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(not_an_object())
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(not_an_object())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(not_an_object())
    }
}

fn not_an_object<'a>() -> RawEntry<'a> {
    RawEntry {
        key: Field::WrongType("entry is not a JSON object"),
        ..RawEntry::default()
    }
}

/// An entry's field name, recognised without allocating (serde's `Cow<str>`
/// would make a `String` of every name of every entry).
enum FieldName {
    Key,
    Value,
    ModifyIndex,
    Other,
}

impl<'de> Deserialize<'de> for FieldName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = FieldName;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E>(self, s: &str) -> Result<FieldName, E> {
                Ok(match s {
                    "Key" => FieldName::Key,
                    "Value" => FieldName::Value,
                    "ModifyIndex" => FieldName::ModifyIndex,
                    _ => FieldName::Other,
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

/// Deserializes any JSON value into a `Field<Cow<str>>`.
struct StrField<'a>(Field<Cow<'a, str>>);

impl<'de> Deserialize<'de> for StrField<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Field<Cow<'de, str>>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or null")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Field::Ok(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Field::Ok(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
                Ok(Field::Ok(Cow::Owned(s)))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Field::Null)
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Field::Null)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Field::WrongType("a boolean"))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Field::WrongType("a number"))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Field::WrongType("a number"))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Field::WrongType("a number"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Field::WrongType("an array"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Field::WrongType("an object"))
            }
        }
        d.deserialize_any(V).map(StrField)
    }
}

/// Deserializes any JSON value into a `Field<u64>`.
struct U64Field(Field<u64>);

impl<'de> Deserialize<'de> for U64Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Field<u64>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an unsigned integer")
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Field::Ok(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(u64::try_from(v).map_or(Field::WrongType("a negative number"), Field::Ok))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Field::WrongType("a fractional number"))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Field::Null)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Field::WrongType("a boolean"))
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Field::WrongType("a string"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Field::WrongType("an array"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Field::WrongType("an object"))
            }
        }
        d.deserialize_any(V).map(U64Field)
    }
}

/// Which of the three refusals an error is (the text before the details).
fn refusal(e: &ResponseError) -> &str {
    let text = e.0.as_str();
    text.find([':', '(']).map_or(text, |i| text[..i].trim_end())
}

/// Panics unless `kv::parse_response` and this parser give the same result
/// for `body`: the same entries field by field (borrowed from the body in
/// both or in neither), or the same refusal.
pub fn assert_same(body: &[u8]) {
    let new = ckv::kv::parse_response(body);
    let old = parse_response(body);
    let shown = || String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
    match (&new, &old) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.len(), b.len(), "entry count differs for {:?}", shown());
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                let same = x.key == y.key
                    && x.value == y.value
                    && x.modify_index == y.modify_index
                    && borrowed(&x.key) == borrowed(&y.key)
                    && borrowed(&x.value) == borrowed(&y.value);
                assert!(
                    same,
                    "entry {i}: scanner {x:?}, serde {y:?}, body {:?}",
                    shown()
                );
            }
        }
        (Err(a), Err(b)) => {
            assert_eq!(refusal(a), refusal(b), "{a} / {b}: body {:?}", shown());
            assert!(a.0.len() < 200, "long reason: {a}");
        }
        _ => panic!(
            "scanner {:?}, serde {:?}, body {:?}",
            new.as_ref().map(Vec::len),
            old.as_ref().map(Vec::len),
            shown()
        ),
    }
}

fn borrowed(f: &Field<Cow<'_, str>>) -> bool {
    matches!(f, Field::Ok(Cow::Borrowed(_)))
}
