//! What a case folder holds, read as keboola.datadirtest (Python) and keboola/datadir-tests
//! (PHP) read it:
//!
//! ```text
//! CASE/source/data/          the data folder the component starts from (config.json, in/)
//! CASE/expected/data/out/    what out/ must hold afterwards
//! CASE/expected-code         0, 1 or 2 (PHP); without it 0
//! CASE/expected-stdout       a PHPUnit format the whole stdout must match (PHP)
//! CASE/expected-stderr       the same for stderr (PHP)
//! CHAIN/STEP/source/…        a chain (Python): steps in name order, each a case, each
//!                            starting from the state the one before left
//! ```
//!
//! Folders whose names start with `_` (Python) or `.` are no cases. Without
//! `expected/data/out`, out/ is compared with nothing (no table, no file: Python) — unless
//! `expected-code` is there, which then is the only expectation (PHP).

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The most of an `expected-*` file or a `config.json` that is read.
const MAX_TEXT_BYTES: u64 = 16 << 20;

/// The scripts keboola.datadirtest runs on the host around a case; berth runs none.
const HOOKS: [&str; 3] = ["set_up.py", "post_run.py", "tear_down.py"];

/// One case: a folder of the cases folder, one step or a chain of them.
#[derive(Debug)]
pub(super) struct Case {
    pub name: String,
    pub steps: Vec<Step>,
}

/// One run of the component and what it must end with.
#[derive(Debug)]
pub(super) struct Step {
    /// The step's folder name in a chain; empty for a case of one step.
    pub name: String,
    /// `source/data`.
    pub source: PathBuf,
    pub code: i32,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub out: ExpectedOut,
}

/// What `out/` is compared with.
#[derive(Debug)]
pub(super) enum ExpectedOut {
    /// `expected/data/out`.
    Folder(PathBuf),
    /// No table and no file (Python, where the folder is missing).
    Empty,
    /// Not compared: only `expected-code` says how the run must end (PHP).
    Unchecked,
}

/// The case folders of `dir`, in name order.
pub(super) fn discover(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut cases = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let hidden = name.to_string_lossy().starts_with(['_', '.']);
        if !hidden && entry.path().is_dir() {
            cases.push(entry.path());
        }
    }
    cases.sort();
    Ok(cases)
}

/// Reads the case in `dir`; the error says what is wrong with it.
pub(super) fn load(dir: &Path) -> Result<Case, String> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if dir.join("source").is_dir() {
        let step = load_step(dir, String::new())?;
        return Ok(Case {
            name,
            steps: vec![step],
        });
    }
    let chained = discover(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    if chained.is_empty() {
        return Err(format!(
            "{} has no source/data folder, nor folders of chained steps",
            dir.display()
        ));
    }
    let steps = chained
        .iter()
        .map(|d| {
            let step = d.file_name().map(|n| n.to_string_lossy().into_owned());
            load_step(d, step.unwrap_or_default())
        })
        .collect::<Result<_, _>>()?;
    Ok(Case { name, steps })
}

fn load_step(dir: &Path, name: String) -> Result<Step, String> {
    let source = dir.join("source/data");
    if !source.is_dir() {
        return Err(format!("{} is not a folder", source.display()));
    }
    for hook in HOOKS {
        if dir.join("source").join(hook).exists() {
            tracing::warn!(
                "{} is a keboola.datadirtest hook run on the host: berth does not run it",
                dir.join("source").join(hook).display()
            );
        }
    }
    let code = match read_text(&dir.join("expected-code"))? {
        Some(text) => Some(expected_code(&text)?),
        None => None,
    };
    let expected = dir.join("expected/data/out");
    let out = match (expected.is_dir(), code) {
        (true, _) => ExpectedOut::Folder(expected),
        (false, Some(_)) => ExpectedOut::Unchecked,
        (false, None) => ExpectedOut::Empty,
    };
    Ok(Step {
        name,
        source,
        code: code.unwrap_or(0),
        stdout: read_text(&dir.join("expected-stdout"))?,
        stderr: read_text(&dir.join("expected-stderr"))?,
        out,
    })
}

/// The exit code `expected-code` holds: 0, 1 or 2, as keboola/datadir-tests allows.
fn expected_code(text: &str) -> Result<i32, String> {
    match text.trim() {
        "0" => Ok(0),
        "1" => Ok(1),
        "2" => Ok(2),
        other => Err(format!(
            "expected-code holds {other:?}: the possible codes are 0, 1 and 2"
        )),
    }
}

/// The text of `path` (not followed if a link), or `None` where there is no such file.
fn read_text(path: &Path) -> Result<Option<String>, String> {
    let Some(parent) = path.parent() else {
        return Ok(None);
    };
    let Some(name) = path.file_name() else {
        return Ok(None);
    };
    let dir = crate::confined::Dir::open(parent).map_err(|e| crate::util::chain(&e))?;
    match dir.read_to_end(name, MAX_TEXT_BYTES) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(crate::util::chain(&e)),
    }
}

/// The case's `config.json` as the component gets it, if there is one: `{{env.NAME}}`
/// replaced in its text (Python), then every string value that is exactly
/// `%env(TYPE:NAME)%` replaced by the variable as TYPE (PHP). A variable that is not set
/// fails the case, as in both.
pub(super) fn config(source: &Path) -> Result<Option<Value>, String> {
    let Some(text) = read_text(&source.join("config.json"))? else {
        return Ok(None);
    };
    let text = replace_braces(&text, &|name| std::env::var(name).ok())?;
    let mut config: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not JSON: {e}", source.join("config.json").display()))?;
    replace_values(&mut config, &|name| std::env::var(name).ok())?;
    Ok(Some(config))
}

