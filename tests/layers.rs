//! The layers point one way, down (README, "How it works"): `cli` → `job` → `image`,
//! `bundle`, `runtime`, `mapping` → `storage`, with `contract` a leaf every layer may read
//! and `host` the kernel seam at the bottom. This test reads every `crate::…` path in
//! `src/` and fails the build when a module reaches a module it may not — so the rule the
//! module docs state stays true.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// What each top-level module of the library may use. Anything not listed is refused.
const ALLOWED: &[(&str, &[&str])] = &[
    ("util", &[]),
    ("interrupt", &[]),
    ("contract", &[]),
    ("confined", &["util"]),
    ("host", &["util"]),
    ("storage", &["contract", "util", "interrupt"]),
    (
        "image",
        &["contract", "host", "util", "interrupt", "confined"],
    ),
    ("bundle", &["contract", "host", "image", "util", "confined"]),
    // runtime measures what a container writes (its disk cap) with confined's walker.
    (
        "runtime",
        &["contract", "host", "util", "interrupt", "confined"],
    ),
    ("secrets", &["contract", "util"]),
    (
        "mapping",
        &["contract", "storage", "util", "interrupt", "confined"],
    ),
    (
        "job",
        &[
            "contract",
            "host",
            "image",
            "bundle",
            "runtime",
            "mapping",
            "storage",
            "secrets",
            "util",
            "interrupt",
            "confined",
        ],
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("src is readable").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`src/job/row.rs` → `job`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next().expect("a component");
    first
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_owned()
}

/// Every module named after `crate::` in code (comments are skipped), with `crate::{a, b}`
/// groups expanded.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    found.insert(head(item.trim()));
                }
            } else {
                found.insert(head(rest));
            }
        }
    }
    found.retain(|m| !m.is_empty());
    found
}

fn head(path: &str) -> String {
    path.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

#[test]
fn modules_only_use_the_layers_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        if matches!(module.as_str(), "lib" | "main" | "cli") {
            continue; // the crate root and the binary sit on top of everything
        }
        let Some(may) = allowed.get(module.as_str()) else {
            violations.push(format!(
                "{}: module {module:?} has no place in ALLOWED",
                file.display()
            ));
            continue;
        };
        let text = fs::read_to_string(file).expect("readable");
        // A module's unit tests may borrow helpers from anywhere: they ship in no layer.
        let text = text
            .split("#[cfg(test)]\nmod tests")
            .next()
            .unwrap_or(&text);
        for used in crate_paths(text) {
            if used != module && !may.contains(&used.as_str()) {
                violations.push(format!("{}: {module} uses crate::{used}", file.display()));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "layers broken:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_allowed_graph_itself_has_no_cycle() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    // Depth-first search with a visiting mark finds any back edge.
    fn visit<'a>(
        m: &'a str,
        g: &BTreeMap<&'a str, &'a [&'a str]>,
        state: &mut BTreeMap<&'a str, bool>,
    ) -> Result<(), String> {
        match state.get(m) {
            Some(true) => return Err(format!("cycle through {m}")),
            Some(false) => return Ok(()),
            None => {}
        }
        state.insert(m, true);
        for next in g.get(m).copied().unwrap_or(&[]) {
            visit(next, g, state)?;
        }
        state.insert(m, false);
        Ok(())
    }
    let mut state = BTreeMap::new();
    for m in allowed.keys() {
        visit(m, &allowed, &mut state).expect("the layer table is acyclic");
    }
}

#[test]
fn the_checker_sees_grouped_and_plain_paths_but_not_comments() {
    let text = "use crate::{storage::X, util};\nlet a = crate::host::f();\n// crate::job\n";
    let found: Vec<String> = crate_paths(text).into_iter().collect();
    assert_eq!(found, vec!["host", "storage", "util"]);
}
