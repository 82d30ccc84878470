//! A configuration's stored state (contract §11): `{component, storage}` — the component's
//! own part, and berth's bookkeeping for adaptive mappings, which the component never sees.

use serde_json::{Value, json};

use crate::mapping::{InputState, StorageState};
use crate::storage::StateKey;

/// Splits a stored state into the component's part (`{}` when there is none) and berth's.
pub fn split(stored: Option<Value>) -> (Value, StorageState) {
    let Some(Value::Object(mut map)) = stored else {
        return (json!({}), StorageState::default());
    };
    let component = match map.remove("component") {
        Some(v @ Value::Object(_)) => v,
        Some(Value::Array(a)) if a.is_empty() => json!({}),
        Some(other) if !other.is_null() => other,
        _ => json!({}),
    };
    let storage = map
        .remove("storage")
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    (component, storage)
}

/// The state to save after a successful row, or `None` when it did not change (an
/// unchanged state needs no write, and no fsync on the job's way out).
pub fn next(
    key: StateKey,
    previous: Option<&Value>,
    component: Option<Value>,
    input: InputState,
) -> Option<(StateKey, Option<Value>)> {
    let value = json!({
        "component": component.unwrap_or_else(|| json!({})),
        "storage": StorageState { input },
    });
    (previous != Some(&value)).then_some((key, Some(value)))
}

/// A stored state with its component part replaced (by its decrypted form, so that a state
/// whose secrets did not change is not written again under fresh ciphertexts).
pub fn with_component(mut stored: Value, component: &Value) -> Value {
    if let Some(c) = stored.get_mut("component") {
        *c = component.clone();
    }
    stored
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_states_split_into_the_two_parts() {
        let (c, s) = split(None);
        assert_eq!((c, s), (json!({}), StorageState::default()));
        let (c, _) = split(Some(json!({"component": {"cursor": 5}, "storage": {}})));
        assert_eq!(c, json!({"cursor": 5}));
        let (c, _) = split(Some(json!({"component": []})));
        assert_eq!(c, json!({}));
    }

    #[test]
    fn an_unchanged_state_is_not_written_again() {
        let key = StateKey {
            component: "a".into(),
            config: "1".into(),
            row: None,
        };
        let first = next(
            key.clone(),
            None,
            Some(json!({"x": 1})),
            InputState::default(),
        );
        let (_, stored) = first.clone().unwrap();
        let again = next(
            key,
            stored.as_ref(),
            Some(json!({"x": 1})),
            InputState::default(),
        );
        assert!(first.is_some());
        assert!(again.is_none());
    }
}
