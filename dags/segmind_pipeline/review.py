"""What the reviewer reads in the Airflow UI before approving the night's set: one Markdown body.

The approval step (the standard provider's HITL ``ApprovalOperator``) renders its body as Markdown.
The UI shows images only from ``http(s)`` addresses (``data:`` URIs are dropped), so each product's
stage strip is uploaded first (``SegmindHook.upload``: Segmind's storage keeps it at a persistent
URL, on the hosts that already hold the photos) and the body links those URLs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from segmind_provider.operators.review import markdown_text

md = markdown_text
"""Plain text made inert in Markdown (the provider's own, shared with ``SegmindReviewOperator``)."""


def candidate(
    job: Mapping[str, Any],
    *,
    strip_url: str | None,
    caption: str | None,
    errors: Mapping[str, str],
    extras: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One product as the reviewer sees it: ready when its scene exists (its strip shows every stage)."""
    return {
        "product_id": job["product_id"],
        "name": job["name"],
        "hero": bool(job.get("hero")),
        "ready": "scene" not in errors,
        "strip_url": strip_url,
        "caption": caption,
        "errors": dict(errors),
        "extras": dict(extras or {}),
    }


def review_body(
    candidates: Iterable[Mapping[str, Any]], *, brand: str, campaign: str, run_date: dt.date
) -> str:
    """The approval step's body: a summary line, then per product its stage strip, caption and problems."""
    items = list(candidates)
    ready = sum(1 for c in items if c["ready"])
    lines = [
        f"**{md(brand)} · {md(campaign)} · {run_date.isoformat()}**: {ready} of {len(items)} products ready"
        + (f", {len(items) - ready} not" if ready < len(items) else "")
        + ".",
        "",
        "**Approve** publishes the ready products (social formats, manifest, gallery); "
        "**Reject** publishes nothing tonight.",
    ]
    for item in items:
        title = md(item["name"]) + (" (hero)" if item["hero"] else "")
        lines += ["", f"### {title}" + ("" if item["ready"] else ": not ready"), ""]
        if item["strip_url"]:
            image = f"![{md(item['name'])}: photo, background removed, scene]({item['strip_url']})"
            lines.append(f"[{image}]({item['strip_url']})")  # the UI shows it small: a click opens it
            lines.append("")
        if item["caption"]:
            lines.append(f"> {md(item['caption'])}")
            lines.append("")
        links = " · ".join(f"[{md(label)}]({url})" for label, url in item["extras"].items())
        if links:
            lines.append(links)
            lines.append("")
        for stage, text in item["errors"].items():
            lines.append(f"- *{md(stage)}*: {md(text)}")
    return "\n".join(lines).rstrip() + "\n"
