//! The architecture of `src/`, checked by a real parser: the crate's modules point one way,
//! down (`docs/architecture.md`), and no file imports a file that imports it.
//!
//! Every production file reached from `src/lib.rs` and `src/main.rs` through `mod`
//! declarations is parsed with `syn`. A file depends on another when its code names an item
//! defined there: in a `use` (nested and multi-line groups included), in any path of an
//! expression, type or pattern, or in a path inside a macro's arguments (`tracing::info!(…,
//! crate::util::x(…))`). A `pub use` is an alias, followed to where the item is defined, so
//! a re-export cannot launder an edge. An inherent `impl T` in another file than `T`'s makes
//! `T`'s file depend on it (the two halves of the type need each other). Test code
//! (`#[cfg(test)]` items and files) ships in no layer and is left out.
//!
//! A `crate::`/`super::`/`self::` path the checker cannot resolve, a glob import, a
//! `#[path]` attribute or an `include!` of Rust in production code fail the test: what it
//! does not understand cannot fool it.

#![allow(
    clippy::too_many_lines,
    reason = "the 80-line rule is for berth's code; a test reads top to bottom"
)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::path::Path;

use proc_macro2::{Spacing, TokenStream, TokenTree};
use syn::visit::Visit;

/// What each top-level module of the library may use. Anything not listed is refused; the
/// crate root and the binary (`main.rs`, `cli`) sit on top of everything.
const ALLOWED: &[(&str, &[&str])] = &[
    ("util", &[]),
    ("interrupt", &[]),
    // The image cache's layout on disk: one owner of every path under it.
    ("layout", &["util"]),
    ("contract", &[]),
    ("confined", &["util"]),
    ("host", &["util"]),
    ("storage", &["contract", "util", "interrupt"]),
    (
        "image",
        &[
            "contract",
            "host",
            "util",
            "interrupt",
            "confined",
            "layout",
        ],
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

/// The parts of `src/image` and what each may use (the façade — `mod.rs`, `images.rs`,
/// `pull.rs` — uses every part): edges one way, as containerd cuts content, distribution
/// and snapshots apart.
const IMAGE_PARTS: &[(&str, &[&str])] = &[
    ("spec", &[]),
    ("content", &["spec"]),
    ("distribution", &["content", "spec"]),
    ("verify", &["spec"]),
    ("layers", &["content", "spec"]),
];

// ---------------------------------------------------------------------------------------
// The model: modules, what each defines and imports, and the edges between files.
// ---------------------------------------------------------------------------------------

/// A module: a file, or an inline `mod x { … }` inside one.
#[derive(Debug, Default)]
struct Module {
    file: String,
    parent: Option<usize>,
    /// The crate root this module belongs to (a module id).
    root: usize,
    children: BTreeMap<String, usize>,
    /// Items defined here (functions, types, constants, traits, macros).
    defs: BTreeSet<String>,
    /// Names imported here, and the path each stands for.
    uses: BTreeMap<String, Vec<String>>,
}

/// One place a file names another's item.
#[derive(Debug, Clone)]
struct Use {
    /// `file:line` where the path is written.
    at: String,
    path: String,
    /// An inherent impl of a type defined in the other file (the edge points at the impl).
    inherent: bool,
}

impl std::fmt::Display for Use {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.inherent {
            write!(f, "{} adds methods to {}", self.at, self.path)
        } else {
            write!(f, "{} uses {}", self.at, self.path)
        }
    }
}

#[derive(Debug, Default)]
struct Analysis {
    modules: Vec<Module>,
    /// The files of the library (reached from `src/lib.rs`), by their path.
    library: BTreeSet<String>,
    /// from file → to file → where.
    edges: BTreeMap<String, BTreeMap<String, Vec<Use>>>,
    /// What the checker refuses to guess about.
    problems: Vec<String>,
}

type Sources = BTreeMap<String, String>;

/// Whether `attrs` include `#[cfg(test)]`.
fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Ident>()
                .is_ok_and(|ident| ident == "test")
    })
}

fn segments(path: &syn::Path) -> Vec<String> {
    path.segments.iter().map(|s| s.ident.to_string()).collect()
}

fn line_of(span: proc_macro2::Span) -> usize {
    span.start().line
}

