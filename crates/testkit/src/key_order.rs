//! Writing an edited review with its keys where the original bytes had them. serde_json's
//! `Value` keeps an object's keys sorted, so a review parsed, edited and written back has
//! `request.object` before `operation` and `uid`; the API server writes them in its Go
//! structs' order (the request's head, then the object; a pod's metadata before its spec).
//! A webhook that reads a body in order sees the difference (`prescan.rs` stops early only
//! once the head is known), so bodies built from a fixture keep the fixture's order.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::Value;

/// The order of every object's keys in a JSON document (arrays: per item).
#[derive(Debug, Default)]
pub struct KeyOrder {
    keys: Vec<(String, KeyOrder)>,
    items: Vec<KeyOrder>,
}

impl KeyOrder {
    /// The key order of `json`.
    pub fn of(json: &[u8]) -> serde_json::Result<Self> {
        serde_json::from_slice(json)
    }

    /// `value` as JSON, each object's keys in the order this one had them at the same
    /// path (an array item beyond the original's follows the original's first item); keys
    /// the original did not have come after, sorted.
    pub fn write(&self, value: &Value) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(&InOrder(value, Some(self)))
    }
}

impl<'de> Deserialize<'de> for KeyOrder {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyOrder;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("JSON")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeyOrder, A::Error> {
                let mut keys = Vec::new();
                while let Some(k) = map.next_key::<String>()? {
                    keys.push((k, map.next_value()?));
                }
                Ok(KeyOrder {
                    keys,
                    items: Vec::new(),
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<KeyOrder, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(KeyOrder {
                    keys: Vec::new(),
                    items,
                })
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<KeyOrder, E> {
                Ok(KeyOrder::default())
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<KeyOrder, E> {
                Ok(KeyOrder::default())
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<KeyOrder, E> {
                Ok(KeyOrder::default())
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<KeyOrder, E> {
                Ok(KeyOrder::default())
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<KeyOrder, E> {
                Ok(KeyOrder::default())
            }
            fn visit_unit<E: de::Error>(self) -> Result<KeyOrder, E> {
                Ok(KeyOrder::default())
            }
            fn visit_none<E: de::Error>(self) -> Result<KeyOrder, E> {
                Ok(KeyOrder::default())
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<KeyOrder, D::Error> {
                d.deserialize_any(V)
            }
        }
        d.deserialize_any(V)
    }
}

struct InOrder<'a>(&'a Value, Option<&'a KeyOrder>);

impl Serialize for InOrder<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(map) => {
                let known = self.1.map_or(&[][..], |o| &o.keys[..]);
                let mut out = s.serialize_map(Some(map.len()))?;
                for (k, order) in known {
                    if let Some(v) = map.get(k) {
                        out.serialize_entry(k, &InOrder(v, Some(order)))?;
                    }
                }
                for (k, v) in map {
                    if !known.iter().any(|(key, _)| key == k) {
                        out.serialize_entry(k, &InOrder(v, None))?;
                    }
                }
                out.end()
            }
            Value::Array(items) => {
                let known = self.1.map_or(&[][..], |o| &o.items[..]);
                let mut out = s.serialize_seq(Some(items.len()))?;
                for (i, v) in items.iter().enumerate() {
                    out.serialize_element(&InOrder(v, known.get(i).or(known.first())))?;
                }
                out.end()
            }
            other => other.serialize(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_edited_document_keeps_the_original_key_order_and_its_value() {
        let original = br#"{"z":1,"a":{"y":[{"q":1,"p":2}],"b":2},"m":null}"#;
        let order = KeyOrder::of(original).unwrap_or_default();
        let mut v: Value = serde_json::from_slice(original).unwrap_or_default();
        if let Some(l) = v["a"]["y"].as_array_mut() {
            l.push(json!({"p": 3, "q": 4, "new": 5}));
        }
        v["c"] = json!(true);
        let out = order.write(&v).unwrap_or_default();
        assert_eq!(
            String::from_utf8_lossy(&out),
            r#"{"z":1,"a":{"y":[{"q":1,"p":2},{"q":4,"p":3,"new":5}],"b":2},"m":null,"c":true}"#
        );
        assert_eq!(serde_json::from_slice::<Value>(&out).ok(), Some(v));
    }
}
