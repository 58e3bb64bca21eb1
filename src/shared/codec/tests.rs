use std::collections::BTreeMap;

use super::*;
use crate::shared::{codec_v1, codec_v2};

/// A small deterministic generator (no dependency, same cases every run).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What a snapshot should hold: name → (generation, server, node_count, json).
type Model = BTreeMap<String, (u64, u16, u32, String)>;

fn random_model(rng: &mut Rng, count: usize) -> Model {
    // Odd bytes in names: quotes, backslashes, control characters, non-ASCII,
    // empty names and names that are prefixes of others.
    const PIECES: &[&str] = &[
        "",
        "a",
        "/",
        "\"",
        "\\",
        "\n",
        "\u{1}",
        "é",
        "服务",
        "\u{10ffff}",
        "web",
        "x/y/",
        " ",
    ];
    let mut m = Model::new();
    while m.len() < count {
        let server = rng.below(5) as u16;
        // Most names start with their server's head, as APISIX's do.
        let mut name = if rng.below(4) == 0 {
            String::new()
        } else {
            format!("http://s{server}:8500/v1/kv/up/")
        };
        for _ in 0..rng.below(6) {
            name.push_str(PIECES[rng.below(PIECES.len() as u64) as usize]);
        }
        if rng.below(3) == 0 {
            name.push_str(&rng.next().to_string());
        }
        let nodes = rng.below(4) as u32;
        let json = if nodes == 0 {
            "[]".to_string()
        } else {
            let list: Vec<String> = (0..nodes)
                .map(|i| format!(r#"{{"host":"10.0.0.{i}","port":80,"weight":1}}"#))
                .collect();
            format!("[{}]", list.join(","))
        };
        let generation = rng.next();
        m.insert(name, (generation, server, nodes, json));
    }
    m
}

fn refs(m: &Model) -> Vec<ServiceRef<'_>> {
    m.iter()
        .map(
            |(name, (generation, server, node_count, json))| ServiceRef {
                name: Name::whole(name),
                generation: *generation,
                server: *server,
                node_count: *node_count,
                nodes_json: json,
            },
        )
        .collect()
}

fn meta() -> Meta {
    Meta {
        seq: 42,
        from_dump: false,
        synced: true,
        received_us: 1_700_000_000_123_456,
    }
}

/// The file for `m`, with its services handed over in a shuffled order.
fn file_of(m: &Model, rng: &mut Rng) -> Vec<u8> {
    let mut services = refs(m);
    for i in (1..services.len()).rev() {
        services.swap(i, rng.below(i as u64 + 1) as usize);
    }
    Table::build(&meta(), services).as_bytes().to_vec()
}

/// Every way of reading `t` agrees with `m`.
fn assert_same(t: &Table, m: &Model) {
    assert_eq!(t.len(), m.len());
    assert_eq!(*t.meta(), meta());
    let expected = refs(m);
    assert!(
        t.iter().eq(expected.iter().copied()),
        "iteration in name order"
    );
    for (i, s) in expected.iter().enumerate() {
        let name = s.name.to_str();
        assert_eq!(t.get(&name), Some(*s), "{name:?}");
        assert_eq!(t.nth(i), Some(*s));
        assert_eq!(t.position(&name), Some(i));
    }
    assert_eq!(t.nth(m.len()), None);
    let nodes: u64 = m.values().map(|v| u64::from(v.2)).sum();
    assert_eq!(t.node_count(), nodes);
}

#[test]
fn opened_files_read_as_the_services_they_were_built_from() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for count in [0, 1, 2, 3, 7, 64, 500, 3000] {
        let m = random_model(&mut rng, count);
        let file = file_of(&m, &mut rng);
        let t = Table::open(Bytes::from(file.clone())).unwrap();
        assert_same(&t, &m);
        // Names that are absent, including prefixes and extensions of present ones.
        for name in m.keys().take(50) {
            for probe in [format!("{name}?"), format!("?{name}")] {
                assert_eq!(t.get(&probe).is_some(), m.contains_key(&probe), "{probe:?}");
            }
        }
        // Building the same services again gives the same bytes.
        assert_eq!(file_of(&m, &mut rng), file);
    }
}

