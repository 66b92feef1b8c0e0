//! The Rust reducers against the shared vectors (the JS client runs the same files).

use std::path::Path;

use lean_events_core::reduce::{reduce_flow_state, reduce_trigger_state};
use serde_json::Value;

#[test]
fn reducers_match_the_shared_vectors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../vectors/reducers");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("vectors folder") {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let events = v["events"].as_array().unwrap();
        let state = match v["type"].as_str().unwrap() {
            "trigger" => reduce_trigger_state(events),
            _ => reduce_flow_state(events),
        };
        assert_eq!(state, v["state"], "{}", path.display());
        n += 1;
    }
    assert!(n >= 10, "found only {n} vectors");
}