impl Analysis {
    fn of(sources: &Sources) -> Analysis {
        let mut a = Analysis::default();
        let mut parsed = BTreeMap::new();
        for root in ["src/lib.rs", "src/main.rs"] {
            if sources.contains_key(root) {
                let id = a.modules.len();
                a.modules.push(Module {
                    file: root.to_owned(),
                    root: id,
                    ..Module::default()
                });
                a.load_file(sources, &mut parsed, id);
            }
        }
        a.library = a
            .modules
            .iter()
            .filter(|m| m.root == 0)
            .map(|m| m.file.clone())
            .collect();
        for (id, module) in a.modules.iter().enumerate() {
            if module
                .parent
                .is_none_or(|p| a.modules[p].file != module.file)
            {
                // The file's top module: its items, inline modules walked from there.
                let file: &syn::File = &parsed[&module.file];
                let mut v = Walker {
                    analysis: &a,
                    module: id,
                    edges: Vec::new(),
                    problems: Vec::new(),
                };
                v.items(&file.items);
                let (edges, problems) = (v.edges, v.problems);
                a.problems.extend(problems);
                for (from, to, u) in edges {
                    if from != to {
                        a.edges
                            .entry(from)
                            .or_default()
                            .entry(to)
                            .or_default()
                            .push(u);
                    }
                }
            }
        }
        a
    }

    /// Parses the file of module `id` and declares what it holds.
    fn load_file(
        &mut self,
        sources: &Sources,
        parsed: &mut BTreeMap<String, syn::File>,
        id: usize,
    ) {
        let path = self.modules[id].file.clone();
        let Some(text) = sources.get(&path) else {
            self.problems
                .push(format!("{path}: declared, but no such file"));
            return;
        };
        let file = match syn::parse_file(text) {
            Ok(f) => f,
            Err(e) => {
                self.problems.push(format!("{path}: cannot parse: {e}"));
                return;
            }
        };
        let dir = module_dir(&path);
        self.declare(sources, parsed, id, &file.items, &dir);
        parsed.insert(path, file);
    }

    /// Declares the items of module `id` (in directory `dir` for its `mod x;` children).
    fn declare(
        &mut self,
        sources: &Sources,
        parsed: &mut BTreeMap<String, syn::File>,
        id: usize,
        items: &[syn::Item],
        dir: &str,
    ) {
        let file = self.modules[id].file.clone();
        for item in items {
            if let Some(name) = defined_name(item) {
                self.modules[id].defs.insert(name);
            }
            match item {
                syn::Item::Use(u) if !is_test(&u.attrs) => {
                    let mut found = Vec::new();
                    use_leaves(&u.tree, &mut Vec::new(), &mut found);
                    for (name, path) in found {
                        match name {
                            Some(n) if n != "_" => {
                                self.modules[id].uses.insert(n, path);
                            }
                            Some(_) => {}
                            None => self.problems.push(format!(
                                "{file}:{}: a glob import ({}::*): name what is used",
                                line_of(u.use_token.span),
                                path.join("::")
                            )),
                        }
                    }
                }
                syn::Item::Mod(m) if !is_test(&m.attrs) => {
                    if m.attrs.iter().any(|a| a.path().is_ident("path")) {
                        self.problems
                            .push(format!("{file}: module {} has a #[path]", m.ident));
                    }
                    let child = self.modules.len();
                    let name = m.ident.to_string();
                    let child_dir = format!("{dir}{name}/");
                    let child_file = match &m.content {
                        Some(_) => file.clone(),
                        None => {
                            let flat = format!("{dir}{name}.rs");
                            if sources.contains_key(&flat) {
                                flat
                            } else {
                                format!("{dir}{name}/mod.rs")
                            }
                        }
                    };
                    self.modules.push(Module {
                        file: child_file,
                        parent: Some(id),
                        root: self.modules[id].root,
                        ..Module::default()
                    });
                    self.modules[id].children.insert(name, child);
                    match &m.content {
                        Some((_, inner)) => self.declare(sources, parsed, child, inner, &child_dir),
                        None => self.load_file(sources, parsed, child),
                    }
                }
                syn::Item::Macro(m) if m.mac.path.is_ident("include") => {
                    self.problems
                        .push(format!("{file}: include! of Rust source"));
                }
                _ => {}
            }
        }
    }

