//! Masking: every secret a job decrypted, and its base64 and JSON-escaped forms, replaced
//! by `[hidden]` in what berth prints or stores from the component (contract §8).
//!
//! One scan does it all, over bytes: at each position the longest form that starts there
//! is hidden, and the scan moves past it. The same scan runs over a whole text
//! ([`Masker::mask`]) and over a stream cut anywhere ([`MaskStream`]): a stream holds back
//! only the end of what it was given that could still be the start of a form — never more
//! than the longest form — so a secret that spans several lines, or arrives in two writes,
//! is hidden whole, and memory stays bounded.

use std::borrow::Cow;
use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};

/// What a secret becomes.
pub const HIDDEN: &str = "[hidden]";

/// Secrets shorter than this are not masked: replacing every `x` or `ab` in the output
/// mangles it and hides nothing (such a value is guessed at once). berth warns about them.
pub const MIN_MASKED_CHARS: usize = 3;

/// A line of a multi-line secret (a PEM key, a service account's JSON) is also hidden on
/// its own, wherever it shows, from this length on: a key printed line by line, or through
/// `sed`, shows no line of it. Shorter lines (`}`, a key's last few characters) are
/// everywhere in ordinary output.
pub const MIN_MASKED_LINE_CHARS: usize = 16;

/// The columns `base64` (coreutils, busybox) and MIME wrap their output at.
const BASE64_COLUMNS: usize = 76;

/// How many leading bytes index the forms: a position whose next bytes start no form is
/// passed with one lookup.
const HEAD: usize = 4;

/// The forms to hide, longest first, so a form that contains another is hidden whole.
#[derive(Clone, Default)]
pub struct Masker {
    forms: Vec<Vec<u8>>,
    /// Forms of at least [`HEAD`] bytes by their first [`HEAD`] bytes, longest first.
    by_head: HashMap<[u8; HEAD], Vec<usize>>,
    /// Forms shorter than [`HEAD`] bytes, longest first.
    short: Vec<usize>,
    /// Which pairs of bytes start a form (every form has at least two bytes), a bit each:
    /// most positions of any output are passed on this one test.
    pairs: Vec<u64>,
}

impl std::fmt::Debug for Masker {
    // Never the secrets themselves.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Masker({} forms)", self.forms.len())
    }
}

/// What the scan found at one position.
enum At {
    /// No form starts here.
    Nothing,
    /// A form of this many bytes starts here.
    Form(usize),
    /// What follows could be the start of a form: more input decides.
    Undecided,
}

