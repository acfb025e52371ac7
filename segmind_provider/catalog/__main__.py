"""``python -m segmind_provider.catalog > docs/models.md``: print the catalog as markdown."""

from __future__ import annotations

import sys

from segmind_provider.catalog import models
from segmind_provider.catalog.docs import render_markdown


def main() -> None:
    """Write docs/models.md's content to stdout."""
    sys.stdout.write(render_markdown(models()))


if __name__ == "__main__":
    main()
