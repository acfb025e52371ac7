"""MkDocs hooks (mkdocs.yml ``hooks:``): the README is the site's home page, and links work as on GitHub.

The Markdown files stay readable in the repository, so their links are relative to where they live:
the README links ``docs/hook.md``, a page links ``../bench/results/``. Here a link into docs/ becomes
the site's page, the README becomes ``index.md``, and a link to any other file of the repository
becomes its URL on the repository's host. A link to a file that does not exist is left alone, so
MkDocs reports it and ``--strict`` fails the build.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
HOME = "index.md"
#: ``[text](target)`` and ``![alt](target)``; the target has no spaces in these docs.
LINK = re.compile(r"(\]\()([^)\s]+)(\))")
FENCE = re.compile(r"^([ \t]*)(```|~~~).*?^\1\2", re.S | re.M)


def on_files(files: Files, *, config: Any) -> Files:
    """Add the README as the home page."""
    files.append(File.generated(config, HOME, abs_src_path=str(README)))
    return files


def on_page_markdown(markdown: str, *, page: Any, config: Any, files: Files) -> str:
    """Rewrite the page's repository-relative links to the site's pages or the repository's URLs."""
    source_dir = ROOT if page.file.src_uri == HOME else DOCS / posixpath.dirname(page.file.src_uri)
    page_dir = posixpath.dirname(page.file.src_uri)
    blob = f"{config['repo_url'].rstrip('/')}/blob/main/"

    def rewrite(match: re.Match[str]) -> str:
        target = match.group(2)
        if "://" in target or target.startswith(("#", "mailto:")):
            return match.group(0)
        path, hash_, fragment = target.partition("#")
        resolved = (source_dir / path).resolve()
        if resolved == README:
            new = posixpath.relpath(HOME, page_dir or ".")
        elif resolved.is_relative_to(DOCS):
            new = posixpath.relpath(resolved.relative_to(DOCS).as_posix(), page_dir or ".")
        elif resolved.exists() and resolved.is_relative_to(ROOT):
            new = blob + resolved.relative_to(ROOT).as_posix()
        else:
            return match.group(0)
        return f"{match.group(1)}{new}{hash_}{fragment}{match.group(3)}"

    def outside_fences(text: str) -> str:
        return LINK.sub(rewrite, text)

    pieces: list[str] = []
    last = 0
    for fence in FENCE.finditer(markdown):
        pieces.append(outside_fences(markdown[last : fence.start()]))
        pieces.append(fence.group(0))
        last = fence.end()
    pieces.append(outside_fences(markdown[last:]))
    return "".join(pieces)
