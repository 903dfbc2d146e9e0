//! The one line every start writes on stderr, which Lambda sends to CloudWatch.
//!
//! A JSON object, so that CloudWatch Logs Insights can filter on `decision` and chart
//! `ms`; hand-written because a JSON library would cost more than it saves here.

use std::fmt::Write;
use std::time::Instant;

/// What this start did, with the fields of its log line.
pub struct Report<'a> {
    /// `extract`, `reuse` or `error`.
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
        let ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let mut out = String::from("{\"coldpack\":\"bootstrap\",\"decision\":");
        push_str(&mut out, self.decision);
        out.push_str(",\"reason\":");
        push_str(&mut out, self.reason);
        let _ = write!(out, ",\"ms\":{ms:.3}");
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
    fn strings_are_escaped() {
        let mut out = String::new();
        push_str(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#);
    }
}
