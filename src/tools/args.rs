//! Checks tool arguments against the tool's input schema before they are deserialised, so that
//! every bad argument is reported by name ("invalid argument `days`: …") whatever the shape of
//! the parameter type (serde loses the field name inside flattened structs).

use serde_json::{Map, Value};

/// The JSON Schema type name of a value.
fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(expected: &str, actual: &str) -> bool {
    expected == actual || (expected == "number" && actual == "integer")
}

/// The types a property schema allows, each with the (sub)schema that carries its constraints:
/// `{"type": T}`, `{"type": [T, ...]}` or `{"anyOf": [{"type": T, ...}, ...]}` (the shape the
/// tools' schemas are normalised to, see `schema.rs`).
fn allowed_types(schema: &Value) -> Vec<(&str, &Value)> {
    match schema.get("type") {
        Some(Value::String(t)) => return vec![(t.as_str(), schema)],
        Some(Value::Array(ts)) => {
            return ts
                .iter()
                .filter_map(Value::as_str)
                .map(|t| (t, schema))
                .collect();
        }
        _ => {}
    }
    schema
        .get("anyOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(allowed_types)
        .collect()
}

/// Checks one property value against its schema: the type and, for numbers,
/// `minimum`/`maximum` of the branch that type matched.
fn check_property(name: &str, value: &Value, schema: &Value) -> Result<(), String> {
    let allowed = allowed_types(schema);
    if allowed.is_empty() {
        return Ok(());
    }
    let actual = type_of(value);
    let Some((_, branch)) = allowed.iter().find(|(t, _)| type_matches(t, actual)) else {
        let names: Vec<&str> = allowed.iter().map(|(t, _)| *t).collect();
        return Err(format!(
            "invalid argument `{name}`: expected {}, got {actual} {value}",
            names.join(" or ")
        ));
    };
    if let Some(n) = value.as_f64() {
        if let Some(min) = branch.get("minimum").and_then(Value::as_f64)
            && n < min
        {
            return Err(format!(
                "invalid argument `{name}`: must be at least {min}, got {value}"
            ));
        }
        if let Some(max) = branch.get("maximum").and_then(Value::as_f64)
            && n > max
        {
            return Err(format!(
                "invalid argument `{name}`: must be at most {max}, got {value}"
            ));
        }
    }
    Ok(())
}

/// Checks `args` against an object schema: required properties present, known properties of the
/// right type and range. Unknown properties are left alone, as the original server did.
pub fn check(args: &Map<String, Value>, schema: &Map<String, Value>) -> Result<(), String> {
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for name in required.iter().filter_map(Value::as_str) {
            if !args.contains_key(name) {
                return Err(format!("missing required argument `{name}`"));
            }
        }
    }
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return Ok(());
    };
    for (name, value) in args {
        if let Some(property) = properties.get(name) {
            check_property(name, value, property)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Map<String, Value> {
        json!({
            "type": "object",
            "required": ["uid", "days"],
            "properties": {
                "uid": {"type": "string"},
                "pod": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "cpu": {"type": ["integer", "null"], "maximum": 8},
                "limit": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}]},
                "days": {"type": "integer", "minimum": 1, "maximum": 30},
            }
        })
        .as_object()
        .unwrap()
        .clone()
    }

    fn args(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn good_arguments_pass() {
        assert!(
            check(
                &args(json!({"uid": "1", "days": 3, "pod": null, "extra": 1})),
                &schema()
            )
            .is_ok()
        );
    }

    #[test]
    fn each_failure_names_the_argument() {
        let e = check(&args(json!({"days": 3})), &schema()).unwrap_err();
        assert_eq!(e, "missing required argument `uid`");
        let e = check(&args(json!({"uid": 5, "days": 3})), &schema()).unwrap_err();
        assert!(
            e.starts_with("invalid argument `uid`: expected string, got integer"),
            "{e}"
        );
        let e = check(&args(json!({"uid": "1", "days": 3, "pod": 7})), &schema()).unwrap_err();
        assert!(e.contains("`pod`") && e.contains("string or null"), "{e}");
        let e = check(&args(json!({"uid": "1", "days": 0})), &schema()).unwrap_err();
        assert!(e.contains("`days`") && e.contains("at least 1"), "{e}");
        let e = check(&args(json!({"uid": "1", "days": 31})), &schema()).unwrap_err();
        assert!(e.contains("`days`") && e.contains("at most 30"), "{e}");
        let e = check(&args(json!({"uid": "1", "days": 3, "cpu": 9})), &schema()).unwrap_err();
        assert!(e.contains("`cpu`") && e.contains("at most 8"), "{e}");
        let e = check(&args(json!({"uid": "1", "days": 3, "limit": 0})), &schema()).unwrap_err();
        assert!(e.contains("`limit`") && e.contains("at least 1"), "{e}");
        assert!(
            check(
                &args(json!({"uid": "1", "days": 3, "limit": null})),
                &schema()
            )
            .is_ok()
        );
        let e = check(&args(json!({"uid": "1", "days": 2.5})), &schema()).unwrap_err();
        assert!(
            e.contains("`days`") && e.contains("expected integer, got number"),
            "{e}"
        );
    }
}
