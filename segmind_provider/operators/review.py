"""SegmindReviewOperator: a person looks at what upstream Segmind tasks made and lets through what is good.

Built on the standard provider's human-in-the-loop ``HITLOperator`` (Airflow 3.1+): the task waits in
the Required Actions page (``awaiting_input`` on 3.3, deferred before) and resumes with the answer.
The UI shows images only from ``http(s)`` addresses (``data:`` URIs are dropped), so each item's
image is made small and uploaded first (``SegmindHook.upload``: Segmind's storage keeps it at a
persistent URL); an output Segmind only returned as a URL is fetched first (those expire in an hour,
a review can take a day).
"""

from __future__ import annotations

import copy
import datetime as dt
import io
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Param
from airflow.sdk.definitions.param import ParamsDict

from segmind_provider.exceptions import SegmindError
from segmind_provider.hooks.segmind import SegmindHook
from segmind_provider.inputs import open_source
from segmind_provider.media import redact_url, sniff_format, thumbnail
from segmind_provider.operators.batch_state import COMPLETED
from segmind_provider.status import RequestStatus, read_status

if TYPE_CHECKING:
    from airflow.sdk.definitions.context import Context

__all__ = ["SegmindReviewOperator", "markdown_text"]

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+!|~])")
_KEY_SEPARATOR = "/"


def markdown_text(text: Any) -> str:
    """Plain text made inert in Markdown (model-written text and error messages can hold anything)."""
    flat = " ".join(str(text or "").split())
    return _MARKDOWN_SPECIAL.sub(r"\\\1", flat)


def _is_manifest(value: Any) -> bool:
    return isinstance(value, Mapping) and isinstance(value.get("items"), Mapping) and "order" in value


def _is_result(value: Any) -> bool:
    return isinstance(value, Mapping) and ("output_uris" in value or "status" in value)


@dataclass(frozen=True)
class _Item:
    """One reviewable thing: a single task's result, or one item of a batch's manifest."""

    key: str
    entry: Mapping[str, Any]
    #: Read where the entry's kind is known: a manifest item's ledger state, or a result's API status.
    completed: bool

    @property
    def problem(self) -> str | None:
        """Why there is nothing to look at (the item did not complete), or None."""
        if not self.completed:
            return f"{self.entry.get('status')}: {self.entry.get('error') or 'no output'}"
        if not self.sources:
            return "no output to show"
        return None

    @property
    def sources(self) -> list[tuple[str, bool]]:
        """Each output and whether it is a file (stored, or a URL) rather than text the model wrote:
        the stored copies, else what Segmind returned."""
        stored = [(str(u), True) for u in self.entry.get("output_uris") or []]
        if stored:
            return stored
        output = self.entry.get("output")
        returned = [str(o) for o in (output if isinstance(output, list) else [output]) if o]
        return [(o, urlsplit(o).scheme.lower() in ("http", "https")) for o in returned]


def _collect(value: Any, prefix: str, items: list[_Item]) -> None:
    """Every item of ``outputs`` in order, keyed by where it sits (batch keys, list positions, names)."""

    def key(name: Any) -> str:
        return f"{prefix}{_KEY_SEPARATOR}{name}" if prefix else str(name)

    if value is None:
        items.append(
            _Item(
                prefix or "0",
                {"status": "MISSING", "error": "the upstream task returned nothing"},
                completed=False,
            )
        )
    elif _is_manifest(value):
        for name in value["order"]:
            entry = value["items"][name]
            items.append(_Item(key(name), entry, completed=entry.get("status", COMPLETED) == COMPLETED))
    elif _is_result(value):
        done = "status" not in value or read_status(value) is RequestStatus.COMPLETED
        items.append(_Item(prefix or "0", value, completed=done))
    elif isinstance(value, Mapping):
        for name, inner in value.items():
            _collect(inner, key(name), items)
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        for index, inner in enumerate(value):
            _collect(inner, key(index), items)
    else:
        where = f" at {prefix!r}" if prefix else ""
        raise TypeError(
            f"outputs{where} is a {type(value).__name__}: expected a SegmindOperator result, a "
            "SegmindBatchOperator manifest, or a list or dict of those"
        )


def _approved_part(value: Any, prefix: str, keep: Callable[[str], bool]) -> Any:
    """``value`` in its own shape with only the approved items left (None for a rejected result)."""

    def key(name: Any) -> str:
        return f"{prefix}{_KEY_SEPARATOR}{name}" if prefix else str(name)

    if value is None:
        return None
    if _is_manifest(value):
        order = [name for name in value["order"] if keep(key(name))]
        kept = copy.deepcopy(dict(value))
        kept["items"] = {name: kept["items"][name] for name in order}
        kept["order"] = order
        kept["completed"] = len(order)
        kept["failed"] = 0
        return kept
    if _is_result(value):
        return value if keep(prefix or "0") else None
    if isinstance(value, Mapping):
        parts = {name: _approved_part(inner, key(name), keep) for name, inner in value.items()}
        return {name: part for name, part in parts.items() if part is not None}
    parts_list = [_approved_part(inner, key(index), keep) for index, inner in enumerate(value)]
    return [part for part in parts_list if part is not None]


