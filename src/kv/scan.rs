//! The `?recurse` response reader: one pass over the body that checks it is
//! JSON and picks `Key`, `Value` and `ModifyIndex` out of each element,
//! skipping every other field without decoding it.
//!
//! It accepts and refuses the same documents as the serde_json reader it
//! replaced (kept in `tests/serde_oracle/` and compared by
//! `tests/parse_differential.rs` and the `response` fuzz target):
//! * the text returned or compared (the three fields, an entry's field
//!   names, any other string serde_json decoded) must be UTF-8 with
//!   paired surrogate escapes;
//! * a number serde_json decoded (the three fields, a top-level or element
//!   number) must be finite as an `f64`;
//! * everything skipped (other fields' values, what an array or object in
//!   the three fields holds) is checked for JSON syntax only, as serde_json's
//!   `IgnoredAny` does;
//! * nesting is unlimited, as in `IgnoredAny`: open brackets are kept on a
//!   heap stack of one bit per level (at most an eighth of the body's
//!   length), never in recursion.

use std::borrow::Cow;

use super::{Field, RawEntry, ResponseError};

/// Parses a whole `?recurse` response body (see [`super::parse_response`]).
pub(super) fn parse_response(body: &[u8]) -> Result<Vec<RawEntry<'_>>, ResponseError> {
    let mut r = Reader {
        body,
        pos: 0,
        frames: Frames::default(),
        prefetched: 0,
    };
    let entries = r.document().map_err(|e| {
        ResponseError(format!(
            "response is not valid JSON ({} bytes): {}",
            body.len(),
            e.located(body)
        ))
    })?;
    if r.skip_ws().is_some() {
        let e = Syntax {
            what: "trailing characters",
            at: r.pos,
        };
        return Err(ResponseError(format!(
            "trailing data after JSON array: {}",
            e.located(body)
        )));
    }
    entries.ok_or_else(|| {
        ResponseError(format!(
            "response is not a JSON array (starts with {:?})",
            super::preview(body)
        ))
    })
}

/// What was wrong, and the byte offset where it was seen.
struct Syntax {
    what: &'static str,
    at: usize,
}

impl Syntax {
    /// `what at line L column C` (both from 1, column in bytes).
    fn located(&self, body: &[u8]) -> String {
        let at = self.at.min(body.len());
        let before = &body[..at];
        let line_start = before
            .iter()
            .rposition(|&c| c == b'\n')
            .map_or(0, |i| i + 1);
        let line = 1 + before.iter().filter(|&&c| c == b'\n').count();
        let column = at - line_start + 1;
        format!("{} at line {line} column {column}", self.what)
    }
}

type Res<T> = Result<T, Syntax>;

const EOF_VALUE: &str = "EOF while parsing a value";
const EOF_LIST: &str = "EOF while parsing a list";
const EOF_OBJECT: &str = "EOF while parsing an object";
const EOF_STRING: &str = "EOF while parsing a string";
const CONTROL: &str = "control character (\\u0000-\\u001F) found while parsing a string";
const INVALID_ESCAPE: &str = "invalid escape";
const LONE_SURROGATE: &str = "lone leading surrogate in hex escape";
const END_OF_HEX_ESCAPE: &str = "unexpected end of hex escape";
const NOT_UTF8: &str = "invalid unicode code point";
const INVALID_NUMBER: &str = "invalid number";
const OUT_OF_RANGE: &str = "number out of range";
const EXPECTED_VALUE: &str = "expected value";
const EXPECTED_IDENT: &str = "expected ident";
const EXPECTED_COLON: &str = "expected `:`";
const LIST_COMMA: &str = "expected `,` or `]`";
const OBJECT_COMMA: &str = "expected `,` or `}`";
const KEY_NOT_STRING: &str = "key must be a string";
const TRAILING_COMMA: &str = "trailing comma";

/// An entry's field name that matters.
#[derive(Clone, Copy)]
enum Name {
    Key,
    Value,
    ModifyIndex,
    Other,
}