#[test]
fn a_hundred_thousand_services() {
    let mut rng = Rng(7);
    let mut m = Model::new();
    for i in 0..100_000u64 {
        let name = format!("http://127.0.0.1:8500/v1/kv/upstreams/svc-{i:06}/");
        let json = format!(
            r#"[{{"host":"10.0.{}.{}","port":80,"weight":1}}]"#,
            i / 256,
            i % 256
        );
        m.insert(name, (i, 0, 1, json));
    }
    let file = file_of(&m, &mut rng);
    let t = Table::open(Bytes::from(file.clone())).unwrap();
    assert_same(&t, &m);
    assert!(t
        .get("http://127.0.0.1:8500/v1/kv/upstreams/svc-100000/")
        .is_none());
    // The server's head is held once: each record keeps `svc-NNNNNN/`.
    let head = b"http://127.0.0.1:8500/v1/kv/upstreams/";
    assert_eq!(file.windows(head.len()).filter(|w| w == head).count(), 1);
    assert_eq!(t.heads.len(), 2);
    let tails = 100_000 * "svc-000000/".len();
    let json: usize = m.values().map(|v| v.3.len()).sum();
    assert_eq!(
        t.offsets_at - t.records_at,
        100_000 * RECORD_FIXED + tails + json
    );
}

#[test]
fn a_name_in_two_pieces_hashes_as_the_whole_name() {
    let name = b"http://127.0.0.1:8500/v1/kv/upstreams/web-service-17/";
    for seed in [0, 1, 0xdead_beef] {
        for end in 0..name.len() {
            let part = &name[..end];
            let want = seeded_hash(seed, part);
            for cut in 0..=end {
                let got = seeded_hash_of_parts(seed, &part[..cut], &part[cut..]);
                assert_eq!(got, want, "seed {seed}, {end} bytes cut at {cut}");
            }
        }
    }
}

#[test]
fn the_seeded_hash_is_the_documented_one() {
    // Computed from the formula in `seeded_hash`'s documentation by an
    // independent implementation: the hash is part of the file format.
    assert_eq!(seeded_hash(0, b""), 0x59b8_1abf_6522_ad07);
    assert_eq!(seeded_hash(0, b"a"), 0xf8ab_81d3_2d66_95d7);
    assert_eq!(seeded_hash(1, b"a"), 0xed06_c703_3639_7893);
    assert_eq!(seeded_hash(7, b"12345678"), 0xbfa6_a27a_d05b_737f);
    assert_eq!(
        seeded_hash(0xdead_beef, b"http://127.0.0.1:8500/v1/kv/upstreams/web/"),
        0x96e0_145d_ae71_e68f
    );
    // A zero-padded tail is not the same name.
    assert_ne!(seeded_hash(0, b"a"), seeded_hash(0, b"a\0"));
}

#[test]
fn a_seeded_file_names_its_seed_and_places_names_by_it() {
    let s = ServiceRef {
        name: Name::whole("web/"),
        generation: 7,
        server: 2,
        node_count: 0,
        nodes_json: "[]",
    };
    let seed = 0x1234_5678;
    let file = Table::build_seeded(&meta(), vec![s], seed)
        .as_bytes()
        .to_vec();
    assert_eq!(u32_at(&file, 24), Some(2));
    assert_eq!(u32_at(&file, 36), Some(seed));
    let h = seeded_hash(seed, b"web/");
    let slot = ((h ^ (h >> 32)) & 1) as usize;
    let index_at = u32_at(&file, 48).unwrap() as usize;
    assert_eq!(u32_at(&file, index_at + 4 * slot), Some(1));
    assert_eq!(Table::open(Bytes::from(file)).unwrap().get("web/"), Some(s));
}

#[test]
fn files_of_other_seeds_open_and_find_every_name() {
    let mut rng = Rng(7);
    let m = random_model(&mut rng, 500);
    for seed in [0, 1, u32::MAX] {
        let file = Table::build_seeded(&meta(), refs(&m), seed)
            .as_bytes()
            .to_vec();
        let t = Table::open(Bytes::from(file)).unwrap();
        assert_same(&t, &m);
    }
}