    /// The module `segs` names, or the file that defines the item it names, seen from
    /// module `from`. `Ok(None)`: outside the crate (std, a dependency, a local variable).
    fn resolve(
        &self,
        from: usize,
        segs: &[String],
        depth: usize,
    ) -> Result<Option<Target>, String> {
        let Some(first) = segs.first() else {
            return Ok(Some(Target::Module));
        };
        if depth > 16 {
            return Err("re-exports go round in a circle".to_owned());
        }
        let (start, rest) = match first.as_str() {
            "crate" => (self.modules[from].root, &segs[1..]),
            "self" => (from, &segs[1..]),
            "super" => {
                let mut at = from;
                let mut rest = segs;
                while rest.first().is_some_and(|s| s == "super") {
                    at = self.modules[at]
                        .parent
                        .ok_or("super:: above the crate root")?;
                    rest = &rest[1..];
                }
                (at, rest)
            }
            "Self" => return Ok(None),
            name => {
                let m = &self.modules[from];
                if !m.children.contains_key(name)
                    && !m.defs.contains(name)
                    && !m.uses.contains_key(name)
                {
                    return Ok(None);
                }
                (from, segs)
            }
        };
        self.walk(start, rest, depth)
    }

    fn walk(&self, at: usize, rest: &[String], depth: usize) -> Result<Option<Target>, String> {
        let Some(name) = rest.first() else {
            return Ok(Some(Target::Module));
        };
        let m = &self.modules[at];
        if let Some(&child) = m.children.get(name) {
            return self.walk(child, &rest[1..], depth);
        }
        if m.defs.contains(name) {
            return Ok(Some(Target::Item(at)));
        }
        if let Some(path) = m.uses.get(name) {
            let mut full = path.clone();
            full.extend_from_slice(&rest[1..]);
            return match self.resolve(at, &full, depth + 1)? {
                Some(t) => Ok(Some(t)),
                // An import of something outside the crate.
                None => Ok(None),
            };
        }
        Err(format!("{name} is not in {}", m.file))
    }

    /// The top-level module of a library file (`src/job/row.rs` → `job`).
    fn layer_of(file: &str) -> String {
        let rel = file.trim_start_matches("src/");
        let first = rel.split('/').next().unwrap_or(rel);
        first.trim_end_matches(".rs").to_owned()
    }
}

/// What a path names inside the crate: a module, or an item defined in a module.
#[derive(Debug, Clone, Copy)]
enum Target {
    Module,
    Item(usize),
}

/// Where the files of a module's `mod x;` children are.
fn module_dir(file: &str) -> String {
    let (dir, name) = file.rsplit_once('/').unwrap_or(("", file));
    if matches!(name, "mod.rs" | "lib.rs" | "main.rs") {
        format!("{dir}/")
    } else {
        format!("{dir}/{}/", name.trim_end_matches(".rs"))
    }
}

/// The name an item defines in its module's namespace, if any.
fn defined_name(item: &syn::Item) -> Option<String> {
    let ident = match item {
        syn::Item::Const(i) if !is_test(&i.attrs) => &i.ident,
        syn::Item::Enum(i) if !is_test(&i.attrs) => &i.ident,
        syn::Item::Fn(i) if !is_test(&i.attrs) => &i.sig.ident,
        syn::Item::Static(i) if !is_test(&i.attrs) => &i.ident,
        syn::Item::Struct(i) if !is_test(&i.attrs) => &i.ident,
        syn::Item::Trait(i) if !is_test(&i.attrs) => &i.ident,
        syn::Item::Type(i) if !is_test(&i.attrs) => &i.ident,
        syn::Item::Union(i) if !is_test(&i.attrs) => &i.ident,
        syn::Item::Macro(i) if !is_test(&i.attrs) => i.ident.as_ref()?,
        _ => return None,
    };
    Some(ident.to_string())
}

