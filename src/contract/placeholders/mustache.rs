//! Mustache as the original renders variables with it (mustache.php 2, its default
//! settings, a custom escape): the template is the configuration's JSON text and the only
//! data is a flat map of variable names to strings.
//!
//! What that means, tag by tag:
//! - `{{ name }}`: the value, escaped for a JSON string; `{{{ name }}}` and `{{& name }}`:
//!   the value as it is. A name without a value renders empty and is reported missing.
//! - `{{# name }}…{{/ name }}`: the inside once when the value is neither empty nor `"0"`
//!   (PHP's `empty`), with `{{ . }}` being the value; `{{^ name }}…{{/ name }}`: the inside
//!   when it is. A dotted name (`a.b`) looks up `a` and renders empty: a value has no
//!   members.
//! - `{{! comment }}` renders nothing; so do partials (`{{> x }}`) and parents
//!   (`{{< x }}…{{/ x }}`): there are no templates to include. `{{$ x }}` is the variable
//!   `$x`, as without the BLOCKS pragma. `{{=<% %>=}}` changes the delimiters.
//! - A pragma (`{{% NAME }}`) that would change all that is refused; any other does nothing.
//!
//! The template is one line (JSON text has no raw line breaks), so no tag is ever
//! "standalone" and whitespace is never dropped around one.

use std::collections::BTreeMap;

/// The pragmas of mustache.php that change how a template renders.
const REFUSED_PRAGMAS: [&str; 3] = ["FILTERS", "BLOCKS", "ANCHORED-DOT"];

/// A template mustache.php would refuse to compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyntaxError {
    #[error("unclosed tag {0:?}")]
    Unclosed(String),
    #[error("mismatched tag delimiters: {0:?}")]
    Mismatched(String),
    #[error("invalid delimiters {0:?}")]
    Delimiters(String),
    #[error("unexpected closing tag {{{{/{0}}}}}")]
    UnexpectedClose(String),
    #[error("nesting error: {{{{#{open}}}}} is closed by {{{{/{close}}}}}")]
    Nesting { open: String, close: String },
    #[error("missing closing tag for {{{{#{0}}}}}")]
    MissingClose(String),
    #[error("illegal content in the parent tag {{{{<{0}}}}}")]
    InParent(String),
    #[error("the mustache pragma {0} is not supported")]
    Pragma(String),
}

/// What rendering made: the text, which variables it used (with their values, in the order
/// first used) and which names had no value (in the order first looked up).
#[derive(Debug, Default, PartialEq)]
pub struct Rendered {
    pub text: String,
    pub replaced: Vec<(String, String)>,
    pub missing: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Escaped,
    Unescaped,
    Section,
    Inverted,
    End,
    Comment,
    Partial,
    Parent,
    Pragma,
}

#[derive(Debug)]
enum Token {
    Text(String),
    Tag(Kind, String),
}

#[derive(Debug)]
enum Node {
    Text(String),
    Variable {
        name: String,
        escaped: bool,
    },
    Section {
        name: String,
        inverted: bool,
        nodes: Vec<Node>,
    },
}

/// Renders `template` with `values`; `escape` is applied to the values of `{{ name }}`.
pub fn render(
    template: &str,
    values: &BTreeMap<String, String>,
    escape: fn(&str) -> String,
) -> Result<Rendered, SyntaxError> {
    let mut tokens = tokenize(template)?.into_iter();
    let nodes = parse(&mut tokens, None)?;
    let mut r = Renderer {
        values,
        escape,
        stack: Vec::new(),
        out: Rendered::default(),
    };
    r.nodes(&nodes);
    Ok(r.out)
}

/// PHP's `trim`.
fn trim(s: &str) -> &str {
    s.trim_matches([' ', '\t', '\n', '\r', '\0', '\x0B'])
}

fn kind_of(byte: Option<u8>) -> Option<Kind> {
    Some(match byte? {
        b'#' => Kind::Section,
        b'^' => Kind::Inverted,
        b'/' => Kind::End,
        b'!' => Kind::Comment,
        b'>' => Kind::Partial,
        b'<' => Kind::Parent,
        b'{' | b'&' => Kind::Unescaped,
        b'%' => Kind::Pragma,
        // A block without the BLOCKS pragma: a variable whose name starts with `$`.
        b'$' => Kind::Escaped,
        _ => return None,
    })
}

