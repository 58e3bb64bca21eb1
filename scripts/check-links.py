#!/usr/bin/env python3
"""Fails when a document in the repository links outside it.

Checks every tracked Markdown file: each relative link (inline `[text](x)`,
reference `[id]: x`, `<a href="x">`, `<img src="x">`) must name a file or
folder that exists inside the repository; absolute file paths are refused.
Web links (http, https, mailto) and in-page anchors are not checked. Also
refuses any tracked text file that mentions the helpers' shared folder, which
a clone does not have."""
import os
import re
import subprocess
import sys
from urllib.parse import unquote

INLINE = re.compile(r'!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')
REFDEF = re.compile(r'^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)', re.M)
HTML = re.compile(r'<(?:a|img)\s[^>]*?(?:href|src)\s*=\s*"([^"]+)"', re.I)
FENCE = re.compile(r'^(```|~~~).*?^\1', re.M | re.S)
CODE = re.compile(r'`[^`\n]*`')
SHARED = re.compile(r'(\.\./|/work/)shared/')


def tracked(root):
    out = subprocess.run(['git', '-C', root, 'ls-files', '-z'], check=True,
                         capture_output=True).stdout.decode()
    return [p for p in out.split('\0') if p]


def targets(text):
    text = FENCE.sub('', text)
    text = CODE.sub('', text)
    for rx in (INLINE, REFDEF, HTML):
        for m in rx.finditer(text):
            yield m.group(1)


def main():
    root = os.path.realpath(sys.argv[1] if len(sys.argv) > 1 else '.')
    problems = []
    files = tracked(root)
    for rel in files:
        path = os.path.join(root, rel)
        if not os.path.isfile(path):
            continue
        try:
            with open(path, encoding='utf-8') as f:
                text = f.read()
        except (UnicodeDecodeError, OSError):
            continue
        if SHARED.search(text) and rel != 'scripts/check-links.py':
            problems.append('%s: mentions the shared folder, which a clone does not have' % rel)
        if not rel.endswith('.md'):
            continue
        for target in targets(text):
            if re.match(r'^[a-z][a-z0-9+.-]*:', target, re.I) or target.startswith('#'):
                continue
            link = unquote(target.split('#', 1)[0].split('?', 1)[0])
            if not link:
                continue
            if link.startswith('/'):
                problems.append('%s: absolute link %s' % (rel, target))
                continue
            dest = os.path.realpath(os.path.join(os.path.dirname(path), link))
            if dest != root and not dest.startswith(root + os.sep):
                problems.append('%s: link %s leaves the repository' % (rel, target))
            elif not os.path.exists(dest):
                problems.append('%s: link %s names a missing file' % (rel, target))
    for p in problems:
        print(p)
    checked = sum(1 for r in files if r.endswith('.md'))
    print('check-links: %d Markdown files, %d problems' % (checked, len(problems)))
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
