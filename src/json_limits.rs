//! What one incoming JSON-RPC message may cost to parse.
//!
//! A 4 MiB body of `[0,0,0,…]` is two million values; as a `serde_json::Value` (and the copies
//! rmcp makes of it) that is over 600 MB, which kills the service under `MemoryMax=256M`. So
//! every body is first walked by [`check`], which counts values and nesting depth without
//! building anything (serde visitors over `IgnoredAny`), and refused past [`Limits`]. Only then
//! is it parsed for real. No crate offers a counting pass like this; it is small.

use std::cell::Cell;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Bounds for one message. An MCP client message (a tool call, a notification) has a few
/// dozen values; the defaults leave two orders of magnitude of room.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_depth: usize,
    pub max_values: usize,
}

pub const MESSAGE_LIMITS: Limits = Limits {
    max_depth: 64,
    max_values: 10_000,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("JSON nested deeper than {0} levels")]
    TooDeep(usize),
    #[error("JSON with more than {0} values")]
    TooManyValues(usize),
    #[error("{0}")]
    Syntax(String),
}

/// Walks `bytes` as one JSON value and refuses it if it breaks `limits` or is not JSON.
pub fn check(bytes: &[u8], limits: &Limits) -> Result<(), LimitError> {
    let walk = Walk {
        limits,
        values: Cell::new(0),
        exceeded: Cell::new(None),
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let result = Node {
        walk: &walk,
        depth: 0,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    match (walk.exceeded.take(), result) {
        (Some(limit), _) => Err(limit),
        (None, Err(e)) => Err(LimitError::Syntax(e.to_string())),
        (None, Ok(())) => Ok(()),
    }
}

struct Walk<'a> {
    limits: &'a Limits,
    values: Cell<usize>,
    exceeded: Cell<Option<LimitError>>,
}

impl Walk<'_> {
    /// Counts one value; the error stops the walk (its cause is kept in `exceeded`).
    fn count<E: de::Error>(&self, depth: usize) -> Result<(), E> {
        let n = self.values.get() + 1;
        self.values.set(n);
        let exceeded = if n > self.limits.max_values {
            Some(LimitError::TooManyValues(self.limits.max_values))
        } else if depth > self.limits.max_depth {
            Some(LimitError::TooDeep(self.limits.max_depth))
        } else {
            None
        };
        match exceeded {
            Some(e) => {
                let text = e.to_string();
                self.exceeded.set(Some(e));
                Err(E::custom(text))
            }
            None => Ok(()),
        }
    }
}

/// One value at `depth`.
struct Node<'w, 'a> {
    walk: &'w Walk<'a>,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Node<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.walk.count(self.depth)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.walk.count(self.depth)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.walk.count(self.depth)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.walk.count(self.depth)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.walk.count(self.depth)
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.walk.count(self.depth)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.walk.count(self.depth)?;
        while seq
            .next_element_seed(Node {
                walk: self.walk,
                depth: self.depth + 1,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.walk.count(self.depth)?;
        while map.next_key::<IgnoredAny>()?.is_some() {
            // A key costs about as much as a value (an entry in the object's map).
            self.walk.count(self.depth + 1)?;
            map.next_value_seed(Node {
                walk: self.walk,
                depth: self.depth + 1,
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: Limits = Limits {
        max_depth: 3,
        max_values: 10,
    };

    #[test]
    fn ordinary_messages_pass() {
        let msg = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"uid":"1","n":[1,2.5,true,null]}}}"#;
        assert_eq!(check(msg, &MESSAGE_LIMITS), Ok(()));
    }

    #[test]
    fn too_many_values_are_refused() {
        let body = format!("[{}0]", "0,".repeat(10));
        assert_eq!(
            check(body.as_bytes(), &SMALL),
            Err(LimitError::TooManyValues(10))
        );
        let objects = format!("[{}{{}}]", "{},".repeat(20));
        assert_eq!(
            check(objects.as_bytes(), &SMALL),
            Err(LimitError::TooManyValues(10))
        );
    }

    #[test]
    fn the_issue_body_is_refused_with_default_limits() {
        let mut body = String::from(r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":["#);
        body.push_str(&"0,".repeat(2_000_000));
        body.push_str("0]}}");
        assert_eq!(
            check(body.as_bytes(), &MESSAGE_LIMITS),
            Err(LimitError::TooManyValues(MESSAGE_LIMITS.max_values))
        );
    }

    #[test]
    fn deep_nesting_is_refused() {
        assert_eq!(check(b"[[[0]]]", &SMALL), Ok(()));
        assert_eq!(check(b"[[[[0]]]]", &SMALL), Err(LimitError::TooDeep(3)));
        assert_eq!(
            check(br#"{"a":{"b":{"c":{"d":1}}}}"#, &SMALL),
            Err(LimitError::TooDeep(3))
        );
    }

    #[test]
    fn syntax_errors_and_trailing_data_are_syntax_errors() {
        assert!(matches!(check(b"{", &SMALL), Err(LimitError::Syntax(_))));
        assert!(matches!(
            check(b"{} {}", &SMALL),
            Err(LimitError::Syntax(_))
        ));
        assert!(matches!(check(b"", &SMALL), Err(LimitError::Syntax(_))));
    }
}