/// Splits the template into text and tags, as mustache.php's tokenizer does.
fn tokenize(text: &str) -> Result<Vec<Token>, SyntaxError> {
    let (mut otag, mut ctag) = ("{{".to_owned(), "}}".to_owned());
    let mut tokens = Vec::new();
    let mut at = 0;
    while let Some(found) = text[at..].find(otag.as_str()) {
        let start = at + found;
        if start > at {
            tokens.push(Token::Text(text[at..start].to_owned()));
        }
        let type_at = start + otag.len();
        let type_byte = text.as_bytes().get(type_at).copied();
        if type_byte == Some(b'=') {
            at = change_delimiters(text, type_at, &mut otag, &mut ctag)?;
            continue;
        }
        let kind = kind_of(type_byte);
        let name_at = type_at + usize::from(kind.is_some());
        let Some(end) = text
            .get(name_at..)
            .and_then(|rest| rest.find(ctag.as_str()))
        else {
            return Err(SyntaxError::Unclosed(
                trim(&text[name_at.min(text.len())..]).into(),
            ));
        };
        let mut name = trim(&text[name_at..name_at + end]).to_owned();
        at = name_at + end + ctag.len();
        if type_byte == Some(b'{') {
            if ctag == "}}" {
                if text.as_bytes().get(at) != Some(&b'}') {
                    return Err(SyntaxError::Mismatched(name));
                }
                at += 1;
            } else {
                match name.strip_suffix('}') {
                    Some(n) => name = trim(n).to_owned(),
                    None => return Err(SyntaxError::Mismatched(name)),
                }
            }
        }
        if type_byte == Some(b'$') {
            name.insert(0, '$');
        }
        tokens.push(Token::Tag(kind.unwrap_or(Kind::Escaped), name));
    }
    if at < text.len() {
        tokens.push(Token::Text(text[at..].to_owned()));
    }
    Ok(tokens)
}

/// `{{=<% %>=}}` at `eq` (the `=`): sets the delimiters; returns where the text goes on.
fn change_delimiters(
    text: &str,
    eq: usize,
    otag: &mut String,
    ctag: &mut String,
) -> Result<usize, SyntaxError> {
    let close = format!("={ctag}");
    let Some(end) = text[eq + 1..].find(close.as_str()).map(|i| eq + 1 + i) else {
        return Err(SyntaxError::Unclosed(trim(&text[eq + 1..]).into()));
    };
    let spec = &text[eq + 1..end];
    let mut parts = spec.split_ascii_whitespace();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(o), Some(c), None) => {
            *otag = o.to_owned();
            *ctag = c.to_owned();
            Ok(end + close.len())
        }
        _ => Err(SyntaxError::Delimiters(trim(spec).to_owned())),
    }
}

/// Builds the tree of sections up to the end of `parent` (or of the template).
fn parse(
    tokens: &mut std::vec::IntoIter<Token>,
    parent: Option<(Kind, &str)>,
) -> Result<Vec<Node>, SyntaxError> {
    let mut nodes = Vec::new();
    while let Some(token) = tokens.next() {
        let (kind, name) = match token {
            Token::Text(t) => {
                nodes.push(Node::Text(t));
                continue;
            }
            Token::Tag(kind, name) => (kind, name),
        };
        if let Some((Kind::Parent, p)) = parent
            && matches!(
                kind,
                Kind::Section | Kind::Inverted | Kind::Partial | Kind::Parent
            )
        {
            return Err(SyntaxError::InParent(p.to_owned()));
        }
        match kind {
            Kind::Escaped | Kind::Unescaped => nodes.push(Node::Variable {
                escaped: kind == Kind::Escaped,
                name,
            }),
            Kind::Section | Kind::Inverted => {
                let inner = parse(tokens, Some((kind, &name)))?;
                nodes.push(Node::Section {
                    inverted: kind == Kind::Inverted,
                    name,
                    nodes: inner,
                });
            }
            // No template to include: it renders nothing.
            Kind::Parent => {
                parse(tokens, Some((kind, &name)))?;
            }
            Kind::End => {
                return match parent {
                    None => Err(SyntaxError::UnexpectedClose(name)),
                    Some((_, open)) if open != name => Err(SyntaxError::Nesting {
                        open: open.to_owned(),
                        close: name,
                    }),
                    Some(_) => Ok(nodes),
                };
            }
            Kind::Pragma if REFUSED_PRAGMAS.contains(&name.as_str()) => {
                return Err(SyntaxError::Pragma(name));
            }
            Kind::Pragma | Kind::Comment | Kind::Partial => {}
        }
    }
    match parent {
        Some((_, open)) => Err(SyntaxError::MissingClose(open.to_owned())),
        None => Ok(nodes),
    }
}

struct Renderer<'v> {
    values: &'v BTreeMap<String, String>,
    escape: fn(&str) -> String,
    /// The values of the sections rendering, innermost last.
    stack: Vec<String>,
    out: Rendered,
}