#[test]
fn the_layout_is_the_documented_one() {
    let s = |name, generation| ServiceRef {
        name: Name::whole(name),
        generation,
        server: 2,
        node_count: 0,
        nodes_json: "[]",
    };
    let seed = 0x0bad_cafe;
    let file = Table::build_seeded(&meta(), vec![s("k/b/", 8), s("k/a/", 7)], seed)
        .as_bytes()
        .to_vec();
    let mut want = b"CKVSNAP3".to_vec();
    want.extend_from_slice(&42u64.to_le_bytes());
    want.extend_from_slice(&1_700_000_000_123_456u64.to_le_bytes());
    want.extend_from_slice(&2u32.to_le_bytes()); // synced
    want.extend_from_slice(&2u32.to_le_bytes()); // count
    want.extend_from_slice(&4u32.to_le_bytes()); // slots
    want.extend_from_slice(&seed.to_le_bytes());
    let records_at = 64 + (2 + 2) + 2; // heads "k/" and ""
    let offsets_at = records_at + 2 * (24 + 2 + 2);
    let index_at = offsets_at + 2 * 4;
    for n in [records_at, offsets_at, index_at, index_at + 4 * 4] {
        want.extend_from_slice(&(n as u32).to_le_bytes());
    }
    want.extend_from_slice(&2u16.to_le_bytes()); // heads
    want.extend_from_slice(&[0; 6]);
    want.extend_from_slice(&2u16.to_le_bytes());
    want.extend_from_slice(b"k/");
    want.extend_from_slice(&0u16.to_le_bytes());
    for (generation, tail) in [(7u64, b"a/"), (8, b"b/")] {
        want.extend_from_slice(&generation.to_le_bytes());
        want.extend_from_slice(&0u32.to_le_bytes()); // node count
        want.extend_from_slice(&2u16.to_le_bytes()); // server
        want.extend_from_slice(&0u16.to_le_bytes()); // head "k/"
        want.extend_from_slice(&2u32.to_le_bytes());
        want.extend_from_slice(&2u32.to_le_bytes());
        want.extend_from_slice(tail);
        want.extend_from_slice(b"[]");
    }
    want.extend_from_slice(&(records_at as u32).to_le_bytes());
    want.extend_from_slice(&(records_at as u32 + 28).to_le_bytes());
    let mut index = [0u32; 4];
    for (i, name) in [b"k/a/", b"k/b/"].iter().enumerate() {
        let h = seeded_hash(seed, *name);
        let mut slot = ((h ^ (h >> 32)) & 3) as usize;
        while index[slot] != 0 {
            slot = (slot + 1) & 3;
        }
        index[slot] = i as u32 + 1;
    }
    for e in index {
        want.extend_from_slice(&e.to_le_bytes());
    }
    assert_eq!(file, want);
}

