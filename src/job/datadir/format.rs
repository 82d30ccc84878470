//! `expected-stdout` and `expected-stderr` as keboola/datadir-tests reads them: PHPUnit's
//! `assertStringMatchesFormat` on both texts trimmed, so `%s`, `%d`, `%a`… stand for what
//! changes from run to run (a time, a path, an id).

use regex::RegexBuilder;

/// The most a compiled format may take; a format that needs more is compared as it is.
const MAX_PATTERN_BYTES: usize = 64 << 20;

/// Whether `actual` matches the format `expected` (both trimmed as PHP's `trim` does, line
/// ends normalized to `\n`).
pub(super) fn matches(expected: &str, actual: &str) -> bool {
    let expected = normalize(expected);
    let actual = normalize(actual);
    if !expected.contains('%') {
        return expected == actual;
    }
    match RegexBuilder::new(&pattern(&expected))
        .size_limit(MAX_PATTERN_BYTES)
        .build()
    {
        Ok(re) => re.is_match(&actual),
        Err(e) => {
            tracing::warn!(
                "cannot compile the expected output as a format ({e}): compared as it is"
            );
            expected == actual
        }
    }
}

/// The text as compared: `\r\n` as `\n`, without what PHP's `trim` strips at either end.
pub(super) fn normalize(text: &str) -> String {
    let text = text.replace("\r\n", "\n");
    text.trim_matches([' ', '\t', '\n', '\r', '\0', '\x0B'])
        .to_owned()
}

/// The regular expression PHPUnit makes of a format: everything literal but the
/// placeholders, anchored at both ends, `.` matching newlines too.
fn pattern(format: &str) -> String {
    let mut out = String::from(r"(?s)\A");
    let mut literal = String::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        let placeholder = match (c, chars.peek()) {
            ('%', Some(&next)) => placeholder(next),
            _ => None,
        };
        match placeholder {
            Some(re) => {
                chars.next();
                out.push_str(&regex::escape(&literal));
                literal.clear();
                out.push_str(re);
            }
            None => literal.push(c),
        }
    }
    out.push_str(&regex::escape(&literal));
    out.push_str(r"\z");
    out
}

/// What PHPUnit's placeholder `%c` stands for (its own list; PCRE's `\d` and `\s` are
/// ASCII, as here).
fn placeholder(c: char) -> Option<&'static str> {
    Some(match c {
        '%' => "%",
        'e' => "/",
        's' => r"[^\r\n]+",
        'S' => r"[^\r\n]*",
        'a' => ".+",
        'A' => ".*",
        'w' => r"[ \t\n\r\x0B\x0C]*",
        'i' => "[+-]?[0-9]+",
        'd' => "[0-9]+",
        'x' => "[0-9a-fA-F]+",
        'f' => r"[+-]?\.?[0-9]+\.?[0-9]*(?:[Ee][+-]?[0-9]+)?",
        'c' => ".",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_match_what_phpunit_says_they_do() {
        assert!(matches("run %d done", "run 12 done\n"));
        assert!(!matches("run %d done", "run x done"));
        assert!(matches("took %fs", "took 1.5e3s"));
        assert!(matches("at %s\nend", "at 2024-01-01 12:00\nend"));
        assert!(!matches("at %s end", "at \nx end"), "%s stays on its line");
        assert!(matches("%a", "anything\nat all"));
        assert!(!matches("x%ay", "xy"), "%a is one character or more");
        assert!(matches("x%Ay", "xy"));
        assert!(matches("id %x.", "id 0aF."));
        assert!(matches("n=%i", "n=-3"));
        assert!(matches("a%wb", "a \t b"));
        assert!(matches("%c", "z"));
        assert!(matches("path %e", "path /"));
        assert!(matches("100%% of %d", "100% of 3"));
        assert!(!matches("100%% of %d", "100%% of 3"));
    }

    #[test]
    fn both_texts_are_trimmed_and_the_rest_is_literal() {
        assert!(matches("\n  hello (world) [x]*  \n", "hello (world) [x]*"));
        assert!(
            !matches("hello", "hello world"),
            "the whole output must match"
        );
        assert!(!matches("a.c %d", "abc 1"), "a dot is a dot");
        assert!(matches("line\r\nnext %d", "line\nnext 2\r\n"));
        assert!(
            matches("50% off", "50% off"),
            "% before another letter is literal"
        );
    }
}