impl Renderer<'_> {
    fn nodes(&mut self, nodes: &[Node]) {
        for node in nodes {
            match node {
                Node::Text(t) => self.out.text.push_str(t),
                Node::Variable { name, escaped } => {
                    let value = self.find(name);
                    let shown = if *escaped {
                        (self.escape)(&value)
                    } else {
                        value
                    };
                    self.out.text.push_str(&shown);
                }
                Node::Section {
                    name,
                    inverted,
                    nodes,
                } => {
                    let value = self.find(name);
                    let empty = value.is_empty() || value == "0";
                    if *inverted && empty {
                        self.nodes(nodes);
                    } else if !*inverted && !empty {
                        self.stack.push(value);
                        self.nodes(nodes);
                        self.stack.pop();
                    }
                }
            }
        }
    }

    /// The value of `name`, noting it as used or missing.
    fn find(&mut self, name: &str) -> String {
        if name == "." {
            // Outside a section the context is the variables themselves, which render empty.
            return self.stack.last().cloned().unwrap_or_default();
        }
        match name.split_once('.') {
            Some((first, _)) => {
                // `a.b`: `a` is a string, which has no `b`.
                self.lookup(first);
                String::new()
            }
            None => self.lookup(name),
        }
    }

    fn lookup(&mut self, name: &str) -> String {
        match self.values.get(name) {
            Some(value) => {
                if !self.out.replaced.iter().any(|(n, _)| n == name) {
                    self.out.replaced.push((name.to_owned(), value.clone()));
                }
                value.clone()
            }
            None => {
                if !self.out.missing.iter().any(|n| n == name) {
                    self.out.missing.push(name.to_owned());
                }
                String::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        (pairs.iter())
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn upper(s: &str) -> String {
        s.to_uppercase()
    }

    fn run(template: &str, pairs: &[(&str, &str)]) -> Rendered {
        render(template, &values(pairs), upper).unwrap()
    }

    #[test]
    fn variables_are_escaped_unless_triple_or_ampersand() {
        let r = run(
            "a {{ foo }} {{{foo}}} {{& foo }} {{foo}}",
            &[("foo", "bar")],
        );
        assert_eq!(r.text, "a BAR bar bar BAR");
        assert_eq!(r.replaced, vec![("foo".to_owned(), "bar".to_owned())]);
        assert!(r.missing.is_empty());
    }

    #[test]
    fn missing_names_render_empty_and_are_listed_once_in_order() {
        let r = run("{{ key1 }} {{ key2 }}{{b}}{{key2}}", &[("key1", "val1")]);
        assert_eq!(r.text, "VAL1 ");
        assert_eq!(r.missing, vec!["key2", "b"]);
    }

    #[test]
    fn sections_follow_php_truthiness_and_dot_is_the_value() {
        let vals = [("yes", "y"), ("zero", "0"), ("empty", "")];
        let r = run(
            "{{#yes}}[{{.}}]{{/yes}}{{#zero}}no{{/zero}}{{^zero}}z{{/zero}}\
             {{^empty}}e{{/empty}}{{^absent}}a{{/absent}}{{.}}",
            &vals,
        );
        assert_eq!(r.text, "[Y]zea");
        assert_eq!(r.missing, vec!["absent"]);
    }

    #[test]
    fn dotted_names_look_up_their_first_part_and_render_empty() {
        let r = run("[{{ a.b }}][{{ vault.x }}]", &[("a", "v")]);
        assert_eq!(r.text, "[][]");
        assert_eq!(r.replaced, vec![("a".to_owned(), "v".to_owned())]);
        assert_eq!(r.missing, vec!["vault"]);
    }

    #[test]
    fn comments_partials_parents_and_blocks_render_as_mustache_php_does() {
        let r = run(
            "{{! note }}{{> part }}{{<p}}{{x}}{{/p}}{{$b}}{{%OTHER}}",
            &[("$b", "B")],
        );
        assert_eq!(r.text, "B");
        // The variable inside the parent is never looked up.
        assert!(r.missing.is_empty());
    }

    #[test]
    fn delimiters_change() {
        let r = run("{{=<% %>=}}<% a %> {{ a }} <%={{ }}=%>{{a}}", &[("a", "x")]);
        assert_eq!(r.text, "X {{ a }} X");
        let r = run("{{=[[ ]]=}}[[{a}]]", &[("a", "x")]);
        assert_eq!(r.text, "x");
    }

    #[test]
    fn broken_templates_are_syntax_errors() {
        let e = |t: &str| render(t, &BTreeMap::new(), upper).unwrap_err();
        assert_eq!(e("x {{ a"), SyntaxError::Unclosed("a".into()));
        assert_eq!(e("x {{"), SyntaxError::Unclosed(String::new()));
        assert_eq!(e("{{{ a }}"), SyntaxError::Mismatched("a".into()));
        assert_eq!(e("{{/a}}"), SyntaxError::UnexpectedClose("a".into()));
        assert_eq!(
            e("{{#a}}{{/b}}"),
            SyntaxError::Nesting {
                open: "a".into(),
                close: "b".into()
            }
        );
        assert_eq!(e("{{#a}}"), SyntaxError::MissingClose("a".into()));
        assert_eq!(e("{{=x=}}"), SyntaxError::Delimiters("x".into()));
        assert_eq!(
            e("{{<p}}{{#s}}{{/s}}{{/p}}"),
            SyntaxError::InParent("p".into())
        );
        assert_eq!(e("{{%FILTERS}}"), SyntaxError::Pragma("FILTERS".into()));
        assert_eq!(e("{{#a}}").to_string(), "missing closing tag for {{#a}}");
    }

    #[test]
    fn a_space_after_the_braces_makes_a_plain_variable() {
        let r = run("{{ #a }}", &[("#a", "x")]);
        assert_eq!(r.text, "X");
    }
}
