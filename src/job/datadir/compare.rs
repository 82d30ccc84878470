//! `out/` against what the case expects: the same names (those starting with `.`, as
//! `.gitkeep`, left out), tables and files byte for byte, manifests and other `.json` files
//! as JSON (key order and whitespace do not matter). At the top of `out/`, only `tables/`,
//! `files/` and what the expectation holds are compared: a `state.json` the case does not
//! expect is no difference (keboola.datadirtest compares only tables and files).
//!
//! Both trees are walked from directory handles without following links: `out/` is the
//! container's (berth's copy of it holds regular files and directories only), and a link
//! in the expectation is reported, never followed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::confined::{ConfinedError, Dir, Kind};

/// What is read of a file to compare it whole; larger ones are compared as streams.
const MAX_READ_BYTES: u64 = 64 << 20;
/// The longest diff shown of one file, in lines.
const MAX_DIFF_LINES: usize = 80;
/// What is always compared at the top of `out/`.
const ALWAYS: [&str; 2] = ["tables", "files"];

/// The differences between `expected` (`None`: no table and no file) and the copy of
/// `out/` in `actual`, each described for the operator; none when they match.
pub(super) fn differences(
    expected: Option<&Path>,
    actual: &Path,
) -> Result<Vec<String>, ConfinedError> {
    let exp_root = expected.map(Dir::open).transpose()?;
    let act_root = Dir::open(actual)?;
    let exp = match &exp_root {
        Some(root) => listing(root)?,
        None => BTreeMap::new(),
    };
    let act = listing(&act_root)?;
    let compared = |p: &Path| {
        let top = p.components().next().map(|c| c.as_os_str());
        top.is_some_and(|t| ALWAYS.iter().any(|a| t == *a) || exp.contains_key(Path::new(t)))
    };
    let mut found = Vec::new();
    let mut paths: Vec<&PathBuf> = exp.keys().chain(act.keys()).collect();
    paths.sort();
    paths.dedup();
    // What is below a directory only one side has is not listed again.
    let mut one_sided: Vec<&PathBuf> = Vec::new();
    for path in paths {
        if one_sided.iter().any(|d| path.starts_with(d)) {
            continue;
        }
        let shown = Path::new("out").join(path).display().to_string();
        match (exp.get(path), act.get(path)) {
            (Some(_), None) => {
                found.push(format!("only in the expectation: {shown}"));
                one_sided.push(path);
            }
            (None, Some(_)) if ALWAYS.iter().any(|a| path == Path::new(a)) => {}
            (None, Some(_)) if compared(path) => {
                found.push(format!("only in the output: {shown}"));
                one_sided.push(path);
            }
            (Some(Kind::File), Some(Kind::File)) => {
                if let Some(e) = &exp_root {
                    found.extend(compare_file(e, &act_root, path)?);
                }
            }
            (Some(Kind::Dir), Some(Kind::Dir)) | (None, Some(_)) | (None, None) => {}
            (Some(e), Some(a)) => found.push(format!(
                "{shown} is {e} in the expectation and {a} in the output (only regular files \
                 and directories are compared)"
            )),
        }
    }
    Ok(found)
}

/// Every entry below `root` whose name does not start with `.`, with its kind.
fn listing(root: &Dir) -> Result<BTreeMap<PathBuf, Kind>, ConfinedError> {
    let mut out = BTreeMap::new();
    walk(root, Path::new(""), 0, &mut out)?;
    Ok(out)
}

fn walk(
    dir: &Dir,
    rel: &Path,
    depth: usize,
    out: &mut BTreeMap<PathBuf, Kind>,
) -> Result<(), ConfinedError> {
    for entry in dir.entries()? {
        if entry.name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = rel.join(&entry.name);
        if entry.kind == Kind::Dir && depth < crate::mapping::keep::MAX_DEPTH {
            walk(&dir.open_dir(&entry.name)?, &path, depth + 1, out)?;
        }
        out.insert(path, entry.kind);
    }
    Ok(())
}