/// Every leaf of a use tree: the name it brings in (`None` for a glob) and its full path.
fn use_leaves(
    tree: &syn::UseTree,
    prefix: &mut Vec<String>,
    out: &mut Vec<(Option<String>, Vec<String>)>,
) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            use_leaves(&p.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(n) => {
            let name = n.ident.to_string();
            if name == "self" {
                let last = prefix.last().cloned();
                out.push((last, prefix.clone()));
            } else {
                let mut path = prefix.clone();
                path.push(name.clone());
                out.push((Some(name), path));
            }
        }
        syn::UseTree::Rename(r) => {
            let mut path = prefix.clone();
            let name = r.ident.to_string();
            if name != "self" {
                path.push(name);
            }
            out.push((Some(r.rename.to_string()), path));
        }
        syn::UseTree::Glob(_) => out.push((None, prefix.clone())),
        syn::UseTree::Group(g) => {
            for t in &g.items {
                use_leaves(t, prefix, out);
            }
        }
    }
}

/// Walks one file's production code and records what each path in it names.
struct Walker<'a> {
    analysis: &'a Analysis,
    module: usize,
    /// (from file, to file, where)
    edges: Vec<(String, String, Use)>,
    problems: Vec<String>,
}

impl Walker<'_> {
    fn items(&mut self, items: &[syn::Item]) {
        for item in items {
            self.visit_item(item);
        }
    }

    fn file(&self) -> &str {
        &self.analysis.modules[self.module].file
    }

    /// Records the path `segs`, written at `line`. `strict`: it must resolve (it starts
    /// with `crate`, `super` or `self`, or is a `use` of this crate).
    fn record(&mut self, segs: &[String], line: usize, reexport: bool) {
        let shown = segs.join("::");
        let strict = matches!(
            segs.first().map(String::as_str),
            Some("crate" | "super" | "self")
        );
        match self.analysis.resolve(self.module, segs, 0) {
            Ok(Some(Target::Item(m))) if !reexport => {
                let from = self.file().to_owned();
                let to = self.analysis.modules[m].file.clone();
                let at = format!("{from}:{line}");
                let u = Use {
                    at,
                    path: shown,
                    inherent: false,
                };
                self.edges.push((from, to, u));
            }
            Ok(_) => {}
            Err(why) if strict => {
                let file = self.file().to_owned();
                self.problems
                    .push(format!("{file}:{line}: cannot resolve {shown}: {why}"));
            }
            Err(_) => {}
        }
    }

    /// Paths in a macro's tokens: `a::b::c` sequences not preceded by `::`.
    fn macro_tokens(&mut self, tokens: TokenStream) {
        let trees: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < trees.len() {
            match &trees[i] {
                TokenTree::Group(g) => {
                    self.macro_tokens(g.stream());
                    i += 1;
                }
                TokenTree::Ident(first) if !after_path_sep(&trees, i) => {
                    let mut segs = vec![first.to_string()];
                    let mut j = i + 1;
                    while is_path_sep(&trees, j) {
                        match trees.get(j + 2) {
                            Some(TokenTree::Ident(next)) => {
                                segs.push(next.to_string());
                                j += 3;
                            }
                            _ => break,
                        }
                    }
                    if segs.len() > 1 {
                        self.record(&segs, line_of(first.span()), false);
                    }
                    i = j;
                }
                _ => i += 1,
            }
        }
    }
}

fn is_path_sep(trees: &[TokenTree], j: usize) -> bool {
    matches!(
        (trees.get(j), trees.get(j + 1)),
        (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)))
            if a.as_char() == ':' && a.spacing() == Spacing::Joint && b.as_char() == ':'
    )
}

fn after_path_sep(trees: &[TokenTree], i: usize) -> bool {
    i >= 2 && is_path_sep(trees, i - 2)
}

