//! Normalises the JSON Schemas schemars generates into the shape every MCP client accepts.
//!
//! schemars writes `true` for a `serde_json::Value` field and `"type": ["string", "null"]` for an
//! `Option`. Both are valid JSON Schema, but the TypeScript SDK (≥ 1.22, behind Claude Code,
//! Cursor, VS Code and the Inspector) rejects a boolean schema with a ZodError and lists no tools,
//! and several clients and model providers reject or warn about type arrays. So every schema goes
//! out with object schemas only and optional values as `anyOf: [{...}, {"type": "null"}]`, the
//! shape the original (pydantic) server's schemas had.

use std::sync::Arc;

use schemars::{
    Schema,
    transform::{RecursiveTransform, ReplaceBoolSchemas, Transform},
};
use serde_json::{Map, Value};

type JsonObject = Map<String, Value>;

/// Keywords that describe the value as a whole and so stay beside the `anyOf`, not inside a branch.
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
];

/// Rewrites `{"type": [T, "null"], ...}` as `{"anyOf": [{"type": T, ...}, {"type": "null"}]}`,
/// keeping annotations at the top. A type array without `null` becomes one branch per type.
fn type_array_to_any_of(schema: &mut Schema) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    if !obj.get("type").is_some_and(Value::is_array) {
        return;
    }
    let Some(Value::Array(types)) = obj.remove("type") else {
        return;
    };
    let (annotations, constraints): (JsonObject, JsonObject) = std::mem::take(obj)
        .into_iter()
        .partition(|(k, _)| ANNOTATIONS.contains(&k.as_str()));
    let branches = types
        .into_iter()
        .map(|t| {
            let mut branch = JsonObject::new();
            // Constraints (format, minimum, items...) belong to the non-null branch only.
            if t != "null" {
                branch.extend(constraints.clone());
            }
            branch.insert("type".into(), t);
            Value::Object(branch)
        })
        .collect();
    *obj = annotations;
    obj.insert("anyOf".into(), Value::Array(branches));
}

/// The schema with boolean subschemas replaced by their object equivalents (`true` → `{}`) and
/// type arrays rewritten as `anyOf`, at every depth.
pub fn normalise(schema: &JsonObject) -> Arc<JsonObject> {
    let mut schema = Schema::from(schema.clone());
    ReplaceBoolSchemas::default().transform(&mut schema);
    RecursiveTransform(type_array_to_any_of).transform(&mut schema);
    match schema.to_value() {
        Value::Object(obj) => Arc::new(obj),
        // A schema built from an object stays an object through both transforms.
        _ => unreachable!("an object schema stays an object"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every place a schema is rejected by some client: a boolean where a schema belongs, or a
    /// `type` array. Walks all keywords that hold subschemas.
    fn defects(schema: &Value, path: &str, found: &mut Vec<String>) {
        let Value::Object(obj) = schema else {
            found.push(format!("{path}: boolean/non-object schema {schema}"));
            return;
        };
        if let Some(Value::Array(_)) = obj.get("type") {
            found.push(format!("{path}: type array {}", obj["type"]));
        }
        for (key, value) in obj {
            let here = format!("{path}/{key}");
            match key.as_str() {
                "not"
                | "if"
                | "then"
                | "else"
                | "contains"
                | "additionalProperties"
                | "propertyNames"
                | "unevaluatedProperties"
                | "unevaluatedItems"
                | "items"
                | "additionalItems" => match value {
                    Value::Array(items) => items
                        .iter()
                        .enumerate()
                        .for_each(|(i, s)| defects(s, &format!("{here}/{i}"), found)),
                    s => defects(s, &here, found),
                },
                "allOf" | "anyOf" | "oneOf" | "prefixItems" => {
                    for (i, s) in value.as_array().into_iter().flatten().enumerate() {
                        defects(s, &format!("{here}/{i}"), found);
                    }
                }
                "properties" | "patternProperties" | "$defs" | "definitions"
                | "dependentSchemas" => {
                    for (name, s) in value.as_object().into_iter().flatten() {
                        defects(s, &format!("{here}/{name}"), found);
                    }
                }
                _ => {}
            }
        }
    }

    #[test]
    fn every_tool_schema_has_object_schemas_only_and_no_type_arrays() {
        let mut found = Vec::new();
        for def in super::super::all_tools() {
            let name = def.tool.name.to_string();
            assert_eq!(
                def.tool.input_schema.get("type"),
                Some(&"object".into()),
                "{name}"
            );
            defects(
                &Value::Object((*def.tool.input_schema).clone()),
                &format!("{name}.inputSchema"),
                &mut found,
            );
            let output = def.tool.output_schema.clone().expect("output schema");
            defects(
                &Value::Object((*output).clone()),
                &format!("{name}.outputSchema"),
                &mut found,
            );
        }
        assert!(found.is_empty(), "schema defects:\n{}", found.join("\n"));
    }

    #[test]
    fn normalise_rewrites_only_what_clients_reject() {
        let input = serde_json::json!({"type": "object", "required": ["a"], "properties": {
            "a": {"type": "string", "description": "kept"},
            "b": {"type": ["integer", "null"], "format": "int64", "minimum": 1, "default": null,
                  "description": "optional"},
            "c": true,
            "d": {"type": "object", "additionalProperties": true},
        }});
        let out = normalise(input.as_object().unwrap());
        assert_eq!(
            Value::Object((*out).clone()),
            serde_json::json!({"type": "object", "required": ["a"], "properties": {
                "a": {"type": "string", "description": "kept"},
                "b": {"anyOf": [{"type": "integer", "format": "int64", "minimum": 1}, {"type": "null"}],
                      "default": null, "description": "optional"},
                "c": {},
                "d": {"type": "object", "additionalProperties": {}},
            }})
        );
    }

    #[test]
    fn the_walker_finds_nested_defects() {
        let mut found = Vec::new();
        let bad = serde_json::json!({"type": "object", "properties": {
            "a": true,
            "b": {"type": ["string", "null"]},
            "c": {"type": "array", "items": {"anyOf": [{"type": "object", "additionalProperties": true}]}}
        }});
        defects(&bad, "t", &mut found);
        assert_eq!(found.len(), 3, "{found:?}");
    }
}
