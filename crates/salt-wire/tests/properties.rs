//! Property tests ("fuzzing" on the stable toolchain, with proptest) for every parser that
//! reads bytes Brine does not control: msgpack frames and values from the master, ZMTP frames,
//! event-bus bodies, and Salt YAML (request bodies and config files). Each runs 256 cases in
//! `cargo test`; `scripts/fuzz` runs them for as long as it is given, with fresh inputs each
//! round.

use bytes::BytesMut;
use proptest::prelude::*;
use salt_wire::framing::{decode_value, msgpack_len, MAX_DEPTH};
use salt_wire::yaml::{self, Limits};

/// Arbitrary msgpack values of bounded size.
fn mp_value() -> impl Strategy<Value = rmpv::Value> {
    let leaf = prop_oneof![
        Just(rmpv::Value::Nil),
        any::<bool>().prop_map(rmpv::Value::from),
        any::<i64>().prop_map(rmpv::Value::from),
        any::<u64>().prop_map(rmpv::Value::from),
        any::<f64>()
            .prop_filter("NaN != NaN", |f| !f.is_nan())
            .prop_map(rmpv::Value::from),
        ".{0,40}".prop_map(rmpv::Value::from),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(rmpv::Value::Binary),
    ];
    leaf.prop_recursive(6, 200, 12, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..12).prop_map(rmpv::Value::Array),
            proptest::collection::vec((".{0,10}".prop_map(rmpv::Value::from), inner), 0..12)
                .prop_map(rmpv::Value::Map),
        ]
    })
}

fn encode(v: &rmpv::Value) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = rmpv::encode::write_value(&mut out, v);
    out
}

proptest! {
    /// The length scanner finds exactly the end of any encoded value, and says "incomplete"
    /// for every proper prefix.
    #[test]
    fn msgpack_len_finds_the_end_of_any_value(v in mp_value(), cut in any::<prop::sample::Index>()) {
        let bytes = encode(&v);
        prop_assert_eq!(msgpack_len(&bytes, MAX_DEPTH).ok(), Some(Some(bytes.len())));
        let k = cut.index(bytes.len());
        prop_assert_eq!(msgpack_len(&bytes[..k], MAX_DEPTH).ok(), Some(None));
        prop_assert_eq!(decode_value(&bytes).ok(), Some(v));
    }

    /// Arbitrary bytes: an answer, never a panic, and never a length past the input.
    #[test]
    fn msgpack_len_and_decode_survive_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(Some(n)) = msgpack_len(&bytes, MAX_DEPTH) {
            prop_assert!(n <= bytes.len());
        }
        let _ = decode_value(&bytes);
    }

    /// Deeply nested input is refused by depth, without recursion.
    #[test]
    fn msgpack_nesting_is_bounded(depth in 300usize..5000) {
        let bytes = vec![0x91u8; depth];
        prop_assert!(msgpack_len(&bytes, MAX_DEPTH).is_err());
    }

    /// ZMTP frames: any bytes give a frame, "need more" or an error.
    #[test]
    fn zmtp_frames_survive_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut buf = BytesMut::from(&bytes[..]);
        for _ in 0..64 {
            match salt_wire::zmtp::take_frame(&mut buf) {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }

    /// Event bodies (`tag\n\n` + msgpack) from the bus: any bytes, no panic.
    #[test]
    fn event_bodies_survive_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let _ = salt_wire::event::split_body(&bytes);
    }

    /// Salt YAML on arbitrary text: a value or an error, within the limits.
    #[test]
    fn yaml_survives_any_text(text in "(?s).{0,400}") {
        let limits = Limits { max_depth: 16, max_nodes: 5_000 };
        if let Ok(Some(v)) = yaml::load(&text, limits) {
            prop_assert!(depth(&v) <= 16);
        }
    }

    /// YAML built from YAML-ish fragments (anchors, aliases, flow and block collections).
    #[test]
    fn yaml_survives_yamlish_text(parts in proptest::collection::vec(prop_oneof![
        Just("- "), Just(": "), Just("\n"), Just("  "), Just("&a "), Just("*a"), Just("[*a, *a]"),
        Just("{"), Just("}"), Just("["), Just("]"), Just(", "), Just("<<: *a"), Just("!!binary "),
        Just("yes"), Just("0644"), Just("12:30"), Just("~"), Just("'q'"), Just("\"d\\n\""),
        Just("key"), Just("? "), Just("|\n  x"), Just("--- "), Just("#c"),
    ], 0..60)) {
        let text: String = parts.concat();
        let limits = Limits { max_depth: 16, max_nodes: 5_000 };
        if let Ok(Some(v)) = yaml::load(&text, limits) {
            prop_assert!(depth(&v) <= 16);
            prop_assert!(count(&v) <= 5_000);
        }
    }
}

fn depth(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn count(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => 1 + a.iter().map(count).sum::<usize>(),
        serde_json::Value::Object(m) => 1 + m.values().map(count).sum::<usize>(),
        _ => 1,
    }
}