impl Name {
    fn of(text: &[u8]) -> Name {
        match text {
            b"Key" => Name::Key,
            b"Value" => Name::Value,
            b"ModifyIndex" => Name::ModifyIndex,
            _ => Name::Other,
        }
    }
}

/// A value read where its type matters (the three fields, an element, the
/// whole document).
enum Any<'a> {
    Str(Cow<'a, str>),
    Null,
    Bool,
    Num(Number),
    Array,
    Object,
}

/// A number as serde_json classifies it: u64, negative i64, or f64.
#[derive(Clone, Copy)]
enum Number {
    Unsigned(u64),
    Negative,
    Float,
}

struct Reader<'a> {
    body: &'a [u8],
    pos: usize,
    /// The containers open in the value being skipped.
    frames: Frames,
    /// Where [`Self::prefetch`] has asked the CPU to load the body up to.
    prefetched: usize,
}

/// A stack of `[` and `{`, one bit each: a hostile `[[[[…` body of the
/// largest accepted size (64 MiB by default) costs an eighth of its size.
#[derive(Default)]
struct Frames {
    bits: Vec<u64>,
    depth: usize,
}

impl Frames {
    fn clear(&mut self) {
        self.bits.clear();
        self.depth = 0;
    }

    fn push(&mut self, open: u8) {
        let (word, bit) = (self.depth / 64, self.depth % 64);
        if word == self.bits.len() {
            self.bits.push(0);
        }
        if let Some(w) = self.bits.get_mut(word) {
            *w = (*w & !(1 << bit)) | (u64::from(open == b'{') << bit);
        }
        self.depth += 1;
    }

    /// The innermost open bracket, `[` or `{`.
    fn last(&self) -> Option<u8> {
        let d = self.depth.checked_sub(1)?;
        let object = self.bits.get(d / 64)? >> (d % 64) & 1 == 1;
        Some(if object { b'{' } else { b'[' })
    }

    fn pop(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }
}

const ONES: u64 = u64::MAX / 255;
const HIGHS: u64 = ONES << 7;

/// Where the string starting at `from` stops: the index of the first `"`,
/// `\` or control byte (or `body.len()`), and whether a byte ≥ 0x80 comes
/// before it. Sixteen bytes at a time with SSE2 (part of every x86_64), then
/// eight at a time (as serde_json does) for the rest.
#[inline]
fn string_stop(body: &[u8], from: usize) -> (usize, bool) {
    let mut i = from;
    let mut high = 0u64;
    let mut rest = body.get(from..).unwrap_or_default();
    #[cfg(target_arch = "x86_64")]
    while let Some(chunk) = rest.first_chunk::<16>() {
        let (stops, highs) = sse2_stops(chunk);
        if stops != 0 {
            let before = (stops & stops.wrapping_neg()) - 1;
            high |= u64::from(highs & before);
            return (i + stops.trailing_zeros() as usize, high != 0);
        }
        high |= u64::from(highs);
        i += 16;
        rest = &rest[16..];
    }
    while let Some(chunk) = rest.first_chunk::<8>() {
        let w = u64::from_le_bytes(*chunk);
        let control = w.wrapping_sub(ONES * 0x20) & !w;
        let q = w ^ (ONES * u64::from(b'"'));
        let quote = q.wrapping_sub(ONES) & !q;
        let s = w ^ (ONES * u64::from(b'\\'));
        let backslash = s.wrapping_sub(ONES) & !s;
        // The lowest flagged byte is exact (borrows only run upwards).
        let stops = (control | quote | backslash) & HIGHS;
        if stops != 0 {
            let before = (stops & stops.wrapping_neg()) - 1;
            high |= w & HIGHS & before;
            return (i + stops.trailing_zeros() as usize / 8, high != 0);
        }
        high |= w & HIGHS;
        i += 8;
        rest = &rest[8..];
    }
    for &c in rest {
        if c == b'"' || c == b'\\' || c < 0x20 {
            break;
        }
        high |= u64::from(c & 0x80);
        i += 1;
    }
    (i, high != 0)
}

