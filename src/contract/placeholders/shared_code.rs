//! Shared code (the original's `SharedCodeResolver`): snippets of `keboola.shared-code`
//! rows replace `{{ rowId }}` placeholders, and only in lists of scalars, where the item
//! holding one becomes the snippet's items.
//!
//! Everything else stays as it is: a placeholder in a plain string value, an item of a
//! list that also holds an object, array or null, or a placeholder naming no loaded
//! snippet (which variables may still replace later).

use serde_json::Value;

/// The snippets loaded, by row id, in the order the configuration names them.
pub type Snippets = Vec<(String, Vec<Value>)>;

/// Replaces the placeholders of `snippets` in every list of scalars under `config`.
pub fn replace(config: &mut Value, snippets: &Snippets) {
    let children: Box<dyn Iterator<Item = &mut Value>> = match config {
        Value::Object(map) => Box::new(map.values_mut()),
        Value::Array(list) => Box::new(list.iter_mut()),
        _ => return,
    };
    for child in children {
        match child {
            Value::Array(list) if list.iter().all(is_scalar) => {
                *list = replace_in_list(std::mem::take(list), snippets);
            }
            Value::Array(_) | Value::Object(_) => replace(child, snippets),
            _ => {}
        }
    }
}

/// PHP's `is_scalar`: null is not one.
fn is_scalar(v: &Value) -> bool {
    matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_))
}

fn replace_in_list(list: Vec<Value>, snippets: &Snippets) -> Vec<Value> {
    let mut out = Vec::with_capacity(list.len());
    for item in list {
        let named = names_in(&php_string(&item));
        // In the order of the snippets, each once however often the item names it.
        let mut matched = (snippets.iter())
            .filter(|(id, _)| named.iter().any(|n| n == id))
            .peekable();
        if matched.peek().is_none() {
            out.push(item);
            continue;
        }
        for (_, code) in matched {
            out.extend(code.iter().cloned());
        }
    }
    out
}

/// A scalar as PHP's string conversion writes it.
fn php_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "1".to_owned(),
        Value::Bool(false) | Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The names of `{{name}}` placeholders in `text`, trimmed: what the original's
/// `/{{([ a-zA-Z0-9_-]+)}}/` finds, left to right, without overlaps.
fn names_in(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let in_name = |b: u8| b == b' ' || b == b'_' || b == b'-' || b.is_ascii_alphanumeric();
    let mut names = Vec::new();
    let mut at = 0;
    while at + 1 < bytes.len() {
        if !bytes[at..].starts_with(b"{{") {
            at += 1;
            continue;
        }
        let start = at + 2;
        let len = bytes[start..].iter().take_while(|b| in_name(**b)).count();
        let end = start + len;
        if len > 0 && bytes[end..].starts_with(b"}}") {
            names.push(text[start..end].trim_matches(' ').to_owned());
            at = end + 2;
        } else {
            at += 1;
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn snippets() -> Snippets {
        vec![
            (
                "first".to_owned(),
                vec![json!("SELECT 1;"), json!("SELECT 2;")],
            ),
            ("second".to_owned(), vec![json!("SELECT 3;")]),
        ]
    }

    #[test]
    fn an_item_naming_snippets_becomes_their_items_in_snippet_order() {
        let mut c = json!({"parameters": {
            "blocks": [{"codes": [{"script": [
                "CREATE TABLE x;", "{{ first }}", "pre {{second}} {{first}} post", "{{ none }}"
            ]}]}],
            "plain": "{{ first }}",
            "with_null": ["{{ first }}", null],
            "numbers": [1, true, "{{second}}"]
        }});
        replace(&mut c, &snippets());
        assert_eq!(
            c,
            json!({"parameters": {
                "blocks": [{"codes": [{"script": [
                    "CREATE TABLE x;", "SELECT 1;", "SELECT 2;",
                    "SELECT 1;", "SELECT 2;", "SELECT 3;", "{{ none }}"
                ]}]}],
                "plain": "{{ first }}",
                "with_null": ["{{ first }}", null],
                "numbers": [1, true, "SELECT 3;"]
            }})
        );
    }

    #[test]
    fn names_are_found_as_the_original_pattern_finds_them() {
        assert_eq!(names_in("{{a}}{{ b-c_1 }}{{{d}}"), vec!["a", "b-c_1", "d"]);
        assert!(names_in("{{ a.b }} {{}} {{ é }} {{a").is_empty());
        assert_eq!(names_in("{{  }}"), vec![""]);
    }
}
