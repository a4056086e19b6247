//! JavaScript-compatible rendering of numbers, JSON texts and timestamps.
//!
//! The reference server is written in TypeScript, so every number it prints goes through
//! `Number.prototype.toString` and every resource text through `JSON.stringify(obj, null, 2)`.
//! Clients compare these texts, so Abacus must print `1e+21`, `Infinity` and `3` where Rust's
//! `Display` would print `1000000000000000000000`, `inf` and `3.0`.

use std::io;

use serde::Serialize;
use serde_json::ser::{Formatter, PrettyFormatter};
use serde_json::Value;

/// The largest integer a JavaScript number holds exactly (2^53 - 1); beyond it integers are
/// printed through the float path so that they look as JavaScript would print them.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// Formats `x` exactly like JavaScript's `Number.prototype.toString()`.
///
/// Why: result texts (`1 divide 3 = 0.3333333333333333`) must match the reference byte for
/// byte. `ryu-js` implements the ECMAScript algorithm (shortest round-trip digits, exponent form
/// at `>= 1e21` and `< 1e-6`, `Infinity`/`NaN` spellings); the only case handled here is `-0`,
/// which JavaScript prints as `0`.
pub fn js_number(x: f64) -> String {
    let mut out = String::with_capacity(24);
    push_js_number(&mut out, x);
    out
}

/// Appends `x` as [`js_number`] formats it, without allocating.
///
/// Why: every calculation prints its operands and result several times (text, structured
/// content, history entry); integral values, the common case, skip the shortest-digits search.
pub fn push_js_number(out: &mut String, x: f64) {
    match exact_integer(x) {
        // JavaScript prints integers below 1e21 as plain digits, so the two spellings agree.
        Some(i) => out.push_str(itoa::Buffer::new().format(i)),
        None => out.push_str(ryu_js::Buffer::new().format(x)),
    }
}

/// `x` as an `i64` when it is integral and exactly representable (|x| <= 2^53 - 1); `-0`
/// becomes `0`, as JavaScript prints and serializes it.
fn exact_integer(x: f64) -> Option<i64> {
    // Exact: |x| <= 2^53 - 1 fits an i64 without rounding. NaN and infinities fail the test.
    (x.trunc() == x && x.abs() <= MAX_SAFE_INTEGER).then_some(x as i64)
}

/// Appends the JSON text of [`json_number`]`(x)` (`null` when not finite), byte for byte what
/// `serde_json` prints for that value, without building it.
///
/// Why: history entries and structured content are written as text on the hot path.
pub fn push_json_number(out: &mut String, x: f64) {
    if !x.is_finite() {
        out.push_str("null");
    } else if let Some(i) = exact_integer(x) {
        out.push_str(itoa::Buffer::new().format(i));
    } else {
        // serde_json writes finite floats with zmij (shortest round-trip digits).
        out.push_str(zmij::Buffer::new().format_finite(x));
    }
}

/// Appends `text` as a JSON string literal (the protocol layer's escaper, shared).
pub use crate::protocol::jsonrpc::push_json_str;

/// The JSON value JavaScript's `JSON.stringify` would emit for `x`: `null` when not finite,
/// an integer when integral and exactly representable (so that it prints as `3`, not `3.0`),
/// otherwise a float.
///
/// Why: history entries and structured content are JSON; JSON has no `Infinity`, and integral
/// results should stay integers after a round trip through the session store.
pub fn json_number(x: f64) -> Value {
    if !x.is_finite() {
        return Value::Null;
    }
    match exact_integer(x) {
        Some(i) => Value::from(i),
        None => Value::from(x),
    }
}