/// One bit per byte of `chunk`: which bytes stop a string (`"`, `\\`, below
/// 0x20), and which are ≥ 0x80.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn sse2_stops(chunk: &[u8; 16]) -> (u32, u32) {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    // SAFETY: SSE2 is part of the x86_64 baseline, so these intrinsics are
    // always available; the unaligned load reads exactly the 16 bytes of
    // `chunk`.
    unsafe {
        let x = _mm_loadu_si128(chunk.as_ptr().cast());
        let quote = _mm_cmpeq_epi8(x, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(x, _mm_set1_epi8(b'\\' as i8));
        // x ≤ 0x1f (unsigned) exactly when max(x, 0x1f) is 0x1f.
        let limit = _mm_set1_epi8(0x1f);
        let control = _mm_cmpeq_epi8(_mm_max_epu8(x, limit), limit);
        let stops = _mm_or_si128(_mm_or_si128(quote, backslash), control);
        (_mm_movemask_epi8(stops) as u32, _mm_movemask_epi8(x) as u32)
    }
}

/// Whether `rest` starts with `word` (a fixed size: compared inline).
#[inline]
fn is<const N: usize>(rest: &[u8], word: &[u8; N]) -> bool {
    rest.first_chunk::<N>() == Some(word)
}

fn hex_digit(c: u8) -> Option<u16> {
    match c {
        b'0'..=b'9' => Some(u16::from(c - b'0')),
        b'a'..=b'f' => Some(u16::from(c - b'a' + 10)),
        b'A'..=b'F' => Some(u16::from(c - b'A' + 10)),
        _ => None,
    }
}

impl<'a> Reader<'a> {
    #[inline]
    fn fail<T>(&self, what: &'static str) -> Res<T> {
        Err(Syntax { what, at: self.pos })
    }

    /// Asks the CPU to load the body some way ahead of `pos`, a cache line
    /// at a time. A 100k-key body (13 MB) is far larger than L2, and the
    /// scan, which needs each byte to know where the next token starts,
    /// otherwise waits on memory: this takes about 15% off that body (and
    /// nothing measurable off one that fits in L2).
    #[inline]
    fn prefetch(&mut self) {
        const AHEAD: usize = 2048;
        const LINE: usize = 64;
        let until = (self.pos + AHEAD).min(self.body.len());
        while self.prefetched < until {
            crate::prefetch::prefetch(self.body.as_ptr().wrapping_add(self.prefetched));
            self.prefetched += LINE;
        }
    }

    /// Skips JSON whitespace; the next byte, if any.
    #[inline]
    fn skip_ws(&mut self) -> Option<u8> {
        while let Some(&c) = self.body.get(self.pos) {
            match c {
                b' ' | b'\n' | b'\t' | b'\r' => self.pos += 1,
                _ => return Some(c),
            }
        }
        None
    }

