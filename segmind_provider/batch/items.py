"""The batch operator's per-item steps: check, reuse, re-attach, submit, record a wave, collect, report.

Kept beside ``operators.batch`` (the operator's flow) so each module stays small; every step works on
the ``Ledger`` of ``batch.ledger`` and talks to Segmind only through the hook.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset

from segmind_provider.batch.ledger import (
    COMPLETED,
    FAILED,
    NOT_STARTED,
    PENDING,
    RUNNING,
    STORE_MARKER,
    Item,
    Ledger,
    store_key,
)
from segmind_provider.batch.manifest import file_digest, item_path, output_intact, output_matches
from segmind_provider.batch.submits import SubmitRecords
from segmind_provider.catalog import expected_output_format, validate_payload
from segmind_provider.destination import check_path_format, split_name
from segmind_provider.durable import fingerprint
from segmind_provider.exceptions import (
    SegmindError,
    SegmindInsufficientCreditsError,
    SegmindNotFoundError,
    SegmindOutputError,
    SegmindRequestFailedError,
    SegmindSubmitUncertainError,
    SegmindValidationError,
)
from segmind_provider.hooks.errors import is_content_block
from segmind_provider.media import EXTENSIONS, normalize_format
from segmind_provider.triggers.batch import WAVE_EVENT
from segmind_provider.wait import store_outputs

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator, Context

    from segmind_provider.account.spend import CreditGuard
    from segmind_provider.hooks.segmind import SegmindHook

__all__ = [
    "announce",
    "begin_round",
    "check_item_paths",
    "checked_payloads",
    "collect",
    "cost_text",
    "failure_listing",
    "first_started_at",
    "floor_message",
    "list_key",
    "load_payloads",
    "read_marker",
    "record_wave",
    "reuse_stored",
    "rounds_started",
    "submit_all",
]

#: Item keys become file names: no separators, no leading dot, printable, at most this long.
MAX_KEY_LENGTH = 200
_KEY = re.compile(r"[^/\\\x00-\x1f.][^/\\\x00-\x1f]*")
#: Invalid items named in one validation error (the rest are counted).
NAMED_PROBLEMS = 10
CHECK_THREADS = 8
#: Hex digits of its fingerprint in a list item's key: what it asks, not where it stands in the list.
LIST_KEY_DIGITS = 16


def load_payloads(payloads: Any) -> Any:
    """``payloads`` as given, or, for a reference to a JSON Lines file (a local path, a URI, an
    ``ObjectStoragePath`` with its ``conn_id``), the list of payload dicts it holds, one per line.

    A reference keeps ten thousand payloads out of the rendered template fields (Airflow stores and
    renders those at every resume); the file is read once per try and once per resume.
    """
    if not isinstance(payloads, (str, os.PathLike)):
        return payloads
    from airflow.sdk import ObjectStoragePath

    path = payloads if isinstance(payloads, ObjectStoragePath) else ObjectStoragePath(str(payloads))
    loaded: list[Any] = []
    try:
        with path.open("r", encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    loaded.append(json.loads(line))
                except ValueError as exc:
                    raise SegmindValidationError(
                        f"payloads file {payloads}: line {number} is not JSON ({exc}); nothing was submitted"
                    ) from None
    except OSError as exc:
        raise SegmindValidationError(
            f"cannot read the payloads file {payloads} ({type(exc).__name__}: {exc}): give a JSON Lines "
            f"file, one payload object per line; nothing was submitted"
        ) from exc
    return loaded


def _keyed(payloads: Any) -> dict[str, Any]:
    if isinstance(payloads, Mapping):
        return {str(key): value for key, value in payloads.items()}
    if isinstance(payloads, (list, tuple)):
        return {str(index): value for index, value in enumerate(payloads)}
    raise SegmindValidationError(
        f"payloads must be a list of payload dicts or a dict of item key to payload, got {type(payloads).__name__}"
    )


def list_key(model: str, payload: Mapping[str, Any], seen: dict[str, int]) -> str:
    """A list item's key: the first 16 hex digits of its fingerprint, ``-2``, ``-3``... for repeats of
    the same payload (in list order). Inserting, removing or moving an item leaves every other key as
    it was, so a rerun reuses them all."""
    base = fingerprint(model, payload)[:LIST_KEY_DIGITS]
    seen[base] = seen.get(base, 0) + 1
    return base if seen[base] == 1 else f"{base}-{seen[base]}"


def checked_payloads(model: str, payloads: Any, *, validate: bool) -> dict[str, dict[str, Any]]:
    """Item key -> payload to send; every key and payload checked before anything is spent.

    A dict's keys are the user's; a list's items (named by position in errors) get :func:`list_key`.
    """
    payloads = load_payloads(payloads)
    keyed = _keyed(payloads)
    problems: list[str] = []
    checked: dict[str, dict[str, Any]] = {}
    for key, payload in keyed.items():
        if len(key) > MAX_KEY_LENGTH or not _KEY.fullmatch(key):
            problems.append(
                f"item key {key!r} cannot be a file name (no '/', '\\\\', control characters or leading "
                f"'.', at most {MAX_KEY_LENGTH} characters)"
            )
            continue
        try:
            checked[key] = validate_payload(model, payload) if validate else dict(payload)
        except SegmindValidationError as exc:
            problems.append(f"item {key!r}: {exc.detail}")
        except (TypeError, ValueError):
            problems.append(f"item {key!r}: the payload must be a dict, got {type(payload).__name__}")
    _refuse(problems, f"{len(problems)} of {len(keyed)} batch items are invalid")
    if isinstance(payloads, Mapping):
        return checked
    seen: dict[str, int] = {}
    return {list_key(model, payload, seen): payload for payload in checked.values()}


def _refuse(problems: list[str], head: str) -> None:
    """One error naming the first problems (the rest counted), before anything is spent."""
    if problems:
        more = f" (and {len(problems) - NAMED_PROBLEMS} more)" if len(problems) > NAMED_PROBLEMS else ""
        raise SegmindValidationError(
            f"{head}, nothing was submitted: " + "; ".join(problems[:NAMED_PROBLEMS]) + more
        )


def check_item_paths(model: str, payloads: Mapping[str, Mapping[str, Any]], output_dir: Any) -> None:
    """Refuse, before the first submit, item keys whose files would clash or contradict their format.

    Item ``k`` is stored as ``{output_dir}/k`` when ``k`` ends in a media extension (which must then
    match the requested format), else as ``k`` plus the format's extension (the content's, when the
    catalog does not say). Two items may not end as one file, compared case-insensitively (a bucket
    or a laptop's disk may not tell ``Hero.png`` from ``hero.png``).
    """
    problems: list[str] = []
    by_stem: dict[str, list[tuple[str, str | None]]] = {}
    for key, payload in payloads.items():
        wanted = expected_output_format(model, payload)
        stem, suffix = split_name(key)
        if suffix:
            try:
                check_path_format(item_path(output_dir, key), wanted)
            except SegmindValidationError:
                problems.append(
                    f"item key {key!r} ends in {suffix!r} but its payload asks for {wanted}: make the key's "
                    f"extension match, or drop it to have the right one appended"
                )
                continue
        extension = suffix.lower() or EXTENSIONS.get(normalize_format(wanted) or "")
        by_stem.setdefault(stem.casefold(), []).append((key, extension))
    for group in by_stem.values():
        finals: dict[str, list[str]] = {}
        for key, extension in group:
            finals.setdefault(extension or ".*", []).append(key)
        wild = finals.pop(".*", [])  # the extension is only known once stored: any of them may clash
        clashes = [(e, keys + wild) for e, keys in finals.items()] or [(".*", wild)]
        for extension, keys in clashes:
            if len(keys) > 1:
                problems.append(
                    f"items {', '.join(map(repr, keys))} would all be stored as "
                    f"{split_name(keys[0])[0] + extension!r}: give them distinct keys"
                )
    _refuse(problems, "the batch's item keys cannot all be stored as file names")


def _unchanged(entry: Mapping[str, Any], conn_id: str | None) -> list[tuple[int, str]] | None:
    """The (size, sha256) of every output the entry names, when each still has its recorded size and
    digest; None when one changed or is gone. An entry written before they were recorded: its outputs
    must be recognised and decode in full, and their digests are taken now."""
    uris = [str(uri) for uri in entry["output_uris"]]
    sizes, digests = entry.get("output_sizes"), entry.get("output_sha256")
    if isinstance(sizes, list) and isinstance(digests, list) and len(sizes) == len(digests) == len(uris):
        recorded = list(zip(sizes, digests, strict=True))
        same = all(output_matches(uri, n, d, conn_id) for uri, (n, d) in zip(uris, recorded, strict=True))
        return recorded if same else None
    if not all(output_intact(uri, conn_id) for uri in uris):
        return None
    try:
        return [file_digest(uri, conn_id) for uri in uris]
    except (OSError, ValueError):
        return None


def _stored_entry(entry: Any, fingerprint: str | None = None) -> bool:
    """A manifest entry of a stored output (of ``fingerprint``, when given)."""
    return (
        isinstance(entry, dict)
        and entry.get("status") == COMPLETED
        and bool(entry.get("output_uris"))
        and (fingerprint is None or entry.get("fingerprint") == fingerprint)
    )


def _spare_entries(ledger: Ledger, entries: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Fingerprint -> stored entries under keys this batch no longer has, whose files no item of it
    writes: a list batch keyed by position before its keys were fingerprints, or a renamed key. An
    item without an entry of its own reuses one in place instead of paying again."""
    taken = {split_name(key)[0].casefold() for key in ledger.items}
    spare: dict[str, list[dict[str, Any]]] = {}
    for key, entry in entries.items():
        if key in ledger.items or not _stored_entry(entry):
            continue
        names = {
            split_name(str(uri).rstrip("/").rpartition("/")[2])[0].casefold() for uri in entry["output_uris"]
        }
        if not names & taken:
            spare.setdefault(str(entry.get("fingerprint")), []).append(entry)
    return spare


def reuse_stored(ledger: Ledger, manifest: Mapping[str, Any] | None, conn_id: str | None) -> int:
    """Mark items whose manifest entry matches (fingerprint) and whose stored outputs are unchanged as reused.

    An item keeps its entry's request id, submission time and digests, so a later try counts it as
    this run's when it was (its cost, or None to look it up) and an earlier run's (0.0) when not."""
    if manifest is None:
        return 0
    entries = manifest["items"]
    spare = _spare_entries(ledger, entries)
    candidates: list[tuple[Item, dict[str, Any]]] = []
    for item in ledger.with_status(PENDING):
        entry = entries.get(item.key)
        if not _stored_entry(entry, item.fingerprint):
            others = spare.get(item.fingerprint)
            entry = others.pop(0) if others else None
        if entry is not None:
            candidates.append((item, entry))

    with ThreadPoolExecutor(CHECK_THREADS, thread_name_prefix="segmind-reuse") as pool:
        verdicts = list(pool.map(lambda pair: _unchanged(pair[1], conn_id), candidates))
    for (item, entry), digests in zip(candidates, verdicts, strict=True):
        if digests is not None:
            item.end(COMPLETED, uris=[str(u) for u in entry["output_uris"]], digests=digests)
            item.request_id = entry.get("request_id")
            submitted_at = entry.get("submitted_at")
            item.submitted_at = float(submitted_at) if isinstance(submitted_at, (int, float)) else None
            earlier = ledger.paid_earlier(item.submitted_at)
            item.reused, item.cost = True, (earlier if earlier is not None else entry.get("cost"))
    return sum(1 for digests in verdicts if digests is not None)


def _remember(store: Any, item: Item, record: dict[str, Any], log: logging.Logger | Any) -> None:
    if store is None:
        return
    try:
        store.set(store_key(item.key), {"fingerprint": item.fingerprint, **record})
    except Exception:
        log.warning(
            "Could not remember item %s in task_state_store; a retry would submit it again",
            item.key,
            exc_info=True,
        )


def _submit_one(hooks: Any, model: str, payload: dict[str, Any]) -> tuple[dict[str, Any], float]:
    answer = hooks.hook.submit(model, payload)
    return answer, time.time()


def _record_submit(
    item: Item, future: Future[tuple[dict[str, Any], float]], store: Any, records: SubmitRecords, log: Any
) -> SegmindError | None:
    """Record one submit's outcome on its item and in the store; returns an error that stops the batch.

    An uncertain submit also gets a key of its own, which the user deletes to have it submitted anew
    (``batch.recovery.UNCERTAIN``)."""
    try:
        answer, submitted_at = future.result()
    except SegmindSubmitUncertainError as exc:
        item.end(FAILED, error=f"{exc}; a retry looks it up in the request history before paying again")
        item.uncertain = True
        record = {"uncertain": True, "at": time.time()}
        _remember(store, item, record, log)
        records.add(item, record)
    except SegmindInsufficientCreditsError as exc:
        item.end(NOT_STARTED, error=str(exc))
    except SegmindValidationError as exc:
        item.end(FAILED, error=str(exc))
    except SegmindError as exc:
        if exc.status_code not in (400, 422):
            return exc
        item.end(FAILED, error=str(exc))
    else:
        item.request_id, item.submitted_at, item.status = str(answer["request_id"]), submitted_at, RUNNING
        records.add(item, {"request_id": item.request_id, "submitted_at": submitted_at})
    return None


def begin_round(store: Any, ledger: Ledger) -> None:
    """Say in the store that a round of submits starts, before it does: a resume that finds a later
    round than its ledger knows (a try killed mid-round) re-attaches before submitting anything. The
    marker also keeps when the batch started, so a retry knows what its earlier tries paid for."""
    ledger.rounds += 1
    if store is not None:
        store.set(STORE_MARKER, {"rounds": ledger.rounds, "at": time.time(), "started_at": ledger.started_at})


def read_marker(store: Any) -> dict[str, Any]:
    """The store's marker (``rounds``, ``at``, ``started_at``), read once; empty before any round."""
    marker = store.get(STORE_MARKER) if store is not None else None
    return marker if isinstance(marker, dict) else {}


def rounds_started(store: Any) -> int:
    """How many rounds of submits this task instance started, over all its tries."""
    return int(read_marker(store).get("rounds") or 0)


def first_started_at(marker: Mapping[str, Any], default: float) -> float:
    """When this task instance's first try started the batch, from the store's marker or the manifest
    (``default`` when neither says)."""
    value = marker.get("started_at")
    return min(float(value), default) if isinstance(value, (int, float)) else default


def submit_all(
    items: list[Item],
    payloads: Mapping[str, dict[str, Any]],
    model: str,
    store: Any,
    hooks: Any,
    log: logging.Logger | Any,
    threads: int,
    round_number: int,
) -> None:
    """Submit ``items`` a few at a time (the key's budget paces them), each remembered with its group
    (``batch.submits``) as soon as it is answered; a worker killed mid-wave leaves unrecorded only the
    answers on their way and the group not yet written, which the request history finds."""
    records = SubmitRecords(store, round_number)
    queue = iter(items)
    outstanding: dict[Future[tuple[dict[str, Any], float]], Item] = {}
    fatal: SegmindError | None = None
    with ThreadPoolExecutor(threads, thread_name_prefix="segmind-submit") as pool:

        def launch() -> None:
            item = next(queue, None)
            if item is not None:
                outstanding[pool.submit(_submit_one, hooks, model, payloads[item.key])] = item

        for _ in range(threads):
            launch()
        while outstanding:
            done, _ = wait(outstanding, return_when=FIRST_COMPLETED)
            for future in done:
                item = outstanding.pop(future)
                fatal = fatal or _record_submit(item, future, store, records, log)
                if fatal is None and item.status != NOT_STARTED:
                    launch()
    records.flush()
    if any(item.status == NOT_STARTED for item in items):
        for rest in (i for i in items if i.status == PENDING):
            rest.end(NOT_STARTED, error="not submitted: the account is out of credits")
    if fatal is not None:
        raise fatal
    log.info("Submitted %d requests", sum(1 for item in items if item.status == RUNNING))


def record_wave(ledger: Ledger, event: Any, log: logging.Logger | Any) -> list[tuple[Item, Any]]:
    """Apply a wave's event: failures recorded with their reasons; completed items returned to collect."""
    if (
        not isinstance(event, dict)
        or event.get("status") != WAVE_EVENT
        or not isinstance(event.get("ended"), dict)
    ):
        raise SegmindError(f"unexpected batch trigger event: {str(event)[:300]}")
    by_request = ledger.by_request(RUNNING)  # what this wave watched: a wave's work, not the batch's
    completed: list[tuple[Item, Any]] = []
    for request_id, record in event["ended"].items():
        item = by_request.get(request_id)
        if item is None or item.status != RUNNING or not isinstance(record, dict):
            continue  # an event replayed after it was applied, or not ours
        if record.get("status") == "success":
            completed.append((item, record.get("output")))
        else:
            item.end(FAILED, error=str(record.get("message") or record.get("status")))
    if len(completed) < len(event["ended"]):
        log.info("%d requests of this wave failed (listed at the end)", len(event["ended"]) - len(completed))
    return completed


def collect(
    item: Item,
    inline: Any,
    hook: SegmindHook,
    *,
    output_dir: Any,
    output_conn_id: str | None,
    model: str,
    payload: Mapping[str, Any],
    max_bytes: int,
    deadline: float | None = None,
) -> None:
    """Fetch the result (unless the event carried the output) and store it as ``{output_dir}/{key}.{ext}``
    the way a single request's output is stored (``wait.store_outputs``: media checked, text as UTF-8)."""
    try:
        output = inline if inline is not None else hook.get_result(str(item.request_id)).get("output")
        uris: list[str] = []
        digests: list[tuple[int, str]] = []
        if output_dir:
            uris = store_outputs(
                hook,
                output,
                item_path(output_dir, item.key),
                model=model,
                payload=payload,
                output_conn_id=output_conn_id,
                max_bytes=max_bytes,
                deadline=deadline,
            )
            try:
                digests = [file_digest(uri, output_conn_id) for uri in uris]
            except OSError as exc:
                raise SegmindOutputError(f"reading back the stored output failed: {exc}") from exc
        item.end(COMPLETED, uris=uris, digests=digests, output=None if output_dir else output)
    except (SegmindRequestFailedError, SegmindNotFoundError) as exc:
        item.end(FAILED, error=str(exc))
    except SegmindOutputError as exc:  # made and paid for, not stored (a full disk): a rerun fetches it again
        item.end(FAILED, error=str(exc))
        item.unstored = True


def cost_text(manifest: Mapping[str, Any]) -> str:
    """``$1.2300``, or ``unknown ($0.8000 known; 3 items' costs not found)``: an unknown cost is never 0."""
    if manifest["cost"] is not None:
        return f"${manifest['cost']:.4f}"
    return (
        f"unknown (${manifest['cost_known']:.4f} known; {manifest['cost_unknown']} items' costs not found "
        f"in the request history)"
    )


def failure_listing(failed: list[Item], most: int) -> str:
    """``key (reason); ...`` for the first ``most`` failed items, content blocks said as such."""
    named = [
        f"{item.key} ({'content blocked: ' if is_content_block(item.error) else ''}{item.error})"
        for item in failed[:most]
    ]
    more = f"; and {len(failed) - most} more (all in the manifest)" if len(failed) > most else ""
    return "; ".join(named) + more


def floor_message(
    ledger: Ledger, guard: CreditGuard | None, manifest: Mapping[str, Any], uri: str | None
) -> str:
    """Spent, left, and which items were not started: the task's last words at the credit floor."""
    not_started = list(manifest["not_started"])
    submitted = [i for i in ledger.items.values() if i.request_id and not i.reused]
    known = [i.cost for i in submitted if i.cost is not None]
    spent = f"${sum(known):.4f} from the request history for {len(known)} of {len(submitted)} submitted items"
    left = f"; {guard.summary()}" if guard is not None else ""
    named = ", ".join(not_started[:NAMED_PROBLEMS]) + (
        f" and {len(not_started) - NAMED_PROBLEMS} more" if len(not_started) > NAMED_PROBLEMS else ""
    )
    where = f"; the manifest ({uri}) lists them" if uri else ""
    return (
        f"Stopped before the credit floor: {len(not_started)} of {len(ledger.items)} items were not started "
        f"({named}); spent {spent}{left}{where}. Add credits (or lower credit_floor) and clear the task: "
        f"finished items are reused, not paid again"
    )


def announce(operator: BaseOperator, context: Context, manifest: Mapping[str, Any], uri: str | None) -> None:
    """Each Asset outlet's event says where the batch is and what it cost (not every URI: see the manifest)."""
    events = context.get("outlet_events")
    if events is None:
        return
    for asset in (o for o in (operator.outlets or []) if isinstance(o, Asset)):
        extra = events[asset].extra
        extra.update(
            model=manifest["model"],
            output_dir=str(getattr(operator, "output_dir", "") or ""),
            manifest=uri,
            completed=manifest["completed"],
            failed=manifest["failed"],
            reused=manifest["reused"],
            cost=manifest["cost"],
        )
