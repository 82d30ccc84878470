#!/usr/bin/env bash
# Checks the documentation (issue 16): README.md has at most 250 lines, and every relative
# markdown link in README.md, docs/*.md and CHANGELOG.md resolves — the target file or
# directory exists, and a `#anchor` names a heading of the target markdown file under
# GitHub's slug rules (lowercase; punctuation other than `-` and `_` dropped; spaces to `-`;
# a repeated heading gets `-1`, `-2`, …). External http(s) links are not fetched: they are
# only reported when malformed. Prints each broken link as `file:line: link` and exits 1
# when there is any. Needs bash and python3 (standard library only); no network.
#
#   scripts/check-docs.sh            # from anywhere in the checkout
set -euo pipefail

cd "$(dirname "$0")/.."

exec python3 - "$@" <<'PY'
import os
import re
import sys
import unicodedata
from urllib.parse import unquote, urlsplit

MAX_README_LINES = 250
ROOT = os.getcwd()

FENCE = re.compile(r'^ {0,3}(`{3,}|~{3,})')
HEADING = re.compile(r'^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$')
SETEXT = re.compile(r'^ {0,3}(=+|-+)[ \t]*$')
CODE_SPAN = re.compile(r'(`+)((?:(?!\n[ \t]*\n).)+?)(?<!`)\1(?!`)', re.S)
HTML_ID = re.compile(r'<a\s[^>]*\b(?:name|id)\s*=\s*["\']([^"\']+)["\']', re.I)
# [text](target "title") and ![alt](target); text may hold one level of brackets and
# line breaks; the target may be <in angle brackets> or hold balanced parentheses.
INLINE = re.compile(
    r'!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]'
    r'\(\s*(<[^>\n]*>|(?:[^()\s]|\((?:[^()\s])*\))*)'
    r'(?:\s+(?:"[^"\n]*"|\'[^\'\n]*\'|\([^()\n]*\)))?\s*\)'
)
REFERENCE = re.compile(r'^ {0,3}\[[^\]]+\]:\s*(<[^>\n]*>|\S+)', re.M)


def blank_code(text):
    """The text with fenced code blocks and code spans replaced by spaces, line breaks
    kept, so that offsets and line numbers stay those of the file."""
    out, fence = [], None
    for line in text.split('\n'):
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)
            out.append('')
        elif fence is not None:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) \
                    and not line.strip()[len(m.group(1)):].strip():
                fence = None
            out.append('')
        else:
            out.append(line)
    text = '\n'.join(out)
    return CODE_SPAN.sub(lambda m: re.sub(r'[^\n]', ' ', m.group(0)), text)


def heading_text(raw):
    """What GitHub renders of a heading's markdown: code spans kept as their content,
    links as their text, images and HTML tags dropped, emphasis markers removed."""
    parts = re.split(r'((?<!`)`+(?!`).*?(?<!`)`+(?!`))', raw)
    out = []
    for i, part in enumerate(parts):
        if i % 2:  # a code span: its content, as written
            out.append(part.strip('`').strip())
            continue
        part = re.sub(r'!\[[^\]]*\]\([^)]*\)', '', part)
        part = re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', part)
        part = re.sub(r'\[([^\]]*)\]\[[^\]]*\]', r'\1', part)
        part = re.sub(r'<[^>]+>', '', part)
        part = part.replace('*', '')
        out.append(part)
    return ''.join(out)


def slug(text):
    """GitHub's anchor for a heading's text (its `github-slugger`)."""
    text = text.strip().lower()
    kept = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch in '-_ ' or cat[0] in 'LN' or cat == 'Mn' or cat == 'Pc':
            kept.append(ch)
    return ''.join(kept).replace(' ', '-')


def anchors(path, cache={}):
    if path in cache:
        return cache[path]
    with open(path, encoding='utf-8') as f:
        lines = f.read().split('\n')
    seen, result, fence = {}, set(), None
    prev = None
    for line in lines:
        m = FENCE.match(line)
        if fence is None and m:
            fence, prev = m.group(1), None
            continue
        if fence is not None:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = None
            continue
        text = None
        h = HEADING.match(line)
        if h:
            text = h.group(2) or ''
        elif prev and prev.strip() and SETEXT.match(line) and not prev.startswith(('    ', '\t')) \
                and not re.match(r'^ {0,3}([-*+]|\d+[.)])\s|^ {0,3}[|>]', prev):
            text = prev.strip()
        if text is not None:
            base = slug(heading_text(text))
            n = seen.get(base, 0)
            seen[base] = n + 1
            result.add(base if n == 0 else f'{base}-{n}')
        for ident in HTML_ID.findall(line):
            result.add(ident)
        prev = line
    cache[path] = result
    return result


def files():
    names = ['README.md']
    if os.path.isdir('docs'):
        names += sorted(os.path.join('docs', n) for n in os.listdir('docs') if n.endswith('.md'))
    if os.path.exists('CHANGELOG.md'):
        names.append('CHANGELOG.md')
    return names


def check_link(source, target):
    """None when the link resolves, else why not."""
    if target.startswith('<') and target.endswith('>'):
        target = target[1:-1]
    parts = urlsplit(target)
    if parts.scheme in ('http', 'https'):
        host = parts.hostname or ''
        if not host or any(c.isspace() for c in target) \
                or ('.' not in host and host != 'localhost'):
            return 'malformed URL'
        return None
    if parts.scheme or target.startswith('//'):
        return None  # mailto:, ftp: and the like: not ours to check
    path, _, fragment = target.partition('#')
    path = unquote(path)
    if path.startswith('/'):
        return 'absolute path (use a path relative to the file)'
    here = os.path.dirname(source)
    dest = os.path.normpath(os.path.join(here, path)) if path else source
    if os.path.relpath(os.path.abspath(dest), ROOT).split(os.sep)[0] == '..':
        return 'outside the repository'
    if not os.path.exists(dest):
        return 'no such file'
    if fragment:
        if os.path.isdir(dest) or not dest.endswith(('.md', '.markdown')):
            return None  # GitHub's line anchors (#L10) and the like
        if unquote(fragment) not in anchors(dest):
            return 'no heading with this anchor'
    return None


def main():
    problems = []
    with open('README.md', encoding='utf-8') as f:
        count = len(f.read().splitlines())
    if count > MAX_README_LINES:
        problems.append(f'README.md: {count} lines, more than {MAX_README_LINES}')
    links = 0
    for name in files():
        with open(name, encoding='utf-8') as f:
            text = blank_code(f.read())
        found = [(m.start(1), m.group(1)) for m in INLINE.finditer(text)]
        found += [(m.start(1), m.group(1)) for m in REFERENCE.finditer(text)]
        for offset, target in sorted(found):
            links += 1
            why = check_link(name, target)
            if why:
                line = text.count('\n', 0, offset) + 1
                problems.append(f'{name}:{line}: {target} ({why})')
    for p in problems:
        print(p)
    if problems:
        print(f'check-docs: {len(problems)} problem(s)', file=sys.stderr)
        sys.exit(1)
    print(f'check-docs: README.md has {count} lines; {links} links in {len(files())} files resolve')


main()
PY
