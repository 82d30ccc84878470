//! JSON text as PHP's `json_encode` writes it by default: `/` escaped as `\/` and every
//! character outside ASCII as `\uXXXX` (UTF-16, lower-case hex).
//!
//! The original renders placeholders in that text, so a placeholder's name is what PHP's
//! encoding made of it (`{{ café }}` is looked up as `caf\u00e9`), and a value lands in it
//! escaped the same way (its encoding without the quotes).

use std::io;

use serde::Serialize;
use serde_json::Value;
use serde_json::ser::{CompactFormatter, Formatter, Serializer};

/// The formatter: serde_json's compact one, with PHP's extra escapes in strings.
struct Php;

impl Formatter for Php {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut plain = 0;
        for (i, c) in fragment.char_indices() {
            if c.is_ascii() && c != '/' {
                continue;
            }
            writer.write_all(&fragment.as_bytes()[plain..i])?;
            if c == '/' {
                writer.write_all(b"\\/")?;
            } else {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write!(writer, "\\u{unit:04x}")?;
                }
            }
            plain = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[plain..])
    }

    // Everything else as the compact formatter writes it.
    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        escape: serde_json::ser::CharEscape,
    ) -> io::Result<()> {
        CompactFormatter.write_char_escape(writer, escape)
    }
}

/// `value` as PHP's `json_encode($value)` writes it.
pub fn encode(value: &Value) -> String {
    let mut out = Vec::new();
    let mut ser = Serializer::with_formatter(&mut out, Php);
    // Writing a Value into memory cannot fail: its keys are strings.
    if value.serialize(&mut ser).is_err() {
        return String::new();
    }
    // Only ASCII was written.
    String::from_utf8(out).unwrap_or_default()
}

/// `text` escaped as it stands inside a JSON string of [`encode`], without the quotes:
/// what the original's Mustache escaping puts in place of a placeholder.
pub fn escape(text: &str) -> String {
    let quoted = encode(&Value::String(text.to_owned()));
    quoted
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn slashes_and_non_ascii_are_escaped_as_php_does() {
        let v = json!({"a/b": "x/y é 😀", "n": [1, 2.5, true, null], "c": "\u{1}\n\t\"\\"});
        assert_eq!(
            encode(&v),
            r#"{"a\/b":"x\/y \u00e9 \ud83d\ude00","c":"\u0001\n\t\"\\","n":[1,2.5,true,null]}"#
        );
        assert_eq!(escape("say \"hi\" / é"), r#"say \"hi\" \/ \u00e9"#);
        assert_eq!(escape("\""), r#"\""#);
        assert_eq!(escape(""), "");
    }

    #[test]
    fn the_text_decodes_to_the_same_value() {
        let v = json!({"k": ["/", "é", "😀", "\u{7f}", "{{ x }}"]});
        let back: Value = serde_json::from_str(&encode(&v)).unwrap();
        assert_eq!(back, v);
    }
}