/// `{{env.NAME}}` in `text` replaced by the variable NAME (which must be set and not empty,
/// as keboola.datadirtest wants it).
fn replace_braces(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    const OPEN: &str = "{{env.";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        let after = &rest[start + OPEN.len()..];
        let Some(end) = after
            .find("}}")
            .filter(|&e| e > 0 && !after[..e].contains('\n'))
        else {
            out.push_str(&rest[..start + OPEN.len()]);
            rest = after;
            continue;
        };
        let name = &after[..end];
        let value = env(name).filter(|v| !v.is_empty()).ok_or_else(|| {
            format!(
                "environment variable {name} that config.json names ({{{{env.{name}}}}}) is not set"
            )
        })?;
        out.push_str(&rest[..start]);
        out.push_str(&value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Every string value of `value` that is exactly `%env(TYPE:NAME)%` replaced by the
/// variable NAME as TYPE: string, int, float or bool (keboola/datadir-tests).
fn replace_values(value: &mut Value, env: &dyn Fn(&str) -> Option<String>) -> Result<(), String> {
    match value {
        Value::String(s) => {
            if let Some((kind, name)) = env_placeholder(s) {
                let raw = env(name).ok_or_else(|| format!("Env variable \"{name}\" not found."))?;
                *value = typed(kind, name, &raw)?;
            }
        }
        Value::Array(items) => {
            for item in items {
                replace_values(item, env)?;
            }
        }
        Value::Object(map) => {
            for item in map.values_mut() {
                replace_values(item, env)?;
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

/// TYPE and NAME of `%env(TYPE:NAME)%`, each of letters, digits, `_` and `-`.
fn env_placeholder(s: &str) -> Option<(&str, &str)> {
    let inner = s.strip_prefix("%env(")?.strip_suffix(")%")?;
    let (kind, name) = inner.split_once(':')?;
    let word = |w: &str| {
        !w.is_empty()
            && w.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
    };
    (word(kind) && word(name)).then_some((kind, name))
}

/// `raw` as PHP's conversions make it of TYPE `kind`.
fn typed(kind: &str, name: &str, raw: &str) -> Result<Value, String> {
    Ok(match kind.to_ascii_lowercase().as_str() {
        "string" => Value::String(raw.to_owned()),
        "int" => Value::from(leading_number(raw).parse::<i64>().unwrap_or(0)),
        "float" => Value::from(leading_number(raw).parse::<f64>().unwrap_or(0.0)),
        "bool" => {
            let v = raw.to_ascii_lowercase();
            Value::Bool(!matches!(v.as_str(), "" | "f" | "false" | "no" | "0"))
        }
        _ => {
            return Err(format!(
                "Unexpected type \"{kind}\" of the env variable \"{name}\"."
            ));
        }
    })
}

/// The number `raw` starts with (after blanks), as PHP's `intval`/`floatval` read it.
fn leading_number(raw: &str) -> &str {
    let s = raw.trim_start();
    let end = s
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || ((c == '-' || c == '+') && i == 0)))
        .map_or(s.len(), |(i, _)| i);
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("db.example".into()),
            "PORT" => Some("5432".into()),
            "ON" => Some("yes".into()),
            "OFF" => Some("false".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn braces_are_replaced_in_the_text() {
        let text = r#"{"host": "{{env.HOST}}", "port": {{env.PORT}}, "x": "{{env."}"#;
        assert_eq!(
            replace_braces(text, &env).unwrap(),
            r#"{"host": "db.example", "port": 5432, "x": "{{env."}"#
        );
        let e = replace_braces("{{env.NOPE}}", &env).unwrap_err();
        assert!(e.contains("NOPE") && e.contains("not set"), "{e}");
        assert!(replace_braces("{{env.EMPTY}}", &env).is_err());
    }

    #[test]
    fn whole_string_placeholders_are_replaced_with_their_type() {
        let mut v = json!({
            "a": "%env(string:HOST)%",
            "b": ["%env(int:PORT)%", "%env(float:PORT)%"],
            "c": {"on": "%env(bool:ON)%", "off": "%env(bool:OFF)%"},
            "d": "prefix %env(string:HOST)%",
        });
        replace_values(&mut v, &env).unwrap();
        assert_eq!(
            v,
            json!({
                "a": "db.example",
                "b": [5432, 5432.0],
                "c": {"on": true, "off": false},
                "d": "prefix %env(string:HOST)%",
            })
        );
        let mut missing = json!("%env(string:NOPE)%");
        assert_eq!(
            replace_values(&mut missing, &env).unwrap_err(),
            "Env variable \"NOPE\" not found."
        );
        let mut odd = json!("%env(date:PORT)%");
        assert!(replace_values(&mut odd, &env).unwrap_err().contains("date"));
    }

    #[test]
    fn expected_codes_are_0_1_or_2() {
        assert_eq!(expected_code(" 1\n"), Ok(1));
        let e = expected_code("3").unwrap_err();
        assert_eq!(
            e,
            "expected-code holds \"3\": the possible codes are 0, 1 and 2"
        );
    }

    #[test]
    fn php_reads_numbers_from_their_start() {
        assert_eq!(leading_number(" 12abc"), "12");
        assert_eq!(leading_number("-3.5x"), "-3.5");
        assert_eq!(leading_number("x"), "");
    }
}
