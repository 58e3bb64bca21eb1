//! `kv::parse_response` (the hand-written scanner) against the serde_json
//! parser it replaced (`serde_oracle/`): generated documents of every kind,
//! valid or not, must give the same entries or the same refusal.

mod serde_oracle;

use serde_oracle::assert_same;

/// splitmix64: small, seeded, good enough to pick pieces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1",
    "7",
    "1244",
    "01",
    "-01",
    "00",
    "-",
    "+1",
    ".5",
    "1.",
    "1.0",
    "1.5",
    "-1",
    "-1.5",
    "1e5",
    "1E+5",
    "1e-5",
    "1e",
    "1e+",
    "2.",
    "0.0",
    "0e0",
    "1234567890123456789",
    "9999999999999999999",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999",
    "-9223372036854775807",
    "-9223372036854775808",
    "-9223372036854775809",
    "-18446744073709551616",
    "1e308",
    "1e309",
    "-1e309",
    "1.7976931348623157e308",
    "1.7976931348623158e308",
    "1.7976931348623159e308",
    "17976931348623158079372897140530341507993413271003782693617377898044496829276475094664901797758720709633028641669288791094655554785194040263065748867150582068190890200070838367627385484581771153176447573027006985099137184195138155180598966893549152839010000000000000000000000000000000000000000",
    "0e99999999999",
    "1e99999999999",
    "1e-99999999999",
    "0.000000000000000000000000000000000000000001e350",
    "2.5e-324",
    "1e2147483647",
    "1e2147483648",
    "-0.0",
    "4.9e-324",
];

const STRING_PIECES: &[&str] = &[
    "a",
    "upstreams/web/10.0.0.1:80",
    "eyJ3ZWlnaHQiOjF9",
    "",
    " ",
    "\\\"",
    "\\\\",
    "\\/",
    "\\b\\f\\n\\r\\t",
    "\\u0041",
    "\\u00e9",
    "\\u003c",
    "\\u0000",
    "\\uD83D\\uDE00",
    "\\ud83d\\ude00",
    "\\uD800",
    "\\uDC00",
    "\\uD800\\u0041",
    "\\uD800\\n",
    "\\uD800x",
    "\\uD800\\uD800\\uDC00",
    "\\uDBFF\\uDFFF",
    "\\x",
    "\\u12G4",
    "\\u12",
    "\\",
    "é",
    "😀",
    "\u{2028}",
    "\u{7f}",
    "[{]}:,",
];

/// Raw bytes that are not (all) valid text inside a string.
const RAW_PIECES: &[&[u8]] = &[
    b"\xff",
    b"\xc3",
    b"\xc0\x80",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\x01",
    b"\x1f",
    b"\t",
    b"\n",
    b"\xe2\x82",
];

const NAMES: &[&str] = &[
    "Key",
    "Value",
    "ModifyIndex",
    "LockIndex",
    "Flags",
    "CreateIndex",
    "Session",
    "K\\u0065y",
    "Valu\\u0065",
    "key",
    "Key ",
    "KeyX",
    "Keys",
    "ModifyIndexX",
    "",
    "Ke",
    "Session\\n",
    "é",
];

struct Gen {
    rng: Rng,
    out: Vec<u8>,
}

impl Gen {
    fn ws(&mut self) {
        if self.rng.chance(6) {
            let n = 1 + self.rng.below(3);
            for _ in 0..n {
                let c = [b' ', b'\n', b'\t', b'\r'][self.rng.below(4)];
                self.out.push(c);
            }
        }
    }

    fn string(&mut self) {
        self.out.push(b'"');
        let n = self.rng.below(4);
        for _ in 0..n {
            if self.rng.chance(30) {
                let raw = RAW_PIECES[self.rng.below(RAW_PIECES.len())];
                self.out.extend_from_slice(raw);
            } else {
                let piece = self.rng.pick(STRING_PIECES);
                self.out.extend_from_slice(piece.as_bytes());
            }
        }
        self.out.push(b'"');
    }

    fn scalar(&mut self) {
        match self.rng.below(8) {
            0 | 1 => self.string(),
            2 | 3 => {
                let n = self.rng.pick(NUMBERS);
                self.out.extend_from_slice(n.as_bytes());
            }
            4 => self.out.extend_from_slice(b"null"),
            5 => {
                let word = self
                    .rng
                    .pick(&["true", "false", "tru", "nul", "True", "fals"]);
                self.out.extend_from_slice(word.as_bytes());
            }
            6 => {
                let n = self.rng.below(9999);
                self.out.extend_from_slice(n.to_string().as_bytes());
            }
            _ => {
                let junk = self.rng.pick(&["x", "", "]", "}", ",", ":", "NaN", "'a'"]);
                self.out.extend_from_slice(junk.as_bytes());
            }
        }
    }