/// How the file `rel` differs between the two trees, if it does.
fn compare_file(exp: &Dir, act: &Dir, rel: &Path) -> Result<Option<String>, ConfinedError> {
    let shown = Path::new("out").join(rel);
    let (e, a) = match (
        exp.read_to_end(rel, MAX_READ_BYTES),
        act.read_to_end(rel, MAX_READ_BYTES),
    ) {
        (Ok(e), Ok(a)) => (e, a),
        (Err(ConfinedError::TooLarge { .. }), _) | (_, Err(ConfinedError::TooLarge { .. })) => {
            let same = same_stream(exp.open_file(rel)?, act.open_file(rel)?).map_err(|source| {
                ConfinedError::Io {
                    path: act.path().join(rel),
                    source,
                }
            })?;
            return Ok(
                (!same).then(|| format!("{} differs (too large to show how)", shown.display()))
            );
        }
        (Err(e), _) | (_, Err(e)) => return Err(e),
    };
    if e == a {
        return Ok(None);
    }
    Ok(describe(rel, &e, &a))
}

/// Whether two files hold the same bytes, read a chunk at a time.
fn same_stream(mut a: File, mut b: File) -> io::Result<bool> {
    let (mut x, mut y) = (vec![0; 1 << 16], vec![0; 1 << 16]);
    loop {
        let n = read_full(&mut a, &mut x)?;
        let m = read_full(&mut b, &mut y)?;
        if n != m || x[..n] != y[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the file ends.
fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// How `expected` and `actual` (the file `rel`, not the same bytes) differ: nothing for
/// JSON that is the same JSON, else a unified diff (of JSON as pretty-printed).
fn describe(rel: &Path, expected: &[u8], actual: &[u8]) -> Option<String> {
    let shown = Path::new("out").join(rel).display().to_string();
    let json = matches!(
        rel.extension().and_then(|e| e.to_str()),
        Some("json" | "manifest")
    );
    if json {
        let parse = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).ok();
        if let (Some(e), Some(a)) = (parse(expected), parse(actual)) {
            if e == a {
                return None;
            }
            let pretty =
                |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default();
            return Some(file_diff(&shown, &pretty(&e), &pretty(&a), " (as JSON)"));
        }
    }
    Some(
        match (std::str::from_utf8(expected), std::str::from_utf8(actual)) {
            // A diff of lines would show no difference.
            (Ok(e), Ok(a)) if e.replace("\r\n", "\n") == a.replace("\r\n", "\n") => {
                let ends = |t: &str| match t.contains("\r\n") {
                    true => "\\r\\n",
                    false => "\\n",
                };
                format!(
                    "{shown} differs in its line ends only: {} expected, {} in the output",
                    ends(e),
                    ends(a)
                )
            }
            (Ok(e), Ok(a)) => file_diff(&shown, e, a, ""),
            _ => format!(
                "{shown} differs: {} bytes expected, {} in the output (not text)",
                expected.len(),
                actual.len()
            ),
        },
    )
}

/// `title`, then a unified diff of two texts under their `headers`, cut at
/// [`MAX_DIFF_LINES`].
pub(super) fn diff(title: &str, headers: (&str, &str), expected: &str, actual: &str) -> String {
    let text = similar::TextDiff::from_lines(expected, actual)
        .unified_diff()
        .context_radius(2)
        .header(headers.0, headers.1)
        .to_string();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = format!("{title}\n");
    out.push_str(&lines[..lines.len().min(MAX_DIFF_LINES)].join("\n"));
    if lines.len() > MAX_DIFF_LINES {
        let more = lines.len() - MAX_DIFF_LINES;
        out.push_str(&format!("\n[{more} more lines of the diff]"));
    }
    out
}

/// A diff of the file `shown` (`out/…`).
fn file_diff(shown: &str, expected: &str, actual: &str, how: &str) -> String {
    let headers = (format!("expected/data/{shown}"), shown);
    diff(
        &format!("{shown} differs{how}:"),
        (&headers.0, headers.1),
        expected,
        actual,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for dir in ALWAYS {
            fs::create_dir_all(d.path().join(dir)).unwrap();
        }
        for (path, text) in files {
            let p = d.path().join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        }
        d
    }

    fn diffs(exp: &tempfile::TempDir, act: &tempfile::TempDir) -> Vec<String> {
        differences(Some(exp.path()), act.path()).unwrap()
    }

    #[test]
    fn equal_trees_match_whatever_dot_files_they_hold() {
        let exp = tree(&[("tables/t.csv", "a\n1\n"), ("files/.gitkeep", "")]);
        let act = tree(&[("tables/t.csv", "a\n1\n"), ("tables/.hidden", "x")]);
        assert!(diffs(&exp, &act).is_empty(), "{:?}", diffs(&exp, &act));
    }

    #[test]
    fn json_is_compared_as_json() {
        let exp = tree(&[("tables/t.csv.manifest", r#"{"a": 1, "b": [1, 2]}"#)]);
        let act = tree(&[("tables/t.csv.manifest", "{\n  \"b\":[1,2],\"a\":1}\n")]);
        assert!(diffs(&exp, &act).is_empty());
        let act = tree(&[("tables/t.csv.manifest", r#"{"a": 2, "b": [1, 2]}"#)]);
        let d = diffs(&exp, &act);
        assert_eq!(d.len(), 1);
        assert!(
            d[0].starts_with("out/tables/t.csv.manifest differs (as JSON):"),
            "{}",
            d[0]
        );
        assert!(d[0].contains("-  \"a\": 1,\n+  \"a\": 2,"), "{}", d[0]);
    }

    #[test]
    fn tables_differ_byte_for_byte_with_a_diff() {
        let exp = tree(&[("tables/t.csv", "id,v\n1,10\n2,20\n")]);
        let act = tree(&[("tables/t.csv", "id,v\n1,10\n2,21\n")]);
        let d = diffs(&exp, &act);
        assert_eq!(d.len(), 1);
        assert!(
            d[0].contains("--- expected/data/out/tables/t.csv\n+++ out/tables/t.csv"),
            "{}",
            d[0]
        );
        assert!(d[0].contains("\n-2,20\n+2,21"), "{}", d[0]);
        let act = tree(&[("tables/t.csv", "id,v\r\n1,10\r\n2,20\r\n")]);
        assert_eq!(
            diffs(&exp, &act),
            ["out/tables/t.csv differs in its line ends only: \\n expected, \\r\\n in the output"],
            "line ends are bytes too"
        );
    }

    #[test]
    fn missing_and_extra_entries_are_named() {
        let exp = tree(&[("tables/a.csv", "x\n"), ("state.json", "{}")]);
        let act = tree(&[
            ("tables/b.csv", "x\n"),
            ("files/f.txt", "y"),
            ("other.txt", "z"),
        ]);
        assert_eq!(
            diffs(&exp, &act),
            vec![
                "only in the output: out/files/f.txt",
                "only in the expectation: out/state.json",
                "only in the expectation: out/tables/a.csv",
                "only in the output: out/tables/b.csv",
            ]
        );
    }

    #[test]
    fn without_an_expectation_no_table_and_no_file_is_expected() {
        let act = tree(&[("state.json", "{}")]);
        assert!(differences(None, act.path()).unwrap().is_empty());
        let act = tree(&[("tables/t.csv", "x")]);
        assert_eq!(
            differences(None, act.path()).unwrap(),
            vec!["only in the output: out/tables/t.csv"]
        );
    }

    #[test]
    fn a_link_in_the_expectation_is_reported_not_followed() {
        let exp = tree(&[]);
        std::os::unix::fs::symlink("/etc/passwd", exp.path().join("tables/t.csv")).unwrap();
        let act = tree(&[("tables/t.csv", "x")]);
        let d = diffs(&exp, &act);
        assert_eq!(d.len(), 1);
        assert!(
            d[0].starts_with("out/tables/t.csv is a symlink in the expectation"),
            "{}",
            d[0]
        );
    }
}