impl<'ast> Visit<'ast> for Walker<'_> {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs = match item {
            syn::Item::Const(i) => &i.attrs,
            syn::Item::Enum(i) => &i.attrs,
            syn::Item::Fn(i) => &i.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Macro(i) => &i.attrs,
            syn::Item::Mod(i) => &i.attrs,
            syn::Item::Static(i) => &i.attrs,
            syn::Item::Struct(i) => &i.attrs,
            syn::Item::Trait(i) => &i.attrs,
            syn::Item::Type(i) => &i.attrs,
            syn::Item::Use(i) => &i.attrs,
            _ => return syn::visit::visit_item(self, item),
        };
        if !is_test(attrs) {
            syn::visit::visit_item(self, item);
        }
    }

    fn visit_impl_item(&mut self, item: &'ast syn::ImplItem) {
        let test = match item {
            syn::ImplItem::Fn(f) => is_test(&f.attrs),
            syn::ImplItem::Const(c) => is_test(&c.attrs),
            _ => false,
        };
        if !test {
            syn::visit::visit_impl_item(self, item);
        }
    }

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        // A `mod x;` is no edge; an inline module's items are walked as that module's.
        if let Some((_, items)) = &m.content {
            let outer = self.module;
            self.module = self.analysis.modules[outer].children[&m.ident.to_string()];
            self.items(items);
            self.module = outer;
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        let reexport = !matches!(u.vis, syn::Visibility::Inherited);
        let mut found = Vec::new();
        use_leaves(&u.tree, &mut Vec::new(), &mut found);
        for (_, path) in found {
            self.record(&path, line_of(u.use_token.span), reexport);
        }
    }

    fn visit_item_impl(&mut self, i: &'ast syn::ItemImpl) {
        // An inherent impl in another file than its type's: the type's file needs this one.
        if i.trait_.is_none()
            && let syn::Type::Path(t) = &*i.self_ty
            && let Ok(Some(Target::Item(m))) =
                self.analysis.resolve(self.module, &segments(&t.path), 0)
        {
            let here = self.file().to_owned();
            let there = self.analysis.modules[m].file.clone();
            let line = line_of(i.impl_token.span);
            let path = segments(&t.path).join("::");
            let at = format!("{here}:{line}");
            let inherent = true;
            self.edges.push((there, here, Use { at, path, inherent }));
        }
        syn::visit::visit_item_impl(self, i);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        if let Some(first) = p.segments.first() {
            self.record(&segments(p), line_of(first.ident.span()), false);
        }
        syn::visit::visit_path(self, p);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        self.visit_path(&m.path);
        self.macro_tokens(m.tokens.clone());
    }

    fn visit_attribute(&mut self, _: &'ast syn::Attribute) {
        // Attributes hold derives, docs and strings: no item of this crate.
    }
}

// ---------------------------------------------------------------------------------------
// The rules, as functions of an analysis (so that the self-tests run them on fixtures).
// ---------------------------------------------------------------------------------------

/// Library files that use a module their layer may not: `file:line: a uses b (path)`.
fn layering_violations(a: &Analysis, allowed: &[(&str, &[&str])]) -> Vec<String> {
    let allowed: BTreeMap<&str, &[&str]> = allowed.iter().copied().collect();
    let mut out = Vec::new();
    for (from, tos) in &a.edges {
        if !a.library.contains(from) || from == "src/lib.rs" {
            continue;
        }
        let layer = Analysis::layer_of(from);
        let Some(may) = allowed.get(layer.as_str()) else {
            out.push(format!("{from}: module {layer} has no place in ALLOWED"));
            continue;
        };
        for (to, uses) in tos {
            let used = Analysis::layer_of(to);
            if used == layer || may.contains(&used.as_str()) || !a.library.contains(to) {
                continue;
            }
            for u in uses.iter().filter(|u| !u.inherent) {
                out.push(format!("{}: {layer} uses {used} ({})", u.at, u.path));
            }
        }
    }
    out
}

/// The strongly connected components of the file graph with more than one file, each
/// sorted (Tarjan's algorithm).
fn file_cycles(a: &Analysis) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        edges: &'a BTreeMap<String, BTreeMap<String, Vec<Use>>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.edges.get(v).into_iter().flat_map(BTreeMap::keys) {
                if !self.index.contains_key(w.as_str()) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w.as_str()]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w.as_str()) {
                    let low = self.low[v].min(self.index[w.as_str()]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.out.push(component);
                }
            }
        }
    }
    let mut t = Tarjan {
        edges: &a.edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in a.edges.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out.sort();
    t.out
}

