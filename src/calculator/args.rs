//! Strict validation of tool arguments against the advertised input schemas.
//!
//! Why hand-written rather than serde: every failure must name the offending argument (with its
//! path inside a batch, `calculations[0].op`) and never panic, whatever JSON arrives. The schemas
//! say `additionalProperties: false`, so unknown arguments are rejected rather than silently
//! dropped as the reference did.

use serde_json::Value;

use crate::protocol::toolset::{DomainError, JsonObject};

/// A view of one JSON object of arguments (the top level, or one batch item).
pub struct Args<'a> {
    path: String,
    obj: &'a JsonObject,
}

impl<'a> Args<'a> {
    /// Wraps the top-level arguments of a tool, rejecting names not in `allowed`.
    pub fn new(obj: &'a JsonObject, allowed: &[&str]) -> Result<Self, DomainError> {
        Self::at(String::new(), obj, allowed)
    }

    /// Wraps a nested object found at `path`, rejecting names not in `allowed`.
    pub fn at(path: String, obj: &'a JsonObject, allowed: &[&str]) -> Result<Self, DomainError> {
        let args = Self { path, obj };
        match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(unknown) => Err(args.fail(unknown, "is not a known argument")),
            None => Ok(args),
        }
    }

    /// The full name of `key` for messages (`calculations[0].op`).
    fn full_name(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// An `InvalidArguments` error about `key`.
    pub fn fail(&self, key: &str, problem: &str) -> DomainError {
        invalid(&self.full_name(key), problem)
    }

    /// A required value.
    fn required(&self, key: &str) -> Result<&'a Value, DomainError> {
        self.obj
            .get(key)
            .ok_or_else(|| self.fail(key, "is required"))
    }

    /// A required finite number.
    pub fn number(&self, key: &str) -> Result<f64, DomainError> {
        self.to_number(key, self.required(key)?)
    }

    /// An optional finite number.
    pub fn opt_number(&self, key: &str) -> Result<Option<f64>, DomainError> {
        self.obj
            .get(key)
            .map(|v| self.to_number(key, v))
            .transpose()
    }

    /// An optional boolean.
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, DomainError> {
        self.obj
            .get(key)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| self.wrong_type(key, "a boolean", v))
            })
            .transpose()
    }

    /// A required string.
    pub fn string(&self, key: &str) -> Result<&'a str, DomainError> {
        let v = self.required(key)?;
        v.as_str()
            .ok_or_else(|| self.wrong_type(key, "a string", v))
    }

    /// An optional string.
    pub fn opt_string(&self, key: &str) -> Result<Option<&'a str>, DomainError> {
        self.obj
            .get(key)
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| self.wrong_type(key, "a string", v))
            })
            .transpose()
    }

    /// A required array.
    pub fn array(&self, key: &str) -> Result<&'a Vec<Value>, DomainError> {
        let v = self.required(key)?;
        v.as_array()
            .ok_or_else(|| self.wrong_type(key, "an array", v))
    }

    /// A required string that must be one of `options`, parsed by `parse`.
    pub fn choice<T>(
        &self,
        key: &str,
        options: &[&str],
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<T, DomainError> {
        let s = self.string(key)?;
        parse(s).ok_or_else(|| {
            let list = options.iter().map(|o| format!("{o:?}")).collect::<Vec<_>>();
            self.fail(
                key,
                &format!("must be one of {}, got {s:?}", list.join(", ")),
            )
        })
    }

    /// An optional integer in `min..=max`; integral floats such as `5.0` are accepted.
    pub fn opt_integer_in(
        &self,
        key: &str,
        min: u64,
        max: u64,
    ) -> Result<Option<u64>, DomainError> {
        let Some(x) = self.opt_number(key)? else {
            return Ok(None);
        };
        if x.fract() != 0.0 || x < min as f64 || x > max as f64 {
            let got = super::numfmt::js_number(x);
            let problem = format!("must be an integer from {min} to {max}, got {got}");
            return Err(self.fail(key, &problem));
        }
        // In range and integral, so the cast is exact.
        Ok(Some(x as u64))
    }

    /// Converts a JSON value to a finite `f64`.
    fn to_number(&self, key: &str, v: &Value) -> Result<f64, DomainError> {
        match v.as_f64() {
            Some(x) if x.is_finite() => Ok(x),
            Some(_) => Err(self.fail(key, "must be a finite number")),
            None => Err(self.wrong_type(key, "a number", v)),
        }
    }

    /// A "must be X, got Y" error.
    fn wrong_type(&self, key: &str, expected: &str, got: &Value) -> DomainError {
        self.fail(key, &format!("must be {expected}, got {}", json_type(got)))
    }
}

/// An `InvalidArguments` error naming the argument (the dispatcher names the tool).
pub fn invalid(argument: &str, problem: &str) -> DomainError {
    DomainError::InvalidArguments(format!("argument {argument:?} {problem}"))
}

/// The JSON type name of a value, for messages.
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> JsonObject {
        v.as_object().cloned().unwrap_or_default()
    }

    fn message(e: DomainError) -> String {
        match e {
            DomainError::InvalidArguments(m) => m,
            other => panic!("unexpected error {other:?}"),
        }
    }

    #[test]
    fn names_the_argument_in_every_failure() {
        let o = obj(json!({"a": "1", "b": null, "foo": 1}));
        let e = Args::new(&o, &["a", "b"]).err().map(message);
        assert_eq!(
            e.as_deref(),
            Some("argument \"foo\" is not a known argument")
        );
        let o = obj(json!({"a": "1", "b": null}));
        let args = Args::new(&o, &["a", "b", "c", "op"]).expect("known names");
        assert_eq!(
            message(args.number("a").expect_err("string")),
            "argument \"a\" must be a number, got string"
        );
        assert!(message(args.number("b").expect_err("null")).contains("got null"));
        assert!(message(args.number("c").expect_err("missing")).ends_with("\"c\" is required"));
        assert!(message(args.opt_bool("a").expect_err("string")).contains("must be a boolean"));
        assert_eq!(args.opt_number("c").ok(), Some(None));
    }

    #[test]
    fn choices_and_integer_ranges() {
        let o = obj(json!({"op": "pow", "steps": 2.5, "big": 1e300, "ok": 5.0}));
        let args = Args::at("calculations[0]".into(), &o, &["op", "steps", "big", "ok"])
            .expect("known names");
        let e = message(
            args.choice("op", &["add", "divide"], |_| None::<()>)
                .expect_err("bad"),
        );
        assert_eq!(
            e,
            "argument \"calculations[0].op\" must be one of \"add\", \"divide\", got \"pow\""
        );
        assert!(args.opt_integer_in("steps", 1, 100).is_err());
        assert!(args.opt_integer_in("big", 1, 100).is_err());
        assert_eq!(args.opt_integer_in("ok", 1, 100).ok(), Some(Some(5)));
        assert_eq!(args.opt_integer_in("missing", 1, 100).ok(), Some(None));
    }
}
