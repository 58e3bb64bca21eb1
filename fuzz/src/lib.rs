//! Invariant checks shared by the fuzz targets.

use serde_json::Value;

/// `nodes_json` must be a JSON array of `node_count` objects, each with a
/// string `host`, an integer `port` in 1..=65535 and (when `need_weight`) an
/// integer `weight`.
pub fn check_nodes_json(name: &str, nodes_json: &str, node_count: u32, need_weight: bool) {
    let v: Value = serde_json::from_str(nodes_json).unwrap_or_else(|e| {
        panic!("service {name:?}: nodes_json does not parse ({e}): {nodes_json}")
    });
    let list = v
        .as_array()
        .unwrap_or_else(|| panic!("service {name:?}: nodes_json is not an array: {nodes_json}"));
    assert_eq!(
        list.len(),
        node_count as usize,
        "service {name:?}: node_count differs from the array length"
    );
    for n in list {
        let host = n.get("host").and_then(Value::as_str);
        assert!(
            host.is_some(),
            "service {name:?}: node without string host: {n}"
        );
        let port = n.get("port").and_then(Value::as_u64);
        assert!(
            port.is_some_and(|p| (1..=65535).contains(&p)),
            "service {name:?}: node without port 1-65535: {n}"
        );
        if need_weight {
            assert!(
                n.get("weight").is_some_and(Value::is_u64),
                "service {name:?}: node without integer weight: {n}"
            );
        }
    }
}