    /// Any value, containers nested up to `depth`.
    fn value(&mut self, depth: usize) {
        self.ws();
        if depth == 0 || self.rng.chance(2) {
            self.scalar();
        } else if self.rng.chance(2) {
            self.out.push(b'[');
            let n = self.rng.below(4);
            for i in 0..n {
                if i > 0 {
                    self.comma();
                }
                self.value(depth - 1);
            }
            self.ws();
            self.out.push(b']');
        } else {
            self.object(depth - 1, false);
        }
        self.ws();
    }

    fn comma(&mut self) {
        self.ws();
        if !self.rng.chance(80) {
            self.out.push(b',');
        }
        self.ws();
    }

    /// An object; an entry mostly has Consul's fields.
    fn object(&mut self, depth: usize, entry: bool) {
        self.out.push(b'{');
        let n = if entry {
            self.rng.below(8)
        } else {
            self.rng.below(4)
        };
        for i in 0..n {
            if i > 0 {
                self.comma();
            }
            self.ws();
            if self.rng.chance(60) {
                self.scalar();
            } else {
                self.out.push(b'"');
                let name = self.rng.pick(NAMES);
                self.out.extend_from_slice(name.as_bytes());
                self.out.push(b'"');
            }
            self.ws();
            if !self.rng.chance(80) {
                self.out.push(b':');
            }
            if entry && !self.rng.chance(4) {
                self.ws();
                self.scalar();
                self.ws();
            } else {
                self.value(depth);
            }
        }
        if self.rng.chance(60) {
            self.out.push(b',');
        }
        self.ws();
        self.out.push(b'}');
    }

    fn document(&mut self) {
        self.ws();
        if self.rng.chance(15) {
            self.value(3);
        } else {
            self.out.push(b'[');
            let n = self.rng.below(6);
            for i in 0..n {
                if i > 0 {
                    self.comma();
                }
                self.ws();
                if self.rng.chance(5) {
                    self.value(3);
                } else {
                    self.object(3, true);
                }
                self.ws();
            }
            self.out.push(b']');
        }
        self.ws();
        if self.rng.chance(40) {
            let tail = self.rng.pick(&["x", "[]", ",", "\u{0}", " 1"]);
            self.out.extend_from_slice(tail.as_bytes());
        }
    }
}

/// A real body's first entries, as the project's Consul double writes them.
fn sample_body() -> Vec<u8> {
    let mut s = String::from("[");
    for i in 0..6 {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            r#"{{"LockIndex":0,"Key":"upstreams/svc{i}/10.0.0.{i}:80{i}","Flags":0,"Value":"eyJ3ZWlnaHQiOjF9","CreateIndex":12{i},"ModifyIndex":13{i}}}"#
        ));
    }
    s.push_str(r#",{"Key":"upstreams/e\u0073c/[::1]:80","Value":null,"Session":"a\"b","ModifyIndex":1e2}]"#);
    s.into_bytes()
}

#[test]
fn generated_documents_parse_the_same() {
    let mut g = Gen {
        rng: Rng(0x0C4B_5EED),
        out: Vec::new(),
    };
    let mut accepted = 0;
    for _ in 0..30_000 {
        g.out.clear();
        g.document();
        assert_same(&g.out);
        accepted += usize::from(ckv::kv::parse_response(&g.out).is_ok());
    }
    // The generator must reach both sides, or the comparison proves little.
    assert!(accepted > 3_000, "only {accepted} documents accepted");
    assert!(accepted < 27_000, "only {} refused", 30_000 - accepted);
}

#[test]
fn mutated_documents_parse_the_same() {
    let mut rng = Rng(7);
    let base = sample_body();
    let mut doc = Vec::new();
    for _ in 0..20_000 {
        doc.clear();
        doc.extend_from_slice(&base);
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(doc.len());
            match rng.below(4) {
                0 => doc[at] = rng.next() as u8,
                1 => {
                    doc.remove(at);
                }
                2 => doc.insert(at, b"\"\\{}[],:0-.eE \xff"[rng.below(15)]),
                _ => doc[at] ^= 1 << rng.below(8),
            }
        }
        assert_same(&doc);
    }
}

#[test]
fn every_truncation_parses_the_same() {
    let body = sample_body();
    for n in 0..=body.len() {
        assert_same(&body[..n]);
    }
    assert!(ckv::kv::parse_response(&body).is_ok());
}

