/// An attribute or log body value (the OTLP `AnyValue`).
#[derive(Clone, Debug, PartialEq, Default)]
pub enum AnyValue {
    /// No value was set.
    #[default]
    Empty,
    String(String),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(Vec<u8>),
    Array(Vec<AnyValue>),
    Map(Vec<(String, AnyValue)>),
}

/// Attributes in the order they were received. Keys are unique after ingest
/// (the last value of a duplicated key wins).
pub type Attributes = Vec<(String, AnyValue)>;

/// Looks up an attribute by key.
pub fn attr<'a>(attrs: &'a Attributes, key: &str) -> Option<&'a AnyValue> {
    attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

impl AnyValue {
    /// Nesting depth: scalars are 0, an array or map of scalars is 1.
    pub fn depth(&self) -> usize {
        match self {
            AnyValue::Array(items) => 1 + items.iter().map(AnyValue::depth).max().unwrap_or(0),
            AnyValue::Map(items) => 1 + items.iter().map(|(_, v)| v.depth()).max().unwrap_or(0),
            _ => 0,
        }
    }

    /// Approximate size in bytes of the value's content.
    pub fn size_bytes(&self) -> usize {
        match self {
            AnyValue::Empty | AnyValue::Bool(_) => 1,
            AnyValue::Int(_) | AnyValue::Double(_) => 8,
            AnyValue::String(s) => s.len(),
            AnyValue::Bytes(b) => b.len(),
            AnyValue::Array(items) => items.iter().map(AnyValue::size_bytes).sum(),
            AnyValue::Map(items) => items.iter().map(|(k, v)| k.len() + v.size_bytes()).sum(),
        }
    }

    /// A human-readable rendering: strings as-is, others as JSON-like text.
    pub fn to_text(&self) -> String {
        match self {
            AnyValue::String(s) => s.clone(),
            other => other.to_json().to_string(),
        }
    }

    /// JSON form used by the query APIs: bytes as base16, maps as objects.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            AnyValue::Empty => Value::Null,
            AnyValue::String(s) => Value::String(s.clone()),
            AnyValue::Bool(b) => Value::Bool(*b),
            AnyValue::Int(i) => Value::from(*i),
            AnyValue::Double(d) => serde_json::Number::from_f64(*d)
                .map(Value::Number)
                .unwrap_or_else(|| Value::String(d.to_string())),
            AnyValue::Bytes(b) => Value::String(hex::encode(b)),
            AnyValue::Array(items) => Value::Array(items.iter().map(AnyValue::to_json).collect()),
            AnyValue::Map(items) => Value::Object(
                items
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// Attributes as a JSON object.
pub fn attributes_json(attrs: &Attributes) -> serde_json::Value {
    serde_json::Value::Object(
        attrs
            .iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_and_json() {
        let v = AnyValue::Map(vec![(
            "a".into(),
            AnyValue::Array(vec![AnyValue::Int(1), AnyValue::Double(f64::NAN)]),
        )]);
        assert_eq!(v.depth(), 2);
        assert_eq!(v.to_json(), serde_json::json!({"a": [1, "NaN"]}));
        assert_eq!(AnyValue::String("x".into()).to_text(), "x");
    }
}