class SegmindReviewOperator(HITLOperator):
    """Show upstream Segmind outputs in the Required Actions page; pass on what the reviewer approves.

    The reviewer sees every item as an image (its key above it) and answers **Approve all**, or
    picks items in *Reject* and gives a *Reason*, then **Reject selected**. The task's XCom
    ``return_value``::

        {"decision": "Approve all" | "Reject selected",
         "approved": <outputs, same shape, only the approved items>,
         "approved_keys": [...], "rejected": {key: reason}, "reviewed_by": str | None, "responded_at": str}

    ``rejected`` also lists the items that had nothing to review (failed upstream), with why.

    :param outputs: templated; what upstream Segmind tasks returned, usually their XComArg: a
        ``SegmindOperator`` result, a ``SegmindBatchOperator`` manifest, or a list (a mapped task) or dict
        (name to output) of those. Item keys: a batch's own keys, list positions, dict names, joined by ``/``.
    :param subject: templated; the headline of the Required Actions entry.
    :param body: templated; Markdown shown above the items (the items follow it).
    :param segmind_conn_id: templated; connection whose storage holds the previews (``SegmindHook.upload``).
    :param output_conn_id: templated; connection for reading the stored outputs (``output_uris``).
    :param preview_side: longest side of an uploaded preview, in pixels.
    :param max_preview_bytes: the most bytes read of one output to preview it.
    :param defaults: the option taken when ``response_timeout`` passes; None fails the task then.
    :param response_timeout: how long to wait for a reviewer; None waits without end.
    """

    APPROVE_ALL = "Approve all"
    REJECT_SELECTED = "Reject selected"
    REJECT_PARAM = "reject"
    REASON_PARAM = "reason"
    NO_REASON = "rejected by the reviewer"
    FIXED_ARGS = ("options", "multiple", "params")

    template_fields: Sequence[str] = (
        "subject",
        "body",
        "outputs",
        "segmind_conn_id",
        "output_conn_id",
    )

    def __init__(
        self,
        *,
        outputs: Any,
        subject: str = "Review the generated images",
        body: str | None = None,
        segmind_conn_id: str = SegmindHook.default_conn_name,
        output_conn_id: str | None = None,
        preview_side: int = 512,
        max_preview_bytes: int = 64 * 1024 * 1024,
        defaults: str | None = None,
        response_timeout: dt.timedelta | None = None,
        **kwargs: Any,
    ) -> None:
        for name in self.FIXED_ARGS:
            if name in kwargs:
                raise ValueError(f"{type(self).__name__} sets {name!r} itself; do not pass it")
        if preview_side < 16 or max_preview_bytes < 1:
            raise ValueError(
                f"preview_side must be at least 16 pixels and max_preview_bytes positive, "
                f"not {preview_side!r} and {max_preview_bytes!r}"
            )
        super().__init__(
            subject=subject,
            body=body,
            options=[self.APPROVE_ALL, self.REJECT_SELECTED],
            multiple=False,
            defaults=defaults,
            params=self._form([]),
            response_timeout=response_timeout,
            **kwargs,
        )
        self.outputs = outputs
        self.segmind_conn_id = segmind_conn_id
        self.output_conn_id = output_conn_id
        self.preview_side = preview_side
        self.max_preview_bytes = max_preview_bytes

    @classmethod
    def _form(cls, keys: list[str]) -> dict[str, Param]:
        """The answer form: a multi-select of the item keys (the UI shows ``examples`` as its choices)."""
        return {
            cls.REJECT_PARAM: Param(
                [],
                type=["array", "null"],
                items={"type": "string"},
                examples=keys,
                title="Reject",
                description=f"The items to reject, then '{cls.REJECT_SELECTED}'.",
            ),
            cls.REASON_PARAM: Param(
                None,
                type=["string", "null"],
                title="Reason",
                description="Why they are rejected (kept with each rejected item).",
            ),
        }

    def _items(self) -> list[_Item]:
        items: list[_Item] = []
        _collect(self.outputs, "", items)
        return items

    def execute(self, context: Context) -> Any:
        """Make the previews, write the request into Airflow, and wait for a person."""
        items = self._items()
        reviewable = [item.key for item in items if item.problem is None]
        previews = self._previews(items)
        self.body = self._body(items, previews)
        self.params = ParamsDict(self._form(reviewable))
        self.log.info(
            "Asking for a review of %d items (%d with nothing to show)",
            len(items),
            len(items) - len(reviewable),
        )
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Split the items into approved and rejected by the answer; return the approved ones."""
        answer = super().execute_complete(context=context, event=event)
        decision = answer["chosen_options"][0]
        params_input = answer["params_input"] or {}
        items = self._items()
        known = {item.key for item in items}
        selected = list(params_input.get(self.REJECT_PARAM) or [])
        unknown = sorted(set(selected) - known)
        if unknown:
            raise ValueError(f"the answer rejects items this review does not have: {unknown}")
        reason = str(params_input.get(self.REASON_PARAM) or "").strip() or self.NO_REASON
        if decision == self.APPROVE_ALL:
            if selected:
                self.log.warning("'%s' chosen: ignoring the items selected to reject %s", decision, selected)
            selected = []
        elif not selected:
            self.log.warning("'%s' chosen with no item selected: nothing is rejected", decision)
        rejected = {item.key: f"not reviewed: {item.problem}" for item in items if item.problem is not None}
        rejected.update({key: reason for key in selected})
        approved_keys = [item.key for item in items if item.key not in rejected]
        user = answer.get("responded_by_user") or {}
        responded_at = answer.get("responded_at")
        self.log.info(
            "%s: %d approved, %d rejected %s", decision, len(approved_keys), len(rejected), rejected
        )
        return {
            "decision": decision,
            "approved": _approved_part(self.outputs, "", lambda key: key not in rejected),
            "approved_keys": approved_keys,
            "rejected": rejected,
            "reviewed_by": user.get("name") or user.get("id"),
            "responded_at": responded_at.isoformat()
            if isinstance(responded_at, dt.datetime)
            else responded_at,
        }

    # ------------------------------------------------------------------ what the reviewer sees

    def _previews(self, items: list[_Item]) -> dict[str, list[str]]:
        """Per item, an uploaded small JPEG per image output, or a line saying what else it is."""
        hook = SegmindHook(segmind_conn_id=self.segmind_conn_id)
        shown: dict[str, list[str]] = {}
        for item in items:
            if item.problem is None:
                shown[item.key] = [
                    self._preview(hook, source) if is_file else f"> {markdown_text(source)}"
                    for source, is_file in item.sources
                ]
        return shown

    def _preview(self, hook: SegmindHook, source: str) -> str:
        """Markdown for one output file: its uploaded preview, or a line naming it."""
        name = markdown_text(redact_url(source).rsplit("/", 1)[-1])
        try:
            data = self._read(hook, source)
        except (OSError, SegmindError, ValueError) as exc:
            self.log.warning("could not read %s for its preview: %s", redact_url(source), exc)
            return f"*{name}: could not be read ({markdown_text(exc)})*"
        try:
            url = hook.upload(thumbnail(data, self.preview_side), "image/jpeg")
        except ValueError:
            kind = sniff_format(data[:16]) or "not an image"
            return f"*{name}: {kind} ({len(data)} bytes), no preview*"
        except SegmindError as exc:
            self.log.warning("could not upload the preview of %s: %s", redact_url(source), exc)
            return f"*{name}: the preview could not be uploaded*"
        return f"[![{name}]({url})]({url})"  # the UI shows it small: a click opens it

    def _read(self, hook: SegmindHook, source: str) -> bytes:
        """The output's bytes, at most ``max_preview_bytes``: a URL downloaded (no key sent), else read."""
        if urlsplit(source).scheme.lower() in ("http", "https"):
            buffer = io.BytesIO()
            hook.download(source, buffer, max_bytes=self.max_preview_bytes)
            return buffer.getvalue()
        with open_source(source, self.output_conn_id) as handle:
            data: bytes = handle.read(self.max_preview_bytes + 1)
        if len(data) > self.max_preview_bytes:
            raise ValueError(f"larger than max_preview_bytes ({self.max_preview_bytes})")
        return data

    def _body(self, items: list[_Item], previews: Mapping[str, list[str]]) -> str:
        ready = sum(1 for item in items if item.problem is None)
        lines = [self.body.rstrip(), ""] if self.body else []
        lines += [
            f"**{ready} of {len(items)} items to review.** **{self.APPROVE_ALL}** passes every one on; "
            f"or pick items in *Reject*, say why in *Reason*, and **{self.REJECT_SELECTED}**: "
            "the others are passed on.",
        ]
        for item in items:
            title = f"### {markdown_text(item.key)}"
            if item.problem is not None:
                lines += ["", f"{title}: not reviewable", "", f"- {markdown_text(item.problem)}"]
                continue
            lines += ["", title, ""]
            for shown in previews.get(item.key, []):
                lines += [shown, ""]
        return "\n".join(lines).rstrip() + "\n"