impl Masker {
    /// Adds a secret (and its encodings); returns false when it is too short to be masked.
    pub fn add(&mut self, secret: &str) -> bool {
        if secret.chars().count() < MIN_MASKED_CHARS {
            return false;
        }
        // As printed: with `\r\n` read as lines (berth splits the output at `\n` and drops
        // a `\r` before it), and without the line breaks around it (`$(…)` in a shell
        // drops the last newline of a PEM file).
        let lf = secret.replace("\r\n", "\n");
        let mut forms = Vec::new();
        for v in [secret, lf.as_str()] {
            let core = v.trim_matches(['\r', '\n']);
            let core_ok = core.chars().count() >= MIN_MASKED_CHARS;
            // The line breaks around a secret stay: what they hold is hidden, and lines
            // stay lines.
            forms.extend(text_forms(if core_ok { core } else { v }));
            forms.extend(base64_forms(v));
            if core_ok && core != v {
                forms.extend(base64_forms(core));
            }
        }
        if secret.contains('\n') {
            let lines = secret
                .lines()
                .filter(|l| l.chars().count() >= MIN_MASKED_LINE_CHARS);
            forms.extend(lines.map(str::to_owned));
        }
        for form in forms {
            let form = form.into_bytes();
            // Two bytes at least (a secret has three characters): see `pairs`.
            if form.len() >= 2 && !self.forms.contains(&form) {
                self.forms.push(form);
            }
        }
        self.index();
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
        match self.mask_bytes(text.as_bytes()) {
            Cow::Borrowed(_) => Cow::Borrowed(text),
            // Forms are whole UTF-8 sequences, so what is left around them is too.
            Cow::Owned(bytes) => Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()),
        }
    }

    /// `bytes` with every form of every secret hidden, wherever it lies (also between
    /// bytes that are not text).
    pub fn mask_bytes<'b>(&self, bytes: &'b [u8]) -> Cow<'b, [u8]> {
        if self.is_empty() {
            return Cow::Borrowed(bytes);
        }
        let mut out = Vec::new();
        let (_, hidden) = self.scan(bytes, false, &mut out);
        match hidden {
            0 => Cow::Borrowed(bytes),
            _ => Cow::Owned(out),
        }
    }

    /// `text` that was cut from the end of a longer output: it may start in the middle of
    /// a secret, so a start that is the end of a form (of at least [`MIN_MASKED_CHARS`]
    /// bytes) is hidden too.
    pub fn mask_cut<'t>(&self, text: &'t str) -> Cow<'t, str> {
        // A cut inside a character leaves replacement characters before it.
        let rest = text.trim_start_matches('\u{FFFD}');
        let bytes = rest.as_bytes();
        let cut = self
            .forms
            .iter()
            .filter_map(|f| {
                (MIN_MASKED_CHARS..f.len().min(bytes.len() + 1))
                    .rev()
                    .find(|&k| bytes.starts_with(&f[f.len() - k..]))
            })
            .max();
        match cut.and_then(|k| rest.get(k..)) {
            Some(after) => Cow::Owned(format!("{HIDDEN}{}", self.mask(after))),
            None => self.mask(text),
        }
    }

    /// A stream to mask piece by piece.
    pub fn stream(&self) -> MaskStream<'_> {
        MaskStream {
            masker: self,
            held: Vec::new(),
        }
    }

    /// A stream of lines to mask, as a container's output arrives: a secret across lines
    /// is hidden whole.
    pub fn lines(&self) -> LineMasker<'_> {
        LineMasker {
            stream: self.stream(),
            out: Vec::new(),
        }
    }

    /// The longest form, in bytes: the most a stream holds back.
    pub fn longest(&self) -> usize {
        self.forms.first().map_or(0, Vec::len)
    }

    /// Sorts the forms longest first and indexes them by their first bytes.
    fn index(&mut self) {
        self.forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
        self.by_head.clear();
        self.short.clear();
        self.pairs = vec![0; (1 << 16) / 64];
        for (i, form) in self.forms.iter().enumerate() {
            if let Some(&[a, b]) = form.first_chunk::<2>() {
                let pair = usize::from(a) << 8 | usize::from(b);
                self.pairs[pair / 64] |= 1 << (pair % 64);
            }
            match form.first_chunk::<HEAD>() {
                Some(head) => self.by_head.entry(*head).or_default().push(i),
                None => self.short.push(i),
            }
        }
    }

    /// Copies `buf` to `out` with every form hidden; with `more` (the stream goes on), stops
    /// where a form could start but `buf` ends before it would. Returns how many bytes of
    /// `buf` it consumed and how many forms it hid.
    fn scan(&self, buf: &[u8], more: bool, out: &mut Vec<u8>) -> (usize, usize) {
        let (mut i, mut copied, mut hidden) = (0, 0, 0);
        while i < buf.len() {
            if let Some(&[a, b]) = buf[i..].first_chunk::<2>() {
                let pair = usize::from(a) << 8 | usize::from(b);
                if self
                    .pairs
                    .get(pair / 64)
                    .is_none_or(|w| w & (1 << (pair % 64)) == 0)
                {
                    i += 1;
                    continue;
                }
            }
            match self.at(&buf[i..], more) {
                At::Nothing => i += 1,
                At::Form(len) => {
                    out.extend_from_slice(&buf[copied..i]);
                    out.extend_from_slice(HIDDEN.as_bytes());
                    i += len;
                    copied = i;
                    hidden += 1;
                }
                At::Undecided => break,
            }
        }
        out.extend_from_slice(&buf[copied..i]);
        (i, hidden)
    }

    /// Which form starts at the start of `rest`, if any: the longest one.
    fn at(&self, rest: &[u8], more: bool) -> At {
        match rest.first_chunk::<HEAD>() {
            Some(head) => match self.by_head.get(head) {
                Some(bucket) => self.decide(rest, more, bucket.iter().chain(&self.short).copied()),
                None if self.short.is_empty() => At::Nothing,
                None => self.decide(rest, more, self.short.iter().copied()),
            },
            // Near the end of the input: any form may start here.
            None => self.decide(rest, more, 0..self.forms.len()),
        }
    }

    /// [`Masker::at`] among the forms `candidates` (indices, longest first).
    fn decide(&self, rest: &[u8], more: bool, candidates: impl Iterator<Item = usize>) -> At {
        for i in candidates {
            let form = &self.forms[i];
            if form.len() > rest.len() {
                if more && form.starts_with(rest) {
                    return At::Undecided;
                }
            } else if rest.starts_with(form) {
                // Longest first: no longer form can start here.
                return At::Form(form.len());
            }
        }
        At::Nothing
    }
}