fn sample_file() -> (Model, Vec<u8>) {
    let mut rng = Rng(99);
    let mut m = random_model(&mut rng, 40);
    m.insert(
        "b-web/".into(),
        (3, 0, 1, r#"[{"host":"h","port":1,"weight":1}]"#.into()),
    );
    // A server all of whose names share a head.
    for name in ["http://s9/v1/kv/up/a/", "http://s9/v1/kv/up/b/"] {
        m.insert(name.into(), (4, 9, 0, "[]".into()));
    }
    let file = file_of(&m, &mut rng);
    (m, file)
}

fn open_err(file: Vec<u8>) -> String {
    match Table::open(Bytes::from(file)) {
        Ok(_) => panic!("a corrupt file was accepted"),
        Err(e) => e,
    }
}

#[test]
fn every_truncation_and_extension_is_refused() {
    let (_, file) = sample_file();
    for n in 0..file.len() {
        let err = open_err(file[..n].to_vec());
        assert!(!err.is_empty());
    }
    let mut longer = file.clone();
    longer.push(0);
    assert!(open_err(longer).contains("its header says"));
}

struct Parts {
    seed: u32,
    count: usize,
    slots: usize,
    records_at: usize,
    offsets_at: usize,
    index_at: usize,
}

fn layout(file: &[u8]) -> Parts {
    Parts {
        seed: u32_at(file, 36).unwrap(),
        count: u32_at(file, 28).unwrap() as usize,
        slots: u32_at(file, 32).unwrap() as usize,
        records_at: u32_at(file, 40).unwrap() as usize,
        offsets_at: u32_at(file, 44).unwrap() as usize,
        index_at: u32_at(file, 48).unwrap() as usize,
    }
}

fn put_u32(file: &mut [u8], at: usize, v: u32) {
    file[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u16(file: &mut [u8], at: usize, v: u16) {
    file[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

/// Applies `corrupt` to a good file; the error must contain `expect`.
fn refused(expect: &str, corrupt: impl FnOnce(&mut Vec<u8>, &Parts)) {
    let (_, mut file) = sample_file();
    let l = layout(&file);
    corrupt(&mut file, &l);
    let Err(err) = Table::open(Bytes::from(file)) else {
        panic!("a file corrupt for {expect:?} was accepted");
    };
    assert!(err.contains(expect), "expected {expect:?} in {err:?}");
}

#[test]
fn targeted_corruptions_are_refused_with_what_is_wrong() {
    refused("bad magic", |f, _| f[7] = b'9');
    refused("unknown flags", |f, _| put_u32(f, 24, 4 | 2));
    refused("reserved header bytes", |f, _| f[63] = 1);
    // Another seed sends lookups elsewhere.
    refused("does not lead to service", |f, l| {
        put_u32(f, 36, l.seed ^ 1)
    });
    // Counts that lie.
    refused("header counts lie", |f, l| {
        put_u32(f, 28, l.count as u32 - 1)
    });
    refused("header counts lie", |f, l| {
        put_u32(f, 28, l.count as u32 + 1)
    });
    refused("power of two", |f, l| put_u32(f, 32, l.slots as u32 - 1));
    refused("power of two", |f, l| put_u32(f, 28, l.slots as u32));
    refused("header counts lie", |f, l| {
        put_u32(f, 48, l.index_at as u32 + 4)
    });
    refused("outside the file", |f, _| put_u32(f, 44, u32::MAX));
    refused("outside the file", |f, _| put_u32(f, 40, 3));
    refused("outside the file", |f, l| {
        put_u32(f, 40, l.offsets_at as u32 + 1)
    });
    // Heads: lengths past their part, bytes that are not text, a part
    // that does not end where the records begin.
    refused("name head 0 at byte 64 runs past the heads", |f, _| {
        put_u16(f, 64, u16::MAX)
    });
    refused("is not UTF-8", |f, _| {
        // The first head that is not empty.
        let mut at = 64;
        while u16_at(f, at) == Some(0) {
            at += 2;
        }
        f[at + 2] = 0xff;
    });
    refused("stray bytes between the name heads", |f, _| {
        let n = u16_at(f, 56).unwrap();
        put_u16(f, 56, n - 1);
    });
    refused("runs past the heads", |f, _| {
        let n = u16_at(f, 56).unwrap();
        put_u16(f, 56, n + 1);
    });
    refused("names head 700", |f, l| put_u16(f, l.records_at + 14, 700));
    // Offsets out of bounds or into the middle of a record.
    refused("offset table says record 0", |f, l| {
        put_u32(f, l.offsets_at, u32::MAX)
    });
    refused("offset table says record 1", |f, l| {
        let at = u32_at(f, l.offsets_at + 4).unwrap();
        put_u32(f, l.offsets_at + 4, at + 3);
    });
    // A record whose lengths run past the records.
    refused("runs past the records", |f, l| {
        put_u32(f, l.records_at + 20, u32::MAX)
    });
    refused("runs past the records", |f, l| {
        put_u32(f, l.records_at + 16, u32::MAX - 30)
    });
    // Index entries: out of range, twice, missing, misplaced.
    refused("names record", |f, l| {
        let slot = (0..l.slots)
            .find(|s| u32_at(f, l.index_at + 4 * s) == Some(0))
            .unwrap();
        put_u32(f, l.index_at + 4 * slot, l.count as u32 + 1);
    });
    refused("twice", |f, l| {
        let slot = (0..l.slots)
            .find(|s| u32_at(f, l.index_at + 4 * s) == Some(0))
            .unwrap();
        let used = (0..l.slots)
            .find(|s| u32_at(f, l.index_at + 4 * s) != Some(0))
            .unwrap();
        let e = u32_at(f, l.index_at + 4 * used).unwrap();
        put_u32(f, l.index_at + 4 * slot, e);
    });
    // An entry removed: the lookup of its name finds an empty slot.
    refused("does not lead to service", |f, l| {
        let used = (0..l.slots)
            .find(|s| u32_at(f, l.index_at + 4 * s) != Some(0))
            .unwrap();
        put_u32(f, l.index_at + 4 * used, 0);
    });
    refused("does not lead to service", |f, l| {
        // An entry sitting at its home slot, moved to an empty slot elsewhere.
        let mask = l.slots - 1;
        let t = Table::open(Bytes::from(f.clone())).unwrap();
        let (slot, e) = (0..l.slots)
            .map(|s| (s, u32_at(f, l.index_at + 4 * s).unwrap() as usize))
            .find(|&(s, e)| {
                e != 0 && home(hash_name(l.seed, &t.nth(e - 1).unwrap().name), mask) == s
            })
            .unwrap();
        let empty = (0..l.slots)
            .find(|&s| s != slot && u32_at(f, l.index_at + 4 * s) == Some(0))
            .unwrap();
        put_u32(f, l.index_at + 4 * slot, 0);
        put_u32(f, l.index_at + 4 * empty, e as u32);
    });
}

/// A file whose records are laid out in the given order (not sorted), with
/// a consistent index: only the order is wrong.
fn unsorted_file(services: &[ServiceRef<'_>]) -> Vec<u8> {
    // The heads are those of the names in order (as a build makes them).
    let mut in_order = services.to_vec();
    in_order.sort_by(|a, b| a.name.cmp(&b.name));
    let heads = Heads::of(&in_order);
    let chosen: Vec<_> = services.iter().map(|s| heads.choose(s)).collect();
    let records = services
        .iter()
        .zip(&chosen)
        .map(|(s, c)| RECORD_FIXED + s.name.len() - c.1 + s.nodes_json.len())
        .sum();
    encode_sorted(
        &meta(),
        services,
        &chosen,
        &heads,
        seed_for_this_process(),
        records,
    )
    .as_bytes()
    .to_vec()
}

#[test]
fn records_out_of_order_or_repeated_are_refused() {
    let s = |name| ServiceRef {
        name: Name::whole(name),
        generation: 1,
        server: 0,
        node_count: 0,
        nodes_json: "[]",
    };
    let err = open_err(unsorted_file(&[s("a/"), s("c/"), s("b/")]));
    assert!(err.contains("strict name order at record 2"), "{err}");
    let err = open_err(unsorted_file(&[s("a/"), s("a/")]));
    assert!(err.contains("strict name order at record 1"), "{err}");
    assert!(Table::open(Bytes::from(unsorted_file(&[s("a/"), s("b/")]))).is_ok());
    // With a head: the order is of whole names.
    let err = open_err(unsorted_file(&[s("h/a/"), s("h/c/"), s("h/b/")]));
    assert!(err.contains("record 2 (\"h/b/\")"), "{err}");
}

#[test]
fn names_and_json_must_be_utf8() {
    let s = |name, json| ServiceRef {
        name: Name::whole(name),
        generation: 1,
        server: 0,
        node_count: 0,
        nodes_json: json,
    };
    let mut file = unsorted_file(&[s("a/", "[]"), s("b/", "[]")]);
    let l = layout(&file);
    let second_name = u32_at(&file, l.offsets_at + 4).unwrap() as usize + RECORD_FIXED;
    file[second_name] = 0xff;
    let err = open_err(file.clone());
    assert!(
        err.contains("name of record 1") && err.contains("UTF-8"),
        "{err}"
    );
    file[second_name] = b'b';
    file[second_name + 2] = 0xc3;
    let err = open_err(file);
    assert!(
        err.contains("nodes of service \"b/\" are not UTF-8"),
        "{err}"
    );
}

#[test]
fn previous_release_files_still_read() {
    let mut rng = Rng(5);
    let m = random_model(&mut rng, 30);
    let services = refs(&m);
    for with_received in [true, false] {
        let v1 = codec_v1::encode(&meta(), &services, with_received);
        let t = Table::open(Bytes::from(v1.clone())).unwrap();
        assert!(!t.is_mapped());
        let mut want = meta();
        if !with_received {
            want.received_us = 0;
        }
        assert_eq!(*t.meta(), want);
        assert!(t.iter().eq(services.iter().copied()));
        assert_eq!(decode(&v1, None).unwrap().len(), m.len());
        for n in 0..v1.len() {
            assert!(Table::open(Bytes::from(v1[..n].to_vec())).is_err(), "{n}");
        }
    }
    // The layout before name heads: records with whole names.
    let mut shuffled = services.clone();
    shuffled.reverse();
    let v2 = codec_v2::encode(&meta(), &shuffled);
    let t = Table::open(Bytes::from(v2.clone())).unwrap();
    assert!(!t.is_mapped());
    assert_eq!(*t.meta(), meta());
    assert_same(&t, &m);
    for n in 0..v2.len() {
        assert!(Table::open(Bytes::from(v2[..n].to_vec())).is_err(), "{n}");
    }
    let mut bad = v2.clone();
    bad[64 + 22] = 0xff;
    let err = open_err(bad);
    assert!(err.contains("not UTF-8"), "{err}");
}

#[test]
fn encode_follows_fields_changed_after_building() {
    let (m, file) = sample_file();
    let mut s = open(file.clone()).unwrap();
    assert!(matches!(file_bytes(&s), Cow::Borrowed(b) if *b == file[..]));
    s.seq = 43;
    s.from_dump = true;
    let again = open(encode(&s)).unwrap();
    assert_eq!((again.seq, again.from_dump, again.synced), (43, true, true));
    assert!(again.iter().eq(refs(&m).iter().copied()));
}

#[test]
fn the_name_sort_is_byte_order() {
    let mut rng = Rng(11);
    // Long shared prefixes, names ending inside a key, NUL and 0xff bytes,
    // long runs of equal keys: every branch of the sort.
    for _ in 0..20 {
        let prefix = "p".repeat(rng.below(40) as usize);
        let names: Vec<Vec<u8>> = (0..rng.below(3000))
            .map(|_| {
                let mut n = prefix.clone().into_bytes();
                for _ in 0..rng.below(24) {
                    n.push([0u8, b'a', b'b', 0xff][rng.below(4) as usize]);
                }
                n
            })
            .collect();
        let refs: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
        let mut order: Vec<u32> = (0..refs.len() as u32).collect();
        sort_by_name(&refs, &mut order, 0);
        let sorted: Vec<&[u8]> = order.iter().map(|&i| refs[i as usize]).collect();
        let mut want = refs.clone();
        want.sort();
        assert_eq!(sorted, want);
    }
}

/// A read-only mapping of `file` whose file is already gone.
fn mapping_of(file: &[u8]) -> Mmap {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("snap.1"), file).unwrap();
    let fd = crate::fsutil::open_dir(dir.path()).unwrap();
    let map = crate::fsutil::map_capped(&fd, "snap.1", 1 << 30, MAGIC_PREFIX)
        .unwrap()
        .unwrap();
    // The file goes at once: the mapping stays.
    drop(dir);
    map
}

/// The table a follower serves: a read-only mapping of the file.
fn mapped(file: &[u8]) -> Table {
    Table::open(Bytes::from(mapping_of(file))).unwrap()
}

#[test]
fn a_heap_table_moves_to_a_mapping_of_exactly_its_bytes() {
    let mut rng = Rng(0x7e11);
    let m = random_model(&mut rng, 300);
    let file = file_of(&m, &mut rng);
    let heap = Table::open(Bytes::from(file.clone())).unwrap();
    let moved = heap.remapped(mapping_of(&file)).unwrap();
    assert!(moved.is_mapped());
    assert_same(&moved, &m);
    assert!(moved.iter().eq(heap.iter()));
    // Other bytes (one flipped, or one more) are not taken.
    let mut other = file.clone();
    let last = other.len() - 1;
    other[last] ^= 1;
    assert!(heap.remapped(mapping_of(&other)).is_none());
    let mut longer = file.clone();
    longer.push(0);
    assert!(heap.remapped(mapping_of(&longer)).is_none());
}

#[test]
fn mapped_files_read_as_the_heap_tables_they_were_written_from() {
    let mut rng = Rng(0x51ab);
    for count in [0, 1, 2, 500, 20_000] {
        let m = random_model(&mut rng, count);
        let file = file_of(&m, &mut rng);
        let heap = Table::open(Bytes::from(file.clone())).unwrap();
        let map = mapped(&file);
        assert!(map.is_mapped() && !heap.is_mapped());
        assert_same(&map, &m);
        assert!(map.iter().eq(heap.iter()));
    }
}

/// `m` with every generation at most `meta().seq`, as a leader's are.
fn settled(mut m: Model) -> Model {
    for v in m.values_mut() {
        v.0 %= meta().seq + 1;
    }
    m
}

/// New nodes for a random few services of `m` (shorter, longer or the same
/// length), stamped with `generation`.
fn change_some(m: &mut Model, rng: &mut Rng, how_many: usize, generation: u64) {
    let names: Vec<String> = m.keys().cloned().collect();
    if names.is_empty() {
        return;
    }
    for _ in 0..how_many {
        let name = &names[rng.below(names.len() as u64) as usize];
        let v = m.get_mut(name).unwrap();
        let nodes = rng.below(5) as u32;
        let list: Vec<String> = (0..nodes)
            .map(|i| {
                format!(
                    r#"{{"host":"10.1.0.{i}","port":{},"weight":{}}}"#,
                    rng.below(99),
                    i
                )
            })
            .collect();
        *v = (generation, v.1, nodes, format!("[{}]", list.join(",")));
    }
}

#[test]
fn a_patched_table_has_the_bytes_of_a_full_build() {
    let mut rng = Rng(0x9a7c);
    for count in [1, 2, 3, 50, 3000] {
        let mut m = settled(random_model(&mut rng, count));
        let mut prev = Table::build_seeded(&meta(), refs(&m), 7);
        for round in 0..6u64 {
            // None changed, one, a few, all of them.
            let how_many = [0, 1, 3, count, 1, 2][round as usize];
            change_some(&mut m, &mut rng, how_many, prev.meta().seq + 1);
            let next_meta = Meta {
                seq: prev.meta().seq + 1,
                ..meta()
            };
            let patched = Table::patched(&prev, &next_meta, &refs(&m)).expect("patchable");
            let built = Table::build_seeded(&next_meta, refs(&m), 7);
            assert_eq!(
                patched.as_bytes(),
                built.as_bytes(),
                "{count} services, round {round}"
            );
            assert_eq!(patched.node_count(), built.node_count());
            // And it opens as a file does, validated.
            let opened = Table::open(Bytes::from(patched.as_bytes().to_vec())).unwrap();
            assert!(opened.iter().eq(refs(&m).into_iter()));
            // The mapping of the leader's own file can be patched in turn.
            prev = patched.remapped(mapping_of(patched.as_bytes())).unwrap();
        }
    }
}

#[test]
fn a_generation_newer_than_the_previous_table_is_written_again() {
    // The record says generation 50 > seq 42: a service stamped 50 since
    // may have other nodes of the same length, and must not be copied.
    let mut rng = Rng(0x51);
    let mut m = settled(random_model(&mut rng, 40));
    let first = m.keys().next().unwrap().clone();
    m.get_mut(&first).unwrap().0 = 50;
    let prev = Table::build_seeded(&meta(), refs(&m), 3);
    let v = m.get_mut(&first).unwrap();
    // Same generation, same length, other bytes.
    v.3 = v.3.replace('1', "2").replace('0', "3");
    let next_meta = Meta { seq: 43, ..meta() };
    let patched = Table::patched(&prev, &next_meta, &refs(&m)).unwrap();
    assert_eq!(patched.get(&first).unwrap().nodes_json, m[&first].3);
    let built = Table::build_seeded(&next_meta, refs(&m), 3);
    assert_eq!(patched.as_bytes(), built.as_bytes());
}

#[test]
fn a_patch_written_into_a_used_buffer_is_the_same_patch() {
    let mut rng = Rng(0x600d);
    let mut m = settled(random_model(&mut rng, 300));
    let prev = Table::build_seeded(&meta(), refs(&m), 9);
    change_some(&mut m, &mut rng, 20, meta().seq + 1);
    let next_meta = Meta {
        seq: meta().seq + 1,
        ..meta()
    };
    let fresh = Table::patched(&prev, &next_meta, &refs(&m)).unwrap();
    let need = fresh.as_bytes().len();
    // The previous table's buffer (full of its bytes), one too small, and
    // an untouched one.
    let used = Table::build_seeded(&meta(), refs(&m), 9)
        .into_heap_bytes()
        .unwrap();
    for mut room in [used, vec![0xa5; 7], Vec::new()] {
        room.reserve(need.saturating_sub(room.len()) / 2);
        let (at, fits) = (room.as_ptr(), room.capacity() >= need);
        let t = Table::patched_in(&prev, &next_meta, refs(&m), room).unwrap();
        assert_eq!(t.as_bytes(), fresh.as_bytes());
        let bytes = t.into_heap_bytes().unwrap();
        // A buffer large enough is written into, not replaced.
        assert_eq!(bytes.as_ptr() == at, fits);
    }
    // A mapped table has no heap buffer to give.
    assert!(mapped(prev.as_bytes()).into_heap_bytes().is_none());
}

#[test]
fn tables_that_cannot_be_patched_say_so() {
    let mut rng = Rng(0x0dd);
    let m = settled(random_model(&mut rng, 30));
    let next = Meta { seq: 43, ..meta() };
    let prev = Table::build_seeded(&meta(), refs(&m), 5);
    // One service more or fewer.
    let mut fewer = refs(&m);
    let last = fewer.pop().unwrap();
    assert!(Table::patched(&prev, &next, &fewer).is_none());
    let mut more = refs(&m);
    more.push(last);
    assert!(Table::patched(&prev, &next, &more).is_none());
    // Another server, or a name of another length, at the same place.
    let mut moved = refs(&m);
    moved[3].server += 1;
    assert!(Table::patched(&prev, &next, &moved).is_none());
    let longer = format!("{}x", moved[4].name.to_str());
    let mut renamed = refs(&m);
    renamed[4].name = Name::whole(&longer);
    assert!(Table::patched(&prev, &next, &renamed).is_none());
    // Built from a shuffled list: its records are not the services given.
    let shuffled = Table::open(Bytes::from(file_of(&m, &mut rng))).unwrap();
    assert!(Table::patched(&shuffled, &next, &refs(&m)).is_none());
    let mut given = refs(&m);
    given.reverse();
    let sorted_here = Table::build_seeded(&meta(), given, 5);
    assert!(Table::patched(&sorted_here, &next, &refs(&m)).is_none());
    // A file opened from bytes, whatever its order.
    let opened = Table::open(Bytes::from(prev.as_bytes().to_vec())).unwrap();
    assert!(Table::patched(&opened, &next, &refs(&m)).is_none());
    // The one that can.
    assert!(Table::patched(&prev, &next, &refs(&m)).is_some());
}

/// A file and the file after a few services' nodes changed (as the leader
/// patches it), with the tables a follower holds for each.
fn file_and_next(rng: &mut Rng, count: usize) -> (Model, Table, Vec<u8>) {
    let mut m = settled(random_model(rng, count));
    let prev = Table::build_seeded(&meta(), refs(&m), 11);
    change_some(&mut m, rng, 1 + count / 10, meta().seq + 1);
    let next_meta = Meta {
        seq: meta().seq + 1,
        ..meta()
    };
    let next = Table::patched(&prev, &next_meta, &refs(&m)).unwrap();
    let held = mapped(prev.as_bytes());
    (m, held, next.as_bytes().to_vec())
}

#[test]
fn a_file_that_changes_only_nodes_is_checked_against_the_previous_one() {
    let mut rng = Rng(0xaf7e);
    for count in [0, 1, 2, 40, 5000] {
        let (m, held, next) = file_and_next(&mut rng, count);
        let fast = after::validate_after(&next, &held).expect("the quick path");
        let whole = validate(&next).unwrap();
        assert_eq!(fast.meta, whole.meta);
        assert_eq!(
            (fast.count, fast.seed, fast.nodes),
            (whole.count, whole.seed, whole.nodes)
        );
        assert_eq!(fast.heads, whole.heads);
        let opened = Table::open_after(Bytes::from(mapping_of(&next)), &held).unwrap();
        assert!(opened.iter().eq(refs(&m).into_iter()), "{count}");
        for s in refs(&m) {
            assert_eq!(opened.get(&s.name.to_str()), Some(s));
        }
    }
}

#[test]
fn a_file_that_differs_otherwise_is_validated_whole() {
    let mut rng = Rng(0x3e1);
    let (_, held, next) = file_and_next(&mut rng, 60);
    let l = layout(&next);
    // Nodes that are not UTF-8: the whole validation says so.
    let mut bad_json = next.clone();
    let r = raw_record(&bad_json, l.records_at, l.offsets_at).unwrap();
    bad_json[r.json.0] = 0xff;
    assert!(after::validate_after(&bad_json, &held).is_none());
    let e = Table::open_after(Bytes::from(bad_json), &held).unwrap_err();
    assert!(e.contains("not UTF-8"), "{e}");
    // A name of the same length with other bytes: its order and index are
    // not the previous one's, so nothing is taken from it.
    let mut renamed = next.clone();
    renamed[r.tail.0 + r.tail.1 - 1] ^= 1;
    assert!(after::validate_after(&renamed, &held).is_none());
    // Another index, or an offset that lies.
    let mut index = next.clone();
    let last = index.len() - 1;
    index[last] ^= 1;
    assert!(after::validate_after(&index, &held).is_none());
    assert!(Table::open_after(Bytes::from(index), &held).is_err());
    let mut offset = next.clone();
    put_u32(&mut offset, l.offsets_at + 4, 0);
    assert!(after::validate_after(&offset, &held).is_none());
    assert!(Table::open_after(Bytes::from(offset), &held).is_err());
    // A file of other services altogether opens as any file does.
    let other = settled(random_model(&mut rng, 61));
    let file = file_of(&other, &mut rng);
    assert!(after::validate_after(&file, &held).is_none());
    let t = Table::open_after(Bytes::from(file), &held).unwrap();
    assert_same(&t, &other);
}

/// The index lookups of a validation are made some records after each
/// name is read, and the last ones after all records: whichever record's
/// entry is missing from the index, the error names that service.
#[test]
fn a_missing_index_entry_is_reported_for_its_own_service() {
    let (_, file) = sample_file();
    let l = layout(&file);
    let t = Table::open(Bytes::from(file.clone())).unwrap();
    assert!(l.count > 2 * PROBE_AHEAD, "both paths are taken");
    for i in 0..l.count {
        let mut f = file.clone();
        let slot = (0..l.slots)
            .find(|&s| u32_at(&f, l.index_at + 4 * s) == Some(i as u32 + 1))
            .unwrap();
        put_u32(&mut f, l.index_at + 4 * slot, 0);
        let name = t.nth(i).unwrap().name.to_string();
        let err = Table::open(Bytes::from(f)).err().unwrap();
        assert!(
            err.contains(&format!("index does not lead to service {name:?}")),
            "record {i}: {err}"
        );
    }
}

#[test]
fn a_servers_head_is_what_all_of_its_names_share() {
    let mut rng = Rng(0x4ead);
    for count in [1, 2, 3, 50, 400] {
        let m = random_model(&mut rng, count);
        let services = refs(&m);
        // Read from every name, in the order the servers first appear.
        let mut shared: Vec<(u16, &[u8])> = Vec::new();
        for s in &services {
            let name = s.name.parts().1.as_bytes();
            match shared.iter_mut().find(|e| e.0 == s.server) {
                Some(e) => {
                    let n = e.1.iter().zip(name).take_while(|(a, b)| a == b).count();
                    e.1 = &e.1[..n];
                }
                None => shared.push((s.server, name)),
            }
        }
        let mut want: Vec<(u16, &[u8])> = Vec::new();
        for (server, held) in shared {
            let cut = held.iter().rposition(|&c| c == b'/').map_or(0, |i| i + 1);
            if cut > 0 && cut <= HEAD_MAX {
                want.push((server, &held[..cut]));
            }
        }
        let heads = Heads::of(&services);
        let got: Vec<(u16, &[u8])> = heads
            .of_server
            .iter()
            .map(|&(server, k)| (server, heads.list[usize::from(k)].as_bytes()))
            .collect();
        assert_eq!(got, want, "{count} services");
        assert_eq!(heads.list.last(), Some(&""));
        for s in &services {
            let (k, len) = heads.choose(s);
            assert!(s
                .name
                .starts_with(&heads.list[usize::from(k)].as_bytes()[..len]));
        }
    }
}
