//! bytes → shared::codec::decode; encode(decode(x)) round trips.
//!
//! Invariants: no panic; decode(encode(s)) == s, with and without `s` as the
//! previous snapshot; decoding x against its own decode gives the same value;
//! with at most one service, encode(decode(x)) == x up to unknown flag bits.
//! (encode(decode(x)) == x byte for byte does not hold in general: services
//! are in a HashMap, so their order is not kept, and a duplicated name keeps
//! the last copy.)
#![no_main]

use ckv::shared::codec::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = decode(data, None) else {
        return;
    };
    let bytes = encode(&s);
    let again = decode(&bytes, None).expect("encode(decode(x)) does not decode");
    assert_eq!(again, s);
    assert_eq!(decode(&bytes, Some(&s)).expect("decode with previous"), s);
    assert_eq!(decode(data, Some(&s)).expect("decode x with previous"), s);
    assert_eq!(encode(&again).len(), bytes.len());
    if data.starts_with(b"CKVSNAP3") {
        // A current file is served as it is: its bytes come back unchanged
        // (whatever hash seed it was written with).
        assert_eq!(bytes, data);
    }
});
