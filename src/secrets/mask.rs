//! Masking: every secret a job decrypted, and its base64 and JSON-escaped forms, replaced
//! by `[hidden]` in what berth prints or stores from the component (contract §8).

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};

/// What a secret becomes.
pub const HIDDEN: &str = "[hidden]";

/// Secrets shorter than this are not masked: replacing every `x` or `ab` in the output
/// mangles it and hides nothing (such a value is guessed at once). berth warns about them.
pub const MIN_MASKED_CHARS: usize = 3;

/// The forms to hide, longest first, so a form that contains another is hidden whole.
#[derive(Clone, Default)]
pub struct Masker {
    forms: Vec<String>,
}

impl std::fmt::Debug for Masker {
    // Never the secrets themselves.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Masker({} forms)", self.forms.len())
    }
}

impl Masker {
    /// Adds a secret (and its encodings); returns false when it is too short to be masked.
    pub fn add(&mut self, secret: &str) -> bool {
        if secret.chars().count() < MIN_MASKED_CHARS {
            return false;
        }
        let escaped = serde_json::to_string(secret).unwrap_or_default();
        let escaped = escaped
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .unwrap_or_default()
            .to_owned();
        // PHP's json_encode (which components of the original use) also escapes `/`.
        let php_escaped = escaped.replace('/', "\\/");
        let forms = [
            secret.to_owned(),
            escaped,
            php_escaped,
            STANDARD.encode(secret),
            URL_SAFE.encode(secret),
        ];
        for form in forms {
            if !form.is_empty() && !self.forms.contains(&form) {
                self.forms.push(form);
            }
        }
        self.forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
        true
    }

    pub fn extend<'a>(&mut self, secrets: impl IntoIterator<Item = &'a str>) {
        for s in secrets {
            self.add(s);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.forms.is_empty()
    }

    /// `text` with every form of every secret hidden.
    pub fn mask<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let mut out = Cow::Borrowed(text);
        for form in &self.forms {
            if out.contains(form.as_str()) {
                out = Cow::Owned(out.replace(form.as_str(), HIDDEN));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_and_its_encodings_are_hidden() {
        let mut m = Masker::default();
        assert!(m.add("pa\"ss/word"));
        let b64 = STANDARD.encode("pa\"ss/word");
        let text = format!("raw pa\"ss/word json \"pa\\\"ss\\/word\" pa\\\"ss/word b64 {b64}.");
        let masked = m.mask(&text);
        assert_eq!(
            masked,
            "raw [hidden] json \"[hidden]\" [hidden] b64 [hidden]."
        );
    }

    #[test]
    fn text_without_secrets_is_untouched_and_short_secrets_are_not_masked() {
        let mut m = Masker::default();
        assert!(!m.add("x"));
        assert!(m.is_empty());
        assert!(m.add("hunter2"));
        assert!(matches!(m.mask("nothing here, x"), Cow::Borrowed(_)));
        assert_eq!(m.mask("hunter2hunter2"), "[hidden][hidden]");
    }

    #[test]
    fn the_longer_of_two_overlapping_secrets_is_hidden_whole() {
        let mut m = Masker::default();
        m.extend(["abc", "abcdef-long"]);
        assert_eq!(m.mask("abcdef-long abc"), "[hidden] [hidden]");
    }
}
