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
    if let Some(format) = branch.get("format").and_then(Value::as_str) {
        check_format(name, value, format)?;
    }
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

/// The range an integer `format` (as schemars writes them for Rust integer types) implies:
/// a value outside it would fail deserialisation without naming the argument.
fn check_format(name: &str, value: &Value, format: &str) -> Result<(), String> {
    let (min, max): (i128, i128) = match format {
        "int8" => (i8::MIN.into(), i8::MAX.into()),
        "int16" => (i16::MIN.into(), i16::MAX.into()),
        "int32" => (i32::MIN.into(), i32::MAX.into()),
        "int64" | "int" => (i64::MIN.into(), i64::MAX.into()),
        "uint8" => (0, u8::MAX.into()),
        "uint16" => (0, u16::MAX.into()),
        "uint32" => (0, u32::MAX.into()),
        "uint64" | "uint" => (0, u64::MAX.into()),
        // Any JSON number fits an f64 or f32 well enough; the type check already ran.
        "double" | "float" => return Ok(()),
        other => {
            return Err(format!(
                "invalid argument `{name}`: the schema's format {other:?} is not supported"
            ));
        }
    };
    let n = value
        .as_i64()
        .map(i128::from)
        .or_else(|| value.as_u64().map(i128::from));
    match n {
        Some(n) if (min..=max).contains(&n) => Ok(()),
        _ => Err(format!(
            "invalid argument `{name}`: must be an integer from {min} to {max}, got {value}"
        )),
    }
}

/// Whether the schema forbids properties it does not list (`false`, or schemars' `{"not": {}}`).
fn closed(schema: &Map<String, Value>) -> bool {
    match schema.get("additionalProperties") {
        Some(Value::Bool(false)) => true,
        Some(Value::Object(o)) => o.len() == 1 && o.get("not") == Some(&Value::Object(Map::new())),
        _ => false,
    }
}

/// Checks `args` against an object schema: required properties present, known properties of the
/// right type and range. Unknown properties are left alone, as the original server did, unless
/// the schema is closed (`additionalProperties`: the local tools).
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
        match properties.get(name) {
            Some(property) => check_property(name, value, property)?,
            None if closed(schema) => {
                let mut known: Vec<&str> = properties.keys().map(String::as_str).collect();
                known.sort_unstable();
                return Err(format!(
                    "unknown argument `{name}` (this tool takes: {})",
                    if known.is_empty() {
                        "no arguments".to_string()
                    } else {
                        known.join(", ")
                    }
                ));
            }
            None => {}
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

    #[test]
    fn integer_formats_and_closed_schemas_are_enforced_by_name() {
        let closed = json!({
            "type": "object",
            "additionalProperties": {"not": {}},
            "properties": {
                "n": {"anyOf": [{"type": "integer", "format": "uint32", "minimum": 0}, {"type": "null"}]},
                "x": {"type": "number", "format": "double"},
            }
        });
        let closed = closed.as_object().unwrap();
        assert!(check(&args(json!({"n": 4294967295u64, "x": 1.5})), closed).is_ok());
        let e = check(&args(json!({"n": 4294967296u64})), closed).unwrap_err();
        assert!(
            e.contains("`n`") && e.contains("from 0 to 4294967295"),
            "{e}"
        );
        let e = check(&args(json!({"durration": 3})), closed).unwrap_err();
        assert_eq!(e, "unknown argument `durration` (this tool takes: n, x)");
        // An open schema (the cloud tools, as the original server) ignores unknown arguments.
        assert!(check(&args(json!({"uid": "1", "days": 3, "zzz": 1})), &schema()).is_ok());
    }

    /// Keywords `check` enforces, and keywords that only describe (nothing to enforce).
    const ENFORCED: &[&str] = &[
        "type",
        "anyOf",
        "minimum",
        "maximum",
        "required",
        "properties",
        "format",
        "additionalProperties",
    ];
    const ANNOTATIONS: &[&str] = &["description", "title", "default", "examples", "$schema"];

    fn unknown_keywords(schema: &Value, at: &str, found: &mut Vec<String>) {
        let Some(obj) = schema.as_object() else {
            return;
        };
        for (key, value) in obj {
            if !ENFORCED.contains(&key.as_str()) && !ANNOTATIONS.contains(&key.as_str()) {
                found.push(format!("{at}: {key}"));
            }
            match key.as_str() {
                "properties" => {
                    for (name, sub) in value.as_object().into_iter().flatten() {
                        unknown_keywords(sub, &format!("{at}.{name}"), found);
                    }
                }
                "anyOf" => {
                    for (i, sub) in value.as_array().into_iter().flatten().enumerate() {
                        unknown_keywords(sub, &format!("{at}.anyOf[{i}]"), found);
                    }
                }
                _ => {}
            }
        }
    }

    /// A schema keyword the validator does not understand would be silently unenforced (an
    /// `enum`, a `maxLength`, a `pattern`...): every tool's schema may use only known ones.
    #[test]
    fn every_tool_schema_uses_only_keywords_the_validator_understands() {
        let mut found = Vec::new();
        let tools = crate::tools::all_tools();
        assert!(tools.len() >= 21 + 11, "{} tools", tools.len());
        for def in &tools {
            let schema = Value::Object((*def.tool.input_schema).clone());
            unknown_keywords(&schema, &def.tool.name, &mut found);
        }
        assert!(found.is_empty(), "unenforced schema keywords: {found:#?}");
    }
}