    /// The whole document: the entries, or `None` for valid JSON that is
    /// not an array.
    fn document(&mut self) -> Res<Option<Vec<RawEntry<'a>>>> {
        if self.skip_ws() == Some(b'[') {
            self.pos += 1;
            return self.entries().map(Some);
        }
        self.any_value()?;
        Ok(None)
    }

    /// The elements of the top-level array, after its `[`.
    fn entries(&mut self) -> Res<Vec<RawEntry<'a>>> {
        // A Consul entry takes well over 100 bytes; the guess saves most
        // of the regrowth without reserving much more than is used.
        let mut out = Vec::with_capacity(self.body.len() / 128);
        match self.skip_ws() {
            Some(b']') => {
                self.pos += 1;
                return Ok(out);
            }
            None => return self.fail(EOF_LIST),
            Some(_) => {}
        }
        loop {
            self.prefetch();
            // Filled in place: no copy of the entry through the stack.
            out.push(RawEntry::default());
            let Some(entry) = out.last_mut() else {
                return self.fail(EOF_LIST); // unreachable: just pushed
            };
            if self.skip_ws() == Some(b'{') {
                self.pos += 1;
                self.entry(entry)?;
            } else {
                self.any_value()?;
                entry.key = Field::WrongType("entry is not a JSON object");
            }
            match self.skip_ws() {
                Some(b',') => {
                    self.pos += 1;
                    match self.skip_ws() {
                        Some(b']') => return self.fail(TRAILING_COMMA),
                        None => return self.fail(EOF_VALUE),
                        Some(_) => {}
                    }
                }
                Some(b']') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(_) => return self.fail(LIST_COMMA),
                None => return self.fail(EOF_LIST),
            }
        }
    }

    /// One entry object, after its `{`, into `e` (empty). A field given
    /// twice keeps its last value.
    #[inline]
    fn entry(&mut self, e: &mut RawEntry<'a>) -> Res<()> {
        self.members(|r, name| {
            match name {
                Name::Key => e.key = r.str_field()?,
                Name::Value => e.value = r.str_field()?,
                Name::ModifyIndex => e.modify_index = r.u64_field()?,
                Name::Other => r.skip_value()?,
            }
            Ok(())
        })
    }

    /// `Key` or `Value`: the usual case (ASCII, no escapes) right here,
    /// anything else through [`Self::any_value`].
    #[inline]
    fn str_field(&mut self) -> Res<Field<Cow<'a, str>>> {
        if self.body.get(self.pos) == Some(&b'"') {
            let start = self.pos + 1;
            let (end, non_ascii) = string_stop(self.body, start);
            if !non_ascii && self.body.get(end) == Some(&b'"') {
                self.pos = end + 1;
                return Ok(Field::Ok(Cow::Borrowed(ascii_text(&self.body[start..end]))));
            }
        }
        self.any_value().map(Any::into_str_field)
    }

    /// `ModifyIndex`: the usual case (up to 19 digits) right here, anything
    /// else through [`Self::any_value`].
    #[inline]
    fn u64_field(&mut self) -> Res<Field<u64>> {
        let start = self.pos;
        let mut n = 0u64;
        let mut i = start;
        while let Some(&d @ b'0'..=b'9') = self.body.get(i) {
            n = n * 10 + u64::from(d - b'0');
            i += 1;
            if i - start == 19 {
                break;
            }
        }
        let leading_zero = self.body.get(start) == Some(&b'0') && i - start > 1;
        if i > start
            && !leading_zero
            && !matches!(self.body.get(i), Some(b'0'..=b'9' | b'.' | b'e' | b'E'))
        {
            self.pos = i;
            return Ok(Field::Ok(n));
        }
        self.any_value().map(Any::into_u64_field)
    }

    /// The members of an object whose names are decoded (an entry, or an
    /// object read by [`Self::any_value`]), after its `{`; `value` reads
    /// each member's value.
    #[inline]
    fn members(&mut self, mut value: impl FnMut(&mut Self, Name) -> Res<()>) -> Res<()> {
        match self.skip_ws() {
            Some(b'}') => {
                self.pos += 1;
                return Ok(());
            }
            Some(b'"') => {}
            Some(_) => return self.fail(KEY_NOT_STRING),
            None => return self.fail(EOF_OBJECT),
        }
        loop {
            // At the opening quote of a name.
            self.pos += 1;
            let name = self.name()?;
            self.colon()?;
            value(self, name)?;
            match self.skip_ws() {
                Some(b',') => {
                    self.pos += 1;
                    match self.skip_ws() {
                        Some(b'"') => {}
                        Some(b'}') => return self.fail(TRAILING_COMMA),
                        Some(_) => return self.fail(KEY_NOT_STRING),
                        None => return self.fail(EOF_VALUE),
                    }
                }
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(_) => return self.fail(OBJECT_COMMA),
                None => return self.fail(EOF_OBJECT),
            }
        }
    }

    /// A decoded member name, after its opening quote.
    #[inline(always)]
    fn name(&mut self) -> Res<Name> {
        let start = self.pos;
        // Consul's own names, compared whole (with the closing quote).
        let rest = &self.body[start..];
        let known = match rest.first() {
            Some(b'K') if is(rest, b"Key\"") => Some((4, Name::Key)),
            Some(b'V') if is(rest, b"Value\"") => Some((6, Name::Value)),
            Some(b'M') if is(rest, b"ModifyIndex\"") => Some((12, Name::ModifyIndex)),
            Some(b'L') if is(rest, b"LockIndex\"") => Some((10, Name::Other)),
            Some(b'F') if is(rest, b"Flags\"") => Some((6, Name::Other)),
            Some(b'C') if is(rest, b"CreateIndex\"") => Some((12, Name::Other)),
            Some(b'S') if is(rest, b"Session\"") => Some((8, Name::Other)),
            _ => None,
        };
        if let Some((len, name)) = known {
            self.pos += len;
            return Ok(name);
        }
        self.other_name()
    }

    /// [`Self::name`] for a name that is not one of Consul's.
    #[inline(never)]
    fn other_name(&mut self) -> Res<Name> {
        let start = self.pos;
        let (end, non_ascii) = string_stop(self.body, start);
        if !non_ascii && self.body.get(end) == Some(&b'"') {
            self.pos = end + 1;
            return Ok(Name::of(&self.body[start..end]));
        }
        Ok(Name::of(self.string()?.as_bytes()))
    }

    #[inline]
    fn colon(&mut self) -> Res<()> {
        match self.skip_ws() {
            Some(b':') => {
                self.pos += 1;
                Ok(())
            }
            Some(_) => self.fail(EXPECTED_COLON),
            None => self.fail(EOF_OBJECT),
        }
    }

    /// A value whose type matters, decoded as serde_json's `deserialize_any`
    /// does: strings checked and unescaped, numbers classified, an object's
    /// member names checked; what arrays and objects hold is skipped.
    fn any_value(&mut self) -> Res<Any<'a>> {
        match self.skip_ws() {
            Some(b'"') => {
                self.pos += 1;
                self.string().map(Any::Str)
            }
            Some(b'-' | b'0'..=b'9') => self.number().map(Any::Num),
            Some(b'{') => {
                self.pos += 1;
                self.members(|r, _| r.skip_value())?;
                Ok(Any::Object)
            }
            Some(b'[') => {
                self.skip_value()?;
                Ok(Any::Array)
            }
            Some(b'n') => self.literal(b"null").map(|()| Any::Null),
            Some(b't') => self.literal(b"true").map(|()| Any::Bool),
            Some(b'f') => self.literal(b"false").map(|()| Any::Bool),
            Some(_) => self.fail(EXPECTED_VALUE),
            None => self.fail(EOF_VALUE),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Res<()> {
        let rest = &self.body[self.pos..];
        if rest.starts_with(word) {
            self.pos += word.len();
            return Ok(());
        }
        let same = rest.iter().zip(word).take_while(|(a, b)| a == b).count();
        self.pos += same;
        self.fail(if same == rest.len() {
            EOF_VALUE
        } else {
            EXPECTED_IDENT
        })
    }

    /// A decoded string, after its opening quote: borrowed from the body
    /// unless it holds escapes.
    #[inline]
    fn string(&mut self) -> Res<Cow<'a, str>> {
        let start = self.pos;
        let (end, non_ascii) = string_stop(self.body, start);
        match self.body.get(end) {
            Some(b'"') => {
                let raw = &self.body[start..end];
                self.pos = end + 1;
                if non_ascii {
                    std::str::from_utf8(raw)
                        .map(Cow::Borrowed)
                        .map_err(|e| Syntax {
                            what: NOT_UTF8,
                            at: start + e.valid_up_to(),
                        })
                } else {
                    Ok(Cow::Borrowed(ascii_text(raw)))
                }
            }
            Some(b'\\') => self.escaped_string(start, end).map(Cow::Owned),
            Some(_) => {
                self.pos = end;
                self.fail(CONTROL)
            }
            None => {
                self.pos = end;
                self.fail(EOF_STRING)
            }
        }
    }

    /// The rest of a string that holds an escape at `at`, decoded.
    #[cold]
    fn escaped_string(&mut self, start: usize, mut at: usize) -> Res<String> {
        let mut out = Vec::with_capacity(at - start + 16);
        let mut from = start;
        loop {
            // body[at] is a backslash.
            out.extend_from_slice(&self.body[from..at]);
            self.pos = at + 1;
            self.unescape(&mut out)?;
            from = self.pos;
            let (end, _) = string_stop(self.body, from);
            match self.body.get(end) {
                Some(b'"') => {
                    out.extend_from_slice(&self.body[from..end]);
                    self.pos = end + 1;
                    return String::from_utf8(out).map_err(|_| Syntax {
                        what: NOT_UTF8,
                        at: end,
                    });
                }
                Some(b'\\') => at = end,
                Some(_) => {
                    self.pos = end;
                    return self.fail(CONTROL);
                }
                None => {
                    self.pos = end;
                    return self.fail(EOF_STRING);
                }
            }
        }
    }

    /// One escape, after its backslash, appended to `out`; surrogates must
    /// come in pairs (as serde_json wants for a `str`).
    fn unescape(&mut self, out: &mut Vec<u8>) -> Res<()> {
        let Some(&c) = self.body.get(self.pos) else {
            return self.fail(EOF_STRING);
        };
        self.pos += 1;
        let byte = match c {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let first = self.hex4()?;
                let code = match first {
                    0xDC00..=0xDFFF => return self.fail(LONE_SURROGATE),
                    0xD800..=0xDBFF => {
                        if self.body.get(self.pos..self.pos + 2) != Some(b"\\u") {
                            return match self.body.get(self.pos) {
                                None => self.fail(EOF_STRING),
                                Some(&b'\\') if self.pos + 1 == self.body.len() => {
                                    self.fail(EOF_STRING)
                                }
                                Some(_) => self.fail(END_OF_HEX_ESCAPE),
                            };
                        }
                        self.pos += 2;
                        let second = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&second) {
                            return self.fail(LONE_SURROGATE);
                        }
                        0x1_0000
                            + ((u32::from(first) - 0xD800) << 10)
                            + (u32::from(second) - 0xDC00)
                    }
                    _ => u32::from(first),
                };
                let Some(ch) = char::from_u32(code) else {
                    return self.fail(LONE_SURROGATE);
                };
                out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
                return Ok(());
            }
            _ => return self.fail(INVALID_ESCAPE),
        };
        out.push(byte);
        Ok(())
    }

    /// Four hex digits of a `\u` escape.
    fn hex4(&mut self) -> Res<u16> {
        let Some(digits) = self.body.get(self.pos..self.pos + 4) else {
            self.pos = self.body.len();
            return self.fail(EOF_STRING);
        };
        self.pos += 4;
        let mut n = 0;
        for &d in digits {
            let Some(v) = hex_digit(d) else {
                return self.fail(INVALID_ESCAPE);
            };
            n = n << 4 | v;
        }
        Ok(n)
    }

    /// A number, classified as serde_json does: a u64, a negative i64, or
    /// (fraction, exponent, `-0`, or too large) an f64, which must be finite.
    fn number(&mut self) -> Res<Number> {
        let start = self.pos;
        let negative = self.body[start] == b'-';
        let integer = self.scan_number()?;
        let text = &self.body[start..self.pos];
        if integer {
            let digits = if negative { &text[1..] } else { text };
            let mut n: u64 = 0;
            let fits = digits.iter().all(|&d| {
                match n
                    .checked_mul(10)
                    .and_then(|m| m.checked_add(u64::from(d - b'0')))
                {
                    Some(m) => {
                        n = m;
                        true
                    }
                    None => false,
                }
            });
            if fits {
                return Ok(match (negative, n) {
                    (false, n) => Number::Unsigned(n),
                    // -0 and anything below i64::MIN are floats.
                    (true, 0) => Number::Float,
                    (true, n) if n > 1 << 63 => Number::Float,
                    (true, _) => Number::Negative,
                });
            }
        }
        // JSON number syntax is a subset of what `f64::from_str` reads.
        let value = std::str::from_utf8(text)
            .ok()
            .and_then(|t| t.parse::<f64>().ok());
        match value {
            Some(f) if f.is_finite() => Ok(Number::Float),
            Some(_) => self.fail(OUT_OF_RANGE),
            None => self.fail(INVALID_NUMBER),
        }
    }

    /// Moves past a number (at its `-` or first digit) after checking its
    /// syntax; true when it has neither fraction nor exponent.
    #[inline]
    fn scan_number(&mut self) -> Res<bool> {
        if self.body.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        match self.body.get(self.pos) {
            Some(b'0') => {
                self.pos += 1;
                if matches!(self.body.get(self.pos), Some(b'0'..=b'9')) {
                    return self.fail(INVALID_NUMBER);
                }
            }
            Some(b'1'..=b'9') => {
                self.pos += 1;
                self.digits();
            }
            _ => return self.fail(INVALID_NUMBER),
        }
        let mut integer = true;
        if self.body.get(self.pos) == Some(&b'.') {
            integer = false;
            self.pos += 1;
            if self.digits() == 0 {
                return self.fail(INVALID_NUMBER);
            }
        }
        if matches!(self.body.get(self.pos), Some(b'e' | b'E')) {
            integer = false;
            self.pos += 1;
            if matches!(self.body.get(self.pos), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return self.fail(INVALID_NUMBER);
            }
        }
        Ok(integer)
    }

    #[inline]
    fn digits(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.body.get(self.pos), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// Moves past a value whose content does not matter, checking only its
    /// syntax (serde_json's `IgnoredAny`).
    #[inline]
    fn skip_value(&mut self) -> Res<()> {
        match self.skip_ws() {
            Some(b'"') => {
                self.pos += 1;
                self.skip_string()
            }
            Some(b'-' | b'0'..=b'9') => self.scan_number().map(drop),
            _ => self.skip_nested(),
        }
    }

    /// [`Self::skip_value`] for any value, containers included.
    fn skip_nested(&mut self) -> Res<()> {
        self.frames.clear();
        loop {
            // A value is expected here.
            match self.skip_ws() {
                Some(b'"') => {
                    self.pos += 1;
                    self.skip_string()?;
                }
                Some(b'-' | b'0'..=b'9') => {
                    self.scan_number()?;
                }
                Some(open @ (b'[' | b'{')) => {
                    self.pos += 1;
                    let close = open + 2; // `]` and `}` follow `[` and `{` by two
                    if self.skip_ws() == Some(close) {
                        self.pos += 1;
                    } else {
                        self.frames.push(open);
                        if open == b'{' {
                            self.skip_member_name()?;
                        }
                        continue;
                    }
                }
                Some(b'n') => self.literal(b"null")?,
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(_) => return self.fail(EXPECTED_VALUE),
                None => return self.fail(EOF_VALUE),
            }
            // A value ended: close what it ends, up to the next comma.
            loop {
                let Some(open) = self.frames.last() else {
                    return Ok(());
                };
                match self.skip_ws() {
                    Some(b',') => {
                        self.pos += 1;
                        if open == b'{' {
                            self.skip_member_name()?;
                        }
                        break;
                    }
                    Some(c) if c == open + 2 => {
                        self.pos += 1;
                        self.frames.pop();
                    }
                    Some(_) if open == b'[' => return self.fail(LIST_COMMA),
                    Some(_) => return self.fail(OBJECT_COMMA),
                    None if open == b'[' => return self.fail(EOF_LIST),
                    None => return self.fail(EOF_OBJECT),
                }
            }
        }
    }

    /// A skipped object's member name and colon.
    fn skip_member_name(&mut self) -> Res<()> {
        match self.skip_ws() {
            Some(b'"') => self.pos += 1,
            Some(_) => return self.fail(KEY_NOT_STRING),
            None => return self.fail(EOF_OBJECT),
        }
        self.skip_string()?;
        self.colon()
    }

    /// Moves past a string (after its opening quote) checking only the
    /// syntax of its escapes.
    #[inline]
    fn skip_string(&mut self) -> Res<()> {
        loop {
            let (end, _) = string_stop(self.body, self.pos);
            self.pos = end;
            match self.body.get(end) {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.body.get(self.pos) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                            self.pos += 1
                        }
                        Some(b'u') => {
                            self.pos += 1;
                            self.hex4()?;
                        }
                        Some(_) => return self.fail(INVALID_ESCAPE),
                        None => return self.fail(EOF_STRING),
                    }
                }
                Some(_) => return self.fail(CONTROL),
                None => return self.fail(EOF_STRING),
            }
        }
    }
}

