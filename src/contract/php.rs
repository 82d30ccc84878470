//! What Keboola's PHP writes that JSON readers trip over: an empty object comes out as
//! `[]` (PHP has one array type, and `json_encode` of an empty one is a list), so a
//! configuration exported from Keboola may say `"parameters": []` or `"column_metadata":
//! []`. Where the original reads an object, these read `[]` and `null` as empty too.
//!
//! Nested keys keep their paths in errors: the object is handed on as the map it is, not
//! re-parsed from a copy.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Unexpected, Visitor};

/// An object, or `[]`/`null` for an empty one (the type's default).
pub fn object<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: de::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(optional_object(d)?.unwrap_or_default())
}

/// An optional object: `[]` and `null` read as absent.
pub fn optional_object<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: de::Deserializer<'de>,
    T: Deserialize<'de>,
{
    d.deserialize_any(ObjectVisitor(PhantomData))
}

struct ObjectVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<T>, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Some)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<T>, A::Error> {
        if seq.next_element::<IgnoredAny>()?.is_some() {
            return Err(de::Error::invalid_type(Unexpected::Seq, &self));
        }
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::{Map, Value, json};

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[serde(default)]
        a: u32,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Outer {
        #[serde(default, deserialize_with = "super::object")]
        map: Map<String, Value>,
        #[serde(default, deserialize_with = "super::optional_object")]
        inner: Option<Inner>,
    }

    fn outer(v: Value) -> Result<Outer, String> {
        serde_path_to_error::deserialize(v).map_err(|e| format!("{}: {}", e.path(), e.inner()))
    }

    #[test]
    fn an_empty_list_or_null_is_an_empty_object_and_paths_survive() {
        let o = outer(json!({"map": [], "inner": []})).unwrap();
        assert!(o.map.is_empty());
        assert_eq!(o.inner, None);
        let o = outer(json!({"map": null, "inner": null})).unwrap();
        assert!(o.map.is_empty());
        let o = outer(json!({"map": {"x": 1}, "inner": {"a": 2}})).unwrap();
        assert_eq!(o.map["x"], 1);
        assert_eq!(o.inner, Some(Inner { a: 2 }));
        let e = outer(json!({"map": [1]})).unwrap_err();
        assert_eq!(e, "map: invalid type: sequence, expected an object");
        let e = outer(json!({"inner": {"b": 1}})).unwrap_err();
        assert!(e.starts_with("inner.b: unknown field `b`"), "{e}");
        let e = outer(json!({"map": "x"})).unwrap_err();
        assert!(e.starts_with("map: invalid type: string"), "{e}");
    }
}
