#!/usr/bin/env bash
# Offline link check over every markdown file of the repository (tracked and new, not ignored):
# each relative link must name a file or folder that exists, and each `#anchor` (in the same
# file or in another markdown file) a heading there, with GitHub's anchor rules. http(s) and
# mailto links are not followed; links inside code blocks and code spans are not links.
# Exits 1 and lists every broken link as FILE:LINE: TARGET (why).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

git ls-files -z --cached --others --exclude-standard -- '*.md' | python3 -c '
import os, re, sys

files = [f for f in sys.stdin.read().split("\0") if f and os.path.isfile(f)]

FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFDEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
HTML_ID = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")


def prose_lines(text):
    """(line number, line) outside fenced code blocks."""
    fence = None
    for n, line in enumerate(text.split("\n"), 1):
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)[0] * len(m.group(1))
            continue
        if fence is not None:
            if line.strip().startswith(fence) and set(line.strip()) <= {fence[0]}:
                fence = None
            continue
        yield n, line


def slug(heading):
    """The anchor GitHub gives a heading."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # punctuation goes, word characters, - and _ stay
    return text.replace(" ", "-")


anchors_cache = {}


def anchors(path):
    if path not in anchors_cache:
        seen = {}
        found = set()
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for _, line in prose_lines(text):
            found.update(HTML_ID.findall(line))
            m = HEADING.match(line)
            if not m:
                continue
            base = slug(m.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
        anchors_cache[path] = found
    return anchors_cache[path]


broken = []
checked = 0
for path in sorted(files):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    for n, line in prose_lines(text):
        line = re.sub(r"(`+)(?:(?!\1).)+\1", "", line)  # code spans
        targets = INLINE.findall(line)
        m = REFDEF.match(line)
        if m:
            targets.append(m.group(1))
        for target in targets:
            if not target or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or "::" in target:
                continue  # a URL (http, https, mailto, ...) or a rustdoc path
            checked += 1
            file_part, _, anchor = target.partition("#")
            if file_part:
                dest = os.path.normpath(os.path.join(os.path.dirname(path), file_part))
                if not os.path.exists(dest):
                    broken.append(f"{path}:{n}: {target} (no file {dest})")
                    continue
            else:
                dest = path
            if anchor and dest.endswith(".md") and os.path.isfile(dest):
                if anchor.lower() not in anchors(dest):
                    broken.append(f"{path}:{n}: {target} (no heading #{anchor} in {dest})")

for b in broken:
    print(b)
print(f"check-links: {len(files)} markdown files, {checked} relative links, {len(broken)} broken",
      file=sys.stderr)
sys.exit(1 if broken else 0)
'