/// A secret as it is and JSON-escaped (also as PHP escapes it).
fn text_forms(secret: &str) -> [String; 3] {
    let escaped = serde_json::to_string(secret).unwrap_or_default();
    let escaped = escaped
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or_default()
        .to_owned();
    // PHP's json_encode (which components of the original use) also escapes `/`.
    let php_escaped = escaped.replace('/', "\\/");
    [secret.to_owned(), escaped, php_escaped]
}

/// A secret in base64: standard, URL-safe, and wrapped as `base64` wraps it.
fn base64_forms(secret: &str) -> [String; 3] {
    let base64 = STANDARD.encode(secret);
    let wrapped = base64
        .as_bytes()
        .chunks(BASE64_COLUMNS)
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join("\n");
    [base64, URL_SAFE.encode(secret), wrapped]
}

/// A byte stream being masked: what could still be the start of a secret is held back
/// until more arrives or the stream ends.
#[derive(Debug)]
pub struct MaskStream<'m> {
    masker: &'m Masker,
    held: Vec<u8>,
}

impl MaskStream<'_> {
    /// Masks `data`, which follows what was pushed before, and appends to `out` what can be
    /// shown now.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if self.masker.is_empty() {
            out.extend_from_slice(data);
            return;
        }
        if self.held.is_empty() {
            let (used, _) = self.masker.scan(data, true, out);
            self.held.extend_from_slice(&data[used..]);
        } else {
            self.held.extend_from_slice(data);
            let (used, _) = self.masker.scan(&self.held, true, out);
            self.held.drain(..used);
        }
    }

    /// Ends the stream: appends to `out` what was held back, masked.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.masker.scan(&self.held, false, out);
        self.held.clear();
    }

    /// How many bytes are held back.
    pub fn held(&self) -> usize {
        self.held.len()
    }
}

/// Lines being masked as one stream: each line is passed on once nothing in it can be part
/// of a secret that later lines complete.
#[derive(Debug)]
pub struct LineMasker<'m> {
    stream: MaskStream<'m>,
    /// Masked output not yet passed on (no newline yet).
    out: Vec<u8>,
}

