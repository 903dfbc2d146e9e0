//! The one line every start writes on stderr, which Lambda sends to CloudWatch.
//!
//! A JSON object, so that CloudWatch Logs Insights can filter on `decision` and chart
//! `ms`; hand-written because a JSON library would cost more than it saves here.

use std::fmt::Write;
use std::time::{Duration, Instant};

/// What this start did, with the fields of its log line.
pub struct Report<'a> {
    /// `extract`, `reuse`, `direct` or `error`.
    pub decision: &'a str,
    pub reason: &'a str,
    pub started: Instant,
    pub fields: Vec<(&'a str, Value<'a>)>,
}

#[derive(Clone)]
pub enum Value<'a> {
    Text(&'a str),
    Number(u64),
}

impl Report<'_> {
    pub fn line(&self) -> String {
        let mut out = String::from("{\"coldpack\":\"bootstrap\",\"decision\":");
        push_str(&mut out, self.decision);
        out.push_str(",\"reason\":");
        push_str(&mut out, self.reason);
        out.push_str(",\"ms\":");
        push_ms(&mut out, self.started.elapsed());
        for (key, value) in &self.fields {
            let _ = write!(out, ",\"{key}\":");
            match value {
                Value::Text(text) => push_str(&mut out, text),
                Value::Number(n) => {
                    let _ = write!(out, "{n}");
                }
            }
        }
        out.push('}');
        out
    }
}

/// Appends `elapsed` in milliseconds with three decimals (`1.234`), in integers:
/// formatting a float would link core's float printing, about 20 KB of the bootstrap.
fn push_ms(out: &mut String, elapsed: Duration) {
    let micros = elapsed.as_micros();
    let _ = write!(out, "{}.{:03}", micros / 1000, micros % 1000);
}

/// Appends `text` as a JSON string literal.
pub fn push_str(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_have_three_decimals() {
        for (micros, text) in [
            (0, "0.000"),
            (7, "0.007"),
            (1_234, "1.234"),
            (98_765_432, "98765.432"),
        ] {
            let mut out = String::new();
            push_ms(&mut out, Duration::from_micros(micros));
            assert_eq!(out, text);
        }
        // Truncated, not rounded, below the microsecond.
        let mut out = String::new();
        push_ms(&mut out, Duration::from_nanos(1_999));
        assert_eq!(out, "0.001");
    }

    #[test]
    fn strings_are_escaped() {
        let mut out = String::new();
        push_str(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#);
    }
}
