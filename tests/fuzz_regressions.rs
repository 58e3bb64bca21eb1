//! Regression tests for what fuzzing (fuzz/, see fuzz/README.md) found or
//! pointed at. Each input is inline; the invariant is the fuzz target's.

use ckv::config::parse_with_warnings;

/// A long token pasted into a field whose value is quoted in an error
/// message: the message cuts the value to 60 characters, so the whole token
/// never appears in it and the scrubber (which looks for the whole token)
/// leaves the first 57 characters of the token in the error text.
#[test]
fn config_error_does_not_show_a_truncated_long_token() {
    let token = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789";
    for field in ["on_empty_prefix", "prefix", "servers"] {
        let value = if field == "servers" {
            serde_json::json!([token])
        } else if field == "prefix" {
            serde_json::json!(format!("{token}//x"))
        } else {
            serde_json::json!(token)
        };
        let doc = serde_json::json!({
            "servers": ["http://127.0.0.1:8500"],
            "token": token,
        });
        let mut doc = doc.as_object().unwrap().clone();
        doc.insert(field.into(), value.clone());
        let json = serde_json::to_vec(&doc).unwrap();
        // Every case is a bad value: if one is accepted, the test no longer
        // looks at an error message and would pass without checking anything.
        let text = match parse_with_warnings(&json) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("field {field}: the bad value {value} was accepted"),
        };
        assert!(
            !text.contains(&token[..16]),
            "field {field}: the first 16 characters of the token are in {text:?}"
        );
    }
}

/// A token holding a character that JSON escapes (here `"`) is shown escaped
/// in an error message quoting it, so the scrubber does not find it.
#[test]
fn config_error_does_not_show_an_escaped_token() {
    let token = r#"abc"def-secret"#;
    let json = serde_json::to_vec(&serde_json::json!({
        "servers": ["http://127.0.0.1:8500"],
        "token": token,
        "on_empty_prefix": token,
    }))
    .unwrap();
    let e = parse_with_warnings(&json).expect_err("bad on_empty_prefix");
    let text = e.to_string();
    assert!(
        !text.contains(r#"abc\"def-secret"#),
        "escaped token in {text:?}"
    );
    assert!(!text.contains(token), "token in {text:?}");
}