#[test]
fn every_number_gives_the_same_modify_index() {
    for n in NUMBERS {
        for doc in [
            format!(r#"[{{"ModifyIndex":{n}}}]"#),
            format!(r#"[{{"Key":{n},"Value":{n}}}]"#),
            format!(r#"[{n}]"#),
            format!(r#"[{{"Flags":{n}}}]"#),
            n.to_string(),
            format!(r#"[{{"ModifyIndex": {n} }}]"#),
        ] {
            assert_same(doc.as_bytes());
        }
    }
}

/// Every place a string can stand: decoded (the three fields, an entry's
/// names, an element, the names of an object in a field or at the top) or
/// skipped (other fields, what arrays and objects in a field hold).
const STRING_PLACES: &[(&[u8], &[u8])] = &[
    (b"[{\"Key\":", b"}]"),
    (b"[{\"Value\":", b"}]"),
    (b"[{\"ModifyIndex\":", b"}]"),
    (b"[{\"Session\":", b"}]"),
    (b"[{\"Key\":[", b"]}]"),
    (b"[{\"Key\":{\"a\":", b"}}]"),
    (b"[{\"Key\":{", b":1}}]"),
    (b"[{", b":1}]"),
    (b"[", b"]"),
    (b"[[", b"]]"),
    (b"{\"a\":", b"}"),
    (b"{", b":1}"),
    (b"", b""),
];

#[test]
fn unpaired_surrogates_and_bad_utf8_are_treated_the_same() {
    let mut strings: Vec<Vec<u8>> = [
        &br#""\uD800""#[..],
        br#""\uDC00""#,
        br#""\uD800\u0041""#,
        br#""\uD83D\uDE00""#,
        b"\"\xc3\xa9\"",
        b"\"a\\u00e9\xff\"",
    ]
    .iter()
    .map(|s| s.to_vec())
    .collect();
    for raw in RAW_PIECES {
        strings.push([&b"\""[..], raw, b"\""].concat());
        strings.push([&b"\"a"[..], raw, b"\\n\""].concat());
    }
    for text in &strings {
        for (pre, post) in STRING_PLACES {
            assert_same(&[pre, &text[..], post].concat());
        }
    }
}

#[test]
fn deep_nesting_is_treated_the_same() {
    for depth in [1, 126, 127, 128, 129, 1_000, 100_000] {
        let open = "[".repeat(depth);
        let close = "]".repeat(depth);
        let objects = "{\"a\":".repeat(depth);
        let objects_close = "}".repeat(depth);
        // Alternating brackets: a wrong closer anywhere must be seen.
        let mixed = "[{\"a\":".repeat(depth);
        let mixed_close = "}]".repeat(depth);
        let swapped = format!("]}}{}", "}]".repeat(depth - 1));
        let nested = format!(r#"[{{"Flags":{mixed}1{mixed_close}}}]"#);
        assert!(
            ckv::kv::parse_response(nested.as_bytes()).is_ok(),
            "{depth}"
        );
        let wrong = format!(r#"[{{"Flags":{mixed}1{swapped}}}]"#);
        assert!(
            ckv::kv::parse_response(wrong.as_bytes()).is_err(),
            "{depth}"
        );
        for doc in [
            format!(r#"[{{"Flags":{mixed}1{mixed_close}}}]"#),
            format!(r#"[{{"Flags":{mixed}1{swapped}}}]"#),
            format!(r#"[{{"Flags":{mixed}1{}}}]"#, &mixed_close[2..]),
            format!(r#"[{{"Key":"k","Session":{open}{close}}}]"#),
            format!(r#"[{{"Key":{open}{close}}}]"#),
            format!(r#"[{{"Key":{objects}1{objects_close}}}]"#),
            format!(r#"[{open}{close}]"#),
            format!(r#"[{{"Flags":{objects}1{objects_close}}}]"#),
            format!(r#"[{{"Flags":{open}{close}"#),
            format!(r#"[{{"Flags":{open}1,{{"a":[{close}}}]"#),
            format!("{open}{close}"),
        ] {
            assert_same(doc.as_bytes());
        }
    }
}

#[test]
fn duplicated_fields_keep_the_last_value() {
    let body = br#"[{"Key":"a","Key":"b","Value":"x","Value":7,"ModifyIndex":1,"ModifyIndex":2}]"#;
    assert_same(body);
    let e = ckv::kv::parse_response(body).unwrap();
    assert_eq!(e[0].key, ckv::kv::Field::Ok("b".into()));
    assert_eq!(e[0].value, ckv::kv::Field::WrongType("a number"));
    assert_eq!(e[0].modify_index, ckv::kv::Field::Ok(2));
}

#[test]
fn the_benchmark_body_shape_parses_the_same() {
    // Long keys and values cross the scanner's 8-byte steps at every offset.
    let mut body = String::from("[");
    for i in 0..64 {
        if i > 0 {
            body.push_str(",\n  ");
        }
        let key = "k".repeat(i);
        let value = "v".repeat(2 * i);
        body.push_str(&format!(
            r#"{{"LockIndex":0,"Key":"upstreams/{key}/10.0.0.1:80","Flags":0,"Value":"{value}","CreateIndex":{i},"ModifyIndex":{i}}}"#
        ));
    }
    body.push(']');
    assert_same(body.as_bytes());
    assert_eq!(ckv::kv::parse_response(body.as_bytes()).unwrap().len(), 64);
}