/// `bytes`, in which [`string_stop`] saw no byte ≥ 0x80, as text.
#[inline]
fn ascii_text(bytes: &[u8]) -> &str {
    debug_assert!(bytes.is_ascii());
    // SAFETY: every byte is below 0x80 (string_stop's second result, whose
    // bit tracking the tests and the fuzz target check against
    // `from_utf8`), and ASCII is valid UTF-8. This saves the second pass
    // `from_utf8` would make over every key and value.
    unsafe { std::str::from_utf8_unchecked(bytes) }
}

impl<'a> Any<'a> {
    fn into_str_field(self) -> Field<Cow<'a, str>> {
        match self {
            Any::Str(s) => Field::Ok(s),
            Any::Null => Field::Null,
            Any::Bool => Field::WrongType("a boolean"),
            Any::Num(_) => Field::WrongType("a number"),
            Any::Array => Field::WrongType("an array"),
            Any::Object => Field::WrongType("an object"),
        }
    }

    fn into_u64_field(self) -> Field<u64> {
        match self {
            Any::Num(Number::Unsigned(n)) => Field::Ok(n),
            Any::Num(Number::Negative) => Field::WrongType("a negative number"),
            Any::Num(Number::Float) => Field::WrongType("a fractional number"),
            Any::Null => Field::Null,
            Any::Bool => Field::WrongType("a boolean"),
            Any::Str(_) => Field::WrongType("a string"),
            Any::Array => Field::WrongType("an array"),
            Any::Object => Field::WrongType("an object"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `string_stop` must return, a byte at a time.
    fn naive(body: &[u8], from: usize) -> (usize, bool) {
        let end = body[from..]
            .iter()
            .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
            .map_or(body.len(), |i| from + i);
        (end, body[from..end].iter().any(|&c| c >= 0x80))
    }

    #[test]
    fn string_stop_agrees_with_a_byte_loop() {
        // Every stop byte and every byte ≥ 0x80 at every place of the 16-
        // and 8-byte steps, before, at and after the stop; also no stop.
        let fillers: &[u8] = &[b'a', 0x7f, 0x80, 0xc3, 0xff, b' '];
        let stops: &[u8] = &[b'"', b'\\', 0x00, 0x1f, 0x0a];
        for len in 0..42 {
            for stop_at in 0..=len {
                for &stop in stops {
                    for high_at in 0..=len {
                        for &high in fillers {
                            let mut body = vec![b'x'; len];
                            if high_at < len {
                                body[high_at] = high;
                            }
                            if stop_at < len {
                                body[stop_at] = stop;
                            }
                            for from in 0..=len.min(3) {
                                assert_eq!(
                                    string_stop(&body, from),
                                    naive(&body, from),
                                    "{body:?} from {from}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn reasons_name_what_and_where() {
        let cases: &[(&[u8], &str)] = &[
            (b"[1,]", "trailing comma at line 1 column 4"),
            (b"[\n {\"Key\": \"a\x01\"}]", "control character"),
            (b"[\n {\"Key\":\n 1e999}]", "number out of range at line 3"),
            (b"[{\"Key\":\"\\udc00\"}]", "lone leading surrogate"),
            (b"[{\"Key\":\"\\ud800\"}]", "unexpected end of hex escape"),
            (
                b"[{\"Key\":\"\xff\"}]",
                "invalid unicode code point at line 1 column 10",
            ),
            (b"[{\"Key\" 1}]", "expected `:` at line 1 column 9"),
            (b"", "EOF while parsing a value at line 1 column 1"),
            (b"[", "EOF while parsing a list"),
            (
                b"[{\"Flags\":[[[1",
                "EOF while parsing a list at line 1 column 15",
            ),
            (b"[tru]", "expected ident"),
            (
                b"[] []",
                "trailing data after JSON array: trailing characters at line 1 column 4",
            ),
        ];
        for (body, want) in cases {
            let e = parse_response(body).expect_err(want);
            assert!(
                e.0.contains(want),
                "{:?}: {e}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
