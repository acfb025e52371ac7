"""The catalog's command line.

- ``python -m segmind_provider.catalog > docs/models.md``: print the catalog and directory as markdown.
- ``python -m segmind_provider.catalog import PAGE_FILE``: turn a saved model page into a full entry,
  written to the user catalog's ``models/`` (or ``--to``; printed when there is none); what the page
  does not say is reported on stderr and in the entry.
- ``python -m segmind_provider.catalog refresh``: read Segmind's live model list through the
  connection into the user catalog's ``directory.json``, which wins over the shipped directory.

The user catalog folder: ``--catalog-dir``, else the connection's ``catalog_dir`` extra, else
``SEGMIND_CATALOG_DIR``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from segmind_provider import catalog
from segmind_provider.catalog.directory import USER_FILE, category_kinds, records_from_list
from segmind_provider.catalog.docs import render_markdown
from segmind_provider.catalog.entry import parse_entry
from segmind_provider.catalog.importer import import_page
from segmind_provider.hooks.segmind import SegmindHook


def _print_docs() -> int:
    sys.stdout.write(render_markdown(catalog.models(), catalog.directory_models()))
    return 0


def _folder(given: str | None, conn_id: str | None = None) -> Path | None:
    if given:
        return Path(given).expanduser()
    if conn_id:
        SegmindHook(segmind_conn_id=conn_id).get_settings()  # applies the connection's catalog_dir
    return catalog.user_catalog_dir()


def _import(args: argparse.Namespace) -> int:
    raw = Path(args.page).read_text(encoding="utf-8")
    result = import_page(
        raw, directory=catalog._directory(), page_url=args.url, read=args.read, page_file=Path(args.page).name
    )
    for problem in result.problems:
        print(f"{args.page}: not read: {problem}", file=sys.stderr)
    if not result.complete:
        print(f"{args.page}: not imported: the entry would be incomplete (see above)", file=sys.stderr)
        return 1
    parse_entry(result.entry, args.page)  # an entry the loader would refuse is never written
    text = json.dumps(result.entry, indent=2, ensure_ascii=False) + "\n"
    folder = Path(args.to).expanduser() if args.to else _folder(args.catalog_dir)
    if folder is None:
        sys.stdout.write(text)
        return 0
    target = folder if args.to else folder / "models"
    target.mkdir(parents=True, exist_ok=True)
    path = target / f"{result.entry['slug']}.json"
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}", file=sys.stderr)
    return 0


def _refresh(args: argparse.Namespace) -> int:
    hook = SegmindHook(segmind_conn_id=args.conn_id)
    folder = _folder(args.catalog_dir, args.conn_id)
    if folder is None:
        print(
            f"refresh: no user catalog folder (--catalog-dir, the connection's catalog_dir extra or "
            f"{catalog.ENV_CATALOG_DIR})",
            file=sys.stderr,
        )
        return 2
    read = dt.date.today().isoformat()
    known = category_kinds(catalog._shipped_directory().values())
    records = records_from_list(hook.list_models(), read, "live", known)
    if not records:
        print("refresh: the model list named no model; nothing written", file=sys.stderr)
        return 1
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "read": read,
        "source": hook.get_settings().account_url + "/inference-model-information/list",
        "models": [records[slug].to_json() for slug in sorted(records)],
    }
    (folder / USER_FILE).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(records)} models to {folder / USER_FILE}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one command; with none, print docs/models.md."""
    parser = argparse.ArgumentParser(prog="python -m segmind_provider.catalog")
    commands = parser.add_subparsers(dest="command")
    page = commands.add_parser("import", help="a saved model page (text, HTML, llms.txt) to a full entry")
    page.add_argument("page", help="the page file")
    page.add_argument("--url", help="the page's address (default: segmind.com/models/<slug>/api)")
    page.add_argument("--read", help="the date the page was read (default: today)")
    page.add_argument("--to", help="write <slug>.json into this folder instead of the user catalog")
    page.add_argument("--catalog-dir", help="the user catalog folder")
    refresh = commands.add_parser("refresh", help="read Segmind's live model list into the user catalog")
    refresh.add_argument("--conn-id", default="segmind_default", help="the Segmind connection")
    refresh.add_argument("--catalog-dir", help="the user catalog folder")
    args = parser.parse_args(argv)
    if args.command == "import":
        return _import(args)
    if args.command == "refresh":
        return _refresh(args)
    return _print_docs()


if __name__ == "__main__":
    sys.exit(main())
