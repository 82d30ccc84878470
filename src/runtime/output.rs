//! What a container prints: stdout split into lines as it arrives, stderr kept.

/// The longest single line passed on (contract §8); the rest of it is dropped.
pub const MAX_LINE_CHARS: usize = 60_000;
const TRIMMED: &str = " [trimmed]";
/// What a [`Tail`] starts with when it dropped the start of the output.
pub const DROPPED: &str = "[earlier output dropped] ";

/// Splits a byte stream into lines, however the reads cut it. A line longer than the limit
/// is cut there and marked ` [trimmed]`; the rest of it, up to the next newline, is dropped.
#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    max: usize,
    /// Inside an over-long line whose head was already emitted.
    skipping: bool,
}

impl Default for LineSplitter {
    fn default() -> Self {
        LineSplitter::new(MAX_LINE_CHARS)
    }
}

impl LineSplitter {
    pub fn new(max: usize) -> Self {
        LineSplitter {
            buf: Vec::new(),
            max,
            skipping: false,
        }
    }

    pub fn push(&mut self, mut data: &[u8], emit: &mut dyn FnMut(&str)) {
        while !data.is_empty() {
            let newline = data.iter().position(|&b| b == b'\n');
            let (piece, rest, ends_line) = match newline {
                Some(i) => (&data[..i], &data[i + 1..], true),
                None => (data, &data[data.len()..], false),
            };
            if !self.skipping {
                self.buf.extend_from_slice(piece);
                // Bytes are an upper bound on characters: only count when it could matter.
                if self.buf.len() > self.max {
                    let text = String::from_utf8_lossy(&self.buf);
                    if text.chars().count() > self.max {
                        let head: String = text.chars().take(self.max).collect();
                        emit(&format!("{head}{TRIMMED}"));
                        self.buf.clear();
                        self.skipping = true;
                    }
                }
            }
            if ends_line {
                if !self.skipping {
                    let line = String::from_utf8_lossy(&self.buf);
                    emit(line.strip_suffix('\r').unwrap_or(&line));
                }
                self.buf.clear();
                self.skipping = false;
            }
            data = rest;
        }
    }

    /// Emits a last line that had no newline.
    pub fn finish(&mut self, emit: &mut dyn FnMut(&str)) {
        if !self.buf.is_empty() && !self.skipping {
            emit(&String::from_utf8_lossy(&self.buf));
        }
        self.buf.clear();
        self.skipping = false;
    }
}

/// Keeps the last `cap` bytes written to it.
#[derive(Debug)]
pub struct Tail {
    buf: Vec<u8>,
    cap: usize,
    dropped: bool,
}

impl Tail {
    pub fn new(cap: usize) -> Self {
        Tail {
            buf: Vec::new(),
            cap,
            dropped: false,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        if self.buf.len() > self.cap * 2 {
            let cut = self.buf.len() - self.cap;
            self.buf.drain(..cut);
            self.dropped = true;
        }
    }

    pub fn into_string(mut self) -> String {
        if self.buf.len() > self.cap {
            let cut = self.buf.len() - self.cap;
            self.buf.drain(..cut);
            self.dropped = true;
        }
        let text = String::from_utf8_lossy(&self.buf).into_owned();
        if self.dropped {
            format!("{DROPPED}{text}")
        } else {
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(max: usize, chunks: &[&[u8]]) -> Vec<String> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut |l| out.push(l.to_owned()));
        }
        s.finish(&mut |l| out.push(l.to_owned()));
        out
    }

    #[test]
    fn lines_survive_any_chunking() {
        assert_eq!(
            lines(100, &[b"hel", b"lo\nwor", b"ld\n"]),
            vec!["hello", "world"]
        );
        assert_eq!(lines(100, &[b"a\r\n\nb"]), vec!["a", "", "b"]);
    }

    #[test]
    fn split_multibyte_characters_are_rejoined() {
        let text = "žluťoučký\n".as_bytes();
        assert_eq!(lines(100, &[&text[..3], &text[3..]]), vec!["žluťoučký"]);
    }

    #[test]
    fn over_long_lines_are_trimmed_once() {
        let long = "x".repeat(25);
        let input = format!("{long}\nnext\n");
        let out = lines(10, &[&input.as_bytes()[..7], &input.as_bytes()[7..]]);
        assert_eq!(
            out,
            vec![format!("{} [trimmed]", "x".repeat(10)), "next".to_owned()]
        );
    }

    #[test]
    fn tail_keeps_the_end() {
        let mut t = Tail::new(4);
        for _ in 0..10 {
            t.push(b"abc");
        }
        t.push(b"END");
        let s = t.into_string();
        assert!(s.ends_with("cEND"), "{s}");
        assert!(s.starts_with("[earlier output dropped]"));
        let mut t = Tail::new(100);
        t.push(b"short");
        assert_eq!(t.into_string(), "short");
    }
}