/// One circle through `component`, as `a.rs:LINE uses X → b.rs:LINE uses Y → …`.
fn describe_cycle(a: &Analysis, component: &[String]) -> String {
    let inside: BTreeSet<&str> = component.iter().map(String::as_str).collect();
    let start = component[0].as_str();
    // Breadth first from `start` back to it, inside the component.
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    let mut last = None;
    while let Some(v) = queue.pop_front() {
        for w in a.edges.get(v).into_iter().flat_map(BTreeMap::keys) {
            if w == start {
                last = Some(v);
                queue.clear();
                break;
            }
            if inside.contains(w.as_str()) && !came_from.contains_key(w.as_str()) {
                came_from.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    let mut path = vec![start];
    let mut at = last.unwrap_or(start);
    while at != start {
        path.push(at);
        at = came_from[at];
    }
    path[1..].reverse();
    path.push(start);
    let steps: Vec<String> = path
        .windows(2)
        .map(|w| a.edges[w[0]][w[1]][0].to_string())
        .collect();
    format!("{{{}}}\n    {}", component.join(", "), steps.join("\n  → "))
}

/// What the cycle rule says: every file cycle, with one circle through it.
fn cycle_violations(a: &Analysis) -> Vec<String> {
    file_cycles(a)
        .iter()
        .map(|c| format!("files import one another: {}", describe_cycle(a, c)))
        .collect()
}

/// Every `.rs` file under `dir`, by its path relative to the crate.
fn read_sources(crate_dir: &Path) -> Sources {
    fn walk(dir: &Path, crate_dir: &Path, out: &mut Sources) {
        for entry in fs::read_dir(dir).expect("src is readable").flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, crate_dir, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(crate_dir).expect("under the crate");
                let text = fs::read_to_string(&path).expect("readable");
                out.insert(rel.to_string_lossy().into_owned(), text);
            }
        }
    }
    let mut out = Sources::new();
    walk(&crate_dir.join("src"), crate_dir, &mut out);
    out
}

fn berth() -> Analysis {
    Analysis::of(&read_sources(Path::new(env!("CARGO_MANIFEST_DIR"))))
}

fn assert_none(what: &str, found: &[String]) {
    assert!(found.is_empty(), "{what}:\n{}", found.join("\n"));
}

// ---------------------------------------------------------------------------------------
// The rules on berth's own source.
// ---------------------------------------------------------------------------------------

#[test]
fn crate_modules_only_use_the_layers_below_them() {
    let a = berth();
    assert_none("layers broken", &layering_violations(&a, ALLOWED));
}

/// The part of `src/image` a file belongs to; `None` for the façade and other modules.
fn image_part(file: &str) -> Option<&str> {
    let rest = file.strip_prefix("src/image/")?;
    let (part, _) = rest.split_once('/')?;
    Some(part)
}

/// Files of one part of `src/image` that use a part they may not.
fn image_part_violations(a: &Analysis, parts: &[(&str, &[&str])]) -> Vec<String> {
    let parts: BTreeMap<&str, &[&str]> = parts.iter().copied().collect();
    let mut out = Vec::new();
    for (from, tos) in &a.edges {
        let Some(part) = image_part(from) else {
            continue;
        };
        let Some(may) = parts.get(part) else {
            out.push(format!(
                "{from}: image part {part} has no place in IMAGE_PARTS"
            ));
            continue;
        };
        for (to, uses) in tos {
            let used = match image_part(to) {
                Some(p) => p,
                None if to.starts_with("src/image/") => "the façade",
                None => continue,
            };
            if used == part || may.contains(&used) {
                continue;
            }
            for u in uses.iter().filter(|u| !u.inherent) {
                out.push(format!("{}: image::{part} uses {used} ({})", u.at, u.path));
            }
        }
    }
    out
}

#[test]
fn image_parts_point_one_way() {
    let a = berth();
    assert_none("image parts", &image_part_violations(&a, IMAGE_PARTS));
}

#[test]
fn no_file_imports_a_file_that_imports_it() {
    let a = berth();
    assert_none("file cycles", &cycle_violations(&a));
}

#[test]
fn every_crate_path_resolves() {
    let a = berth();
    assert_none("the checker cannot follow these", &a.problems);
}

#[test]
fn the_allowed_table_has_no_cycle() {
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

/// The library's files, each top-level module with its size, and the edges between
/// modules, printed with `--nocapture` (the graph `docs/architecture.md` draws).
#[test]
fn print_the_module_graph() {
    let a = berth();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, tos) in &a.edges {
        if !a.library.contains(from) {
            continue;
        }
        for to in tos.keys().filter(|t| a.library.contains(*t)) {
            let (f, t) = (module_of(from), module_of(to));
            if f != t {
                graph.entry(f).or_default().insert(t);
            }
        }
    }
    for (from, tos) in &graph {
        let tos: Vec<&str> = tos.iter().map(String::as_str).collect();
        println!("{from} → {}", tos.join(", "));
    }
}

/// A file's module, down to the second level (`src/image/content/store.rs` →
/// `image::content`), for the printed graph.
fn module_of(file: &str) -> String {
    let rel = file.trim_start_matches("src/").trim_end_matches(".rs");
    let parts: Vec<&str> = rel.split('/').filter(|p| *p != "mod").collect();
    parts[..parts.len().min(2)].join("::")
}

// ---------------------------------------------------------------------------------------
// The checker on fixtures: what it must see, and what it must not.
// ---------------------------------------------------------------------------------------

/// A crate of `files` (path, text); `src/lib.rs` declares the top-level modules.
fn fixture(files: &[(&str, &str)]) -> Analysis {
    let sources: Sources = files
        .iter()
        .map(|(p, t)| ((*p).to_owned(), (*t).to_owned()))
        .collect();
    Analysis::of(&sources)
}

const TWO_LAYERS: &[(&str, &[&str])] = &[("storage", &[]), ("job", &["storage"])];

#[test]
fn a_multi_line_use_that_breaks_a_rule_is_seen() {
    // What rustfmt writes once a crate-level group passes 100 columns: the line scanner of
    // tests/layers.rs saw `use crate::{` and nothing after it.
    let a = fixture(&[
        ("src/lib.rs", "pub mod job;\npub mod storage;\n"),
        ("src/job/mod.rs", "pub struct Settings;\npub fn run() {}\n"),
        (
            "src/storage/mod.rs",
            "use crate::{\n    job::{\n        Settings,\n    },\n};\n\npub fn f(_: Settings) {}\n",
        ),
    ]);
    let found = layering_violations(&a, TWO_LAYERS);
    assert_eq!(
        found,
        vec![
            "src/storage/mod.rs:1: storage uses job (crate::job::Settings)".to_owned(),
            "src/storage/mod.rs:7: storage uses job (Settings)".to_owned(),
        ]
    );
}

#[test]
fn nested_groups_self_and_renames_are_followed() {
    let a = fixture(&[
        ("src/lib.rs", "pub mod job;\npub mod storage;\n"),
        ("src/job/mod.rs", "pub mod row;\npub fn run() {}\n"),
        ("src/job/row.rs", "pub struct Row;\n"),
        (
            "src/storage/mod.rs",
            "use crate::{job::{self, row::{Row as R}}, storage as me};\n\
             pub fn f(_: R) { job::run(); }\n",
        ),
    ]);
    let found = layering_violations(&a, TWO_LAYERS);
    assert_eq!(
        found,
        vec![
            "src/storage/mod.rs:2: storage uses job (job::run)".to_owned(),
            "src/storage/mod.rs:1: storage uses job (crate::job::row::Row)".to_owned(),
            "src/storage/mod.rs:2: storage uses job (R)".to_owned(),
        ]
    );
}

#[test]
fn paths_in_macros_are_seen_strings_and_comments_are_not() {
    let a = fixture(&[
        ("src/lib.rs", "pub mod job;\npub mod storage;\n"),
        ("src/job/mod.rs", "pub fn x() -> u8 { 1 }\n"),
        (
            "src/storage/mod.rs",
            "pub fn f() {\n    tracing::info!(\"{}\", crate::job::x());\n\
             let _ = \"crate::job::x\";\n    // crate::job::x()\n}\n",
        ),
    ]);
    let found = layering_violations(&a, TWO_LAYERS);
    assert_eq!(
        found,
        vec!["src/storage/mod.rs:2: storage uses job (crate::job::x)".to_owned()]
    );
}

#[test]
fn a_re_export_does_not_launder_an_edge() {
    // util re-exports job's item; storage takes it from util: that is a use of job.
    let a = fixture(&[
        (
            "src/lib.rs",
            "pub mod job;\npub mod storage;\npub mod util;\n",
        ),
        ("src/job/mod.rs", "pub struct Settings;\n"),
        ("src/util.rs", "pub use crate::job::Settings;\n"),
        ("src/storage/mod.rs", "use crate::util::Settings;\n"),
    ]);
    let layers: &[(&str, &[&str])] = &[
        ("util", &["job"]),
        ("storage", &["util"]),
        ("job", &["storage"]),
    ];
    let found = layering_violations(&a, layers);
    assert_eq!(
        found,
        vec!["src/storage/mod.rs:1: storage uses job (crate::util::Settings)".to_owned()]
    );
}

#[test]
fn a_super_cycle_and_a_split_impl_are_cycles_and_tests_are_not() {
    let a = fixture(&[
        ("src/lib.rs", "pub mod job;\n"),
        (
            "src/job/mod.rs",
            "mod row;\nmod debug;\npub struct JobError;\npub fn run() { row::go(); }\n\
             #[cfg(test)]\nmod tests { use super::debug::*; }\n",
        ),
        (
            "src/job/row.rs",
            "use super::JobError;\npub struct RowRun;\npub fn go() -> Option<JobError> { \
             RowRun.archive(); None }\n",
        ),
        (
            "src/job/debug.rs",
            "impl super::row::RowRun {\n    pub fn archive(&self) {}\n}\n",
        ),
    ]);
    let cycles = file_cycles(&a);
    // mod → row (row::go) → mod (JobError); row → debug (the impl) → row (its type).
    let all = ["src/job/debug.rs", "src/job/mod.rs", "src/job/row.rs"];
    assert_eq!(cycles, vec![all.map(str::to_owned).to_vec()]);
    let told = cycle_violations(&a);
    assert_eq!(told.len(), 1, "{told:?}");
    let told = &told[0];
    assert!(
        told.contains("{src/job/debug.rs, src/job/mod.rs, src/job/row.rs}"),
        "{told}"
    );
    assert!(
        told.contains("src/job/debug.rs:1 uses super::row::RowRun"),
        "{told}"
    );
    assert!(
        told.contains("src/job/debug.rs:1 adds methods to super::row::RowRun"),
        "{told}"
    );
    // The glob in the test module is no problem: test code is not checked.
    assert!(a.problems.is_empty(), "{:?}", a.problems);
}

#[test]
fn what_the_checker_cannot_follow_fails() {
    let a = fixture(&[
        ("src/lib.rs", "pub mod job;\n"),
        (
            "src/job/mod.rs",
            "use crate::nowhere::X;\nuse std::io::*;\npub fn f() { super::missing(); }\n",
        ),
    ]);
    assert_eq!(a.problems.len(), 3, "{:?}", a.problems);
    assert!(a.problems[0].contains("glob import"), "{:?}", a.problems);
}

#[test]
fn an_image_part_that_reaches_up_or_sideways_is_seen() {
    // content may use spec only: here it takes distribution's settings, and the façade's
    // Images, through a re-export of the façade.
    let a = fixture(&[
        ("src/lib.rs", "pub mod image;\n"),
        (
            "src/image/mod.rs",
            "mod content;\nmod distribution;\nmod spec;\nmod images;\npub use images::Images;\n",
        ),
        ("src/image/images.rs", "pub struct Images;\n"),
        ("src/image/spec/mod.rs", "pub struct Digest;\n"),
        (
            "src/image/distribution/mod.rs",
            "pub struct RegistrySettings;\n",
        ),
        (
            "src/image/content/mod.rs",
            "use crate::image::{\n    spec::Digest,\n    distribution::RegistrySettings,\n    Images,\n};\n",
        ),
    ]);
    assert_eq!(
        image_part_violations(&a, IMAGE_PARTS),
        vec![
            "src/image/content/mod.rs:1: image::content uses distribution \
             (crate::image::distribution::RegistrySettings)"
                .to_owned(),
            "src/image/content/mod.rs:1: image::content uses the façade (crate::image::Images)"
                .to_owned(),
        ]
    );
}