impl LineMasker<'_> {
    /// Masks `line` (without its newline) and passes on to `emit` every line that is ready.
    pub fn push(&mut self, line: &str, emit: &mut dyn FnMut(&str)) {
        if self.stream.masker.is_empty() {
            emit(line);
            return;
        }
        self.stream.push(line.as_bytes(), &mut self.out);
        self.stream.push(b"\n", &mut self.out);
        self.emit_lines(emit);
    }

    /// Ends the stream: passes on every line still held back.
    pub fn finish(&mut self, emit: &mut dyn FnMut(&str)) {
        self.stream.finish(&mut self.out);
        self.emit_lines(emit);
        if !self.out.is_empty() {
            emit(&String::from_utf8_lossy(&self.out));
            self.out.clear();
        }
    }

    fn emit_lines(&mut self, emit: &mut dyn FnMut(&str)) {
        let mut start = 0;
        while let Some(n) = self.out[start..].iter().position(|&b| b == b'\n') {
            emit(&String::from_utf8_lossy(&self.out[start..start + n]));
            start += n + 1;
        }
        self.out.drain(..start);
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
        assert_eq!(m.mask("ab abcdef-lon"), "ab [hidden]def-lon");
    }

    /// A PEM-like key: several lines, a trailing newline, `/` and `+` in it.
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7+/x9Zq3Lm0Tn\nQ1w2e3r4t5y6u7i8o9p0==\n-----END PRIVATE KEY-----\n";

    fn key_masker() -> Masker {
        let mut m = Masker::default();
        assert!(m.add(KEY));
        m.add("other-secret");
        m
    }

    fn key_lines() -> Vec<&'static str> {
        KEY.lines()
            .filter(|l| l.len() >= MIN_MASKED_LINE_CHARS)
            .collect()
    }

    fn streamed(m: &Masker, pieces: &[&[u8]]) -> (Vec<u8>, usize) {
        let mut s = m.stream();
        let mut out = Vec::new();
        let mut most_held = 0;
        for p in pieces {
            s.push(p, &mut out);
            most_held = most_held.max(s.held());
        }
        s.finish(&mut out);
        (out, most_held)
    }

    #[test]
    fn a_multi_line_secret_split_at_every_byte_is_hidden_whole() {
        let m = key_masker();
        let text = format!("before {KEY}middle {} after\n", KEY.trim_end());
        let whole = m.mask(&text).into_owned();
        assert_eq!(whole, "before [hidden]\nmiddle [hidden] after\n");
        let bytes = text.as_bytes();
        for cut in 0..=bytes.len() {
            let (out, held) = streamed(&m, &[&bytes[..cut], &bytes[cut..]]);
            assert_eq!(String::from_utf8(out).unwrap(), whole, "cut at {cut}");
            assert!(held < m.longest(), "held {held} bytes at {cut}");
        }
        // Byte by byte, as slowly as a component may print it.
        let pieces: Vec<&[u8]> = bytes.chunks(1).collect();
        let (out, held) = streamed(&m, &pieces);
        assert_eq!(String::from_utf8(out).unwrap(), whole);
        assert!(held < m.longest());
    }

    #[test]
    fn a_multi_line_secret_is_hidden_json_escaped_in_base64_and_line_by_line() {
        let m = key_masker();
        let escaped = serde_json::to_string(KEY).unwrap();
        let wrapped: Vec<String> = STANDARD
            .encode(KEY)
            .as_bytes()
            .chunks(76)
            .map(|c| String::from_utf8(c.to_vec()).unwrap())
            .collect();
        let text = format!(
            "json {escaped}\nb64 {}\nwrapped\n{}\nurl {}\nsed: {}\n",
            STANDARD.encode(KEY),
            wrapped.join("\n"),
            URL_SAFE.encode(KEY),
            key_lines().join("\n> ")
        );
        let masked = m.mask(&text);
        for line in key_lines() {
            assert!(!masked.contains(line), "{line} shows in:\n{masked}");
        }
        for w in &wrapped {
            assert!(!masked.contains(w.as_str()), "{w} shows in:\n{masked}");
        }
        assert!(
            masked.starts_with("json \"[hidden]\\n\"\nb64 [hidden]\nwrapped\n[hidden]\n"),
            "{masked}"
        );
        // A secret with `\r\n` line ends, printed and read back as lines.
        let mut crlf = Masker::default();
        crlf.add(&KEY.replace('\n', "\r\n"));
        assert_eq!(crlf.mask(&format!("k {KEY}.")), "k [hidden]\n.");
    }

    #[test]
    fn lines_are_masked_as_one_stream_and_passed_on_when_ready() {
        let m = key_masker();
        let mut lines = m.lines();
        let got = std::cell::RefCell::new(Vec::<String>::new());
        let mut emit = |l: &str| got.borrow_mut().push(l.to_owned());
        lines.push("plain first line", &mut emit);
        lines.push("KEY: -----BEGIN PRIVATE KEY-----", &mut emit);
        let shown_before_the_key_ended = got.borrow().len();
        for l in KEY.lines().skip(1) {
            lines.push(l, &mut emit);
        }
        lines.push("other-secret and more", &mut emit);
        lines.push("-----BEGIN PRIVATE KEY----- alone", &mut emit);
        lines.finish(&mut emit);
        assert_eq!(
            shown_before_the_key_ended, 1,
            "a line that may start the key waits"
        );
        assert_eq!(
            got.into_inner(),
            [
                "plain first line",
                "KEY: [hidden]",
                "[hidden] and more",
                "[hidden] alone"
            ]
        );
        // Nothing to mask: lines pass through as they are.
        let none = Masker::default();
        let mut lines = none.lines();
        let mut got = Vec::new();
        lines.push("a", &mut |l| got.push(l.to_owned()));
        assert_eq!(got, ["a"]);
    }

    #[test]
    fn binary_content_is_masked_around_invalid_bytes() {
        let m = key_masker();
        let bytes = b"\xff\x00other-secret\xfe\xe2\x82";
        assert_eq!(&*m.mask_bytes(bytes), b"\xff\x00[hidden]\xfe\xe2\x82");
        assert!(matches!(m.mask_bytes(b"\xffnothing"), Cow::Borrowed(_)));
    }

    #[test]
    fn output_cut_inside_a_secret_hides_the_rest_of_it() {
        let m = key_masker();
        let cut = &KEY[40..];
        assert_eq!(m.mask_cut(&format!("{cut}then")), "[hidden]\nthen");
        assert_eq!(
            m.mask_cut("ret tail"),
            "[hidden] tail",
            "end of other-secret"
        );
        assert_eq!(m.mask_cut("et tail"), "et tail", "shorter than 3: kept");
        assert_eq!(m.mask_cut("plain other-secret"), "plain [hidden]");
    }
}