/// Serialises `value` like `JSON.stringify(value, null, 2)`: two-space indent, `\n` line
/// breaks, no trailing newline, JavaScript number spelling.
///
/// Why: resource texts must match the reference, which pretty-prints with JavaScript rules
/// (`serde_json` alone would print `1e21` for `1e+21` and `3.0` for an integral float).
pub fn js_json_pretty<T: Serialize + ?Sized>(value: &T) -> String {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, JsPretty::default());
    if value.serialize(&mut ser).is_err() {
        return "null".to_owned();
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Formats milliseconds since the Unix epoch like JavaScript's `Date.prototype.toISOString()`
/// (`2026-11-23T19:38:38.061Z`).
///
/// Why: the session-info resource reports times in that exact shape.
pub fn iso_8601_ms(epoch_ms: u64) -> String {
    use time::macros::format_description;
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    let nanos = i128::from(epoch_ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

/// A `serde_json` pretty formatter whose numbers follow JavaScript's spelling.
#[derive(Default)]
struct JsPretty(PrettyFormatter<'static>);

impl JsPretty {
    /// Writes an integer as JavaScript would hold and print it (as a double).
    fn write_integer<W: ?Sized + io::Write>(
        w: &mut W,
        as_text: String,
        as_f64: f64,
    ) -> io::Result<()> {
        if as_f64.abs() <= MAX_SAFE_INTEGER {
            w.write_all(as_text.as_bytes())
        } else {
            w.write_all(js_number(as_f64).as_bytes())
        }
    }
}

impl Formatter for JsPretty {
    fn write_f64<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f64) -> io::Result<()> {
        let text = if value.is_finite() {
            js_number(value)
        } else {
            "null".to_owned()
        };
        w.write_all(text.as_bytes())
    }
    fn write_f32<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f32) -> io::Result<()> {
        self.write_f64(w, f64::from(value))
    }
    fn write_i64<W: ?Sized + io::Write>(&mut self, w: &mut W, value: i64) -> io::Result<()> {
        Self::write_integer(w, value.to_string(), value as f64)
    }
    fn write_u64<W: ?Sized + io::Write>(&mut self, w: &mut W, value: u64) -> io::Result<()> {
        Self::write_integer(w, value.to_string(), value as f64)
    }
    fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_value(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn js_number_matches_ecmascript() {
        let cases: &[(f64, &str)] = &[
            (0.1 + 0.2, "0.30000000000000004"),
            (1e21, "1e+21"),
            (1e-7, "1e-7"),
            (-1e-7, "-1e-7"),
            (1e-6, "0.000001"),
            (123456789012345680000.0, "123456789012345680000"),
            (5e-324, "5e-324"),
            (1.0 / 3.0, "0.3333333333333333"),
            (-0.0, "0"),
            (0.0, "0"),
            (42.0, "42"),
            (-2.5, "-2.5"),
            (1e308 * 10.0, "Infinity"),
            (-1e308 * 10.0, "-Infinity"),
            (f64::NAN, "NaN"),
            (1e308, "1e+308"),
            (1.5e300, "1.5e+300"),
            (2.0f64.powi(53), "9007199254740992"),
            (1.5574077246549023, "1.5574077246549023"),
            (100.0, "100"),
            (1e20, "100000000000000000000"),
        ];
        for (x, want) in cases {
            assert_eq!(js_number(*x), *want, "formatting {x:e}");
        }
    }

    #[test]
    fn json_number_keeps_integers_and_nulls_non_finite() {
        assert_eq!(json_number(3.0), json!(3));
        assert_eq!(json_number(-0.0), json!(0));
        assert_eq!(json_number(2.5), json!(2.5));
        assert_eq!(json_number(f64::INFINITY), Value::Null);
        assert_eq!(json_number(f64::NAN), Value::Null);
        assert_eq!(json_number(1e300), json!(1e300));
    }

    #[test]
    fn hand_written_json_matches_serde_json() {
        let numbers = [
            0.0,
            -0.0,
            3.0,
            -42.0,
            2.5,
            0.1 + 0.2,
            1e21,
            1e-7,
            1e300,
            9007199254740991.0,
            9007199254740992.0,
            -9007199254740993.0,
            5e-324,
            f64::INFINITY,
            f64::NAN,
        ];
        for x in numbers {
            let mut out = String::new();
            push_json_number(&mut out, x);
            assert_eq!(out, json_number(x).to_string(), "{x:e}");
            let mut js = String::new();
            push_js_number(&mut js, x);
            let want = if x == 0.0 {
                "0".to_owned()
            } else {
                ryu_js::Buffer::new().format(x).to_owned()
            };
            assert_eq!(js, want, "{x:e}");
        }
        for text in [
            "c-0123",
            "multiply",
            "",
            "q\"uote",
            "back\\slash",
            "nl\n",
            "\u{1}",
            "x²",
        ] {
            let mut out = String::new();
            push_json_str(&mut out, text);
            assert_eq!(out, serde_json::to_string(text).unwrap(), "{text:?}");
        }
    }

    #[test]
    fn pretty_json_matches_json_stringify() {
        let v = json!({"a": [1, 2.5, 1e21, 1e-7], "b": {}, "c": [], "d": "x²", "e": 12345678901234567890u64});
        assert_eq!(
            js_json_pretty(&v),
            "{\n  \"a\": [\n    1,\n    2.5,\n    1e+21,\n    1e-7\n  ],\n  \"b\": {},\n  \"c\": [],\n  \"d\": \"x²\",\n  \"e\": 12345678901234567000\n}"
        );
        assert_eq!(js_json_pretty(&3.0f64), "3");
    }

    #[test]
    fn iso_timestamps_have_milliseconds() {
        assert_eq!(iso_8601_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_8601_ms(1_795_462_718_061), "2026-11-23T19:38:38.061Z");
    }
}
