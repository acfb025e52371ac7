"""The batch operator's per-item steps: check, reuse, re-attach, submit, record a wave, collect, report.

Kept beside ``operators.batch`` (the operator's flow) so each module stays small; every step works on
the ``Ledger`` of ``operators.batch_state`` and talks to Segmind only through the hook.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset

from segmind_provider.catalog import expected_output_format, validate_payload
from segmind_provider.events import is_content_block
from segmind_provider.exceptions import (
    SegmindError,
    SegmindInsufficientCreditsError,
    SegmindNotFoundError,
    SegmindOutputError,
    SegmindRequestFailedError,
    SegmindSubmitUncertainError,
    SegmindValidationError,
)
from segmind_provider.operators.batch_state import (
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
from segmind_provider.operators.manifest import item_path, output_intact
from segmind_provider.triggers.batch import WAVE_EVENT

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator, Context

    from segmind_provider.hooks.segmind import SegmindHook
    from segmind_provider.operators.spend import CreditGuard

__all__ = [
    "announce",
    "begin_round",
    "checked_payloads",
    "collect",
    "expected_format",
    "failure_listing",
    "first_started_at",
    "floor_message",
    "price",
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


def _keyed(payloads: Any) -> dict[str, Any]:
    if isinstance(payloads, Mapping):
        return {str(key): value for key, value in payloads.items()}
    if isinstance(payloads, (list, tuple)):
        return {str(index): value for index, value in enumerate(payloads)}
    raise SegmindValidationError(
        f"payloads must be a list of payload dicts or a dict of item key to payload, got {type(payloads).__name__}"
    )


def checked_payloads(model: str, payloads: Any, *, validate: bool) -> dict[str, dict[str, Any]]:
    """Item key -> payload to send; every key and payload checked before anything is spent."""
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
    if problems:
        more = f" (and {len(problems) - NAMED_PROBLEMS} more)" if len(problems) > NAMED_PROBLEMS else ""
        raise SegmindValidationError(
            f"{len(problems)} of {len(keyed)} batch items are invalid, nothing was submitted: "
            + "; ".join(problems[:NAMED_PROBLEMS])
            + more
        )
    return checked


def price(model: str, payload: Mapping[str, Any]) -> float:
    from segmind_provider.operators.spend import price_of

    return price_of(model, payload)


def expected_format(model: str, payload: Mapping[str, Any]) -> str | None:
    return expected_output_format(model, payload)


def reuse_stored(ledger: Ledger, manifest: Mapping[str, Any] | None, conn_id: str | None) -> int:
    """Mark items whose manifest entry matches (fingerprint) and whose stored outputs are intact as reused.

    An item an earlier run made costs this run nothing (0.0); one this batch's earlier try submitted
    (since ``ledger.started_at``) was paid by this run and keeps its cost, or None to look it up."""
    if manifest is None:
        return 0
    entries = manifest["items"]
    candidates: list[tuple[Item, dict[str, Any]]] = []
    for item in ledger.with_status(PENDING):
        entry = entries.get(item.key)
        if (
            isinstance(entry, dict)
            and entry.get("status") == COMPLETED
            and entry.get("fingerprint") == item.fingerprint
            and entry.get("output_uris")
        ):
            candidates.append((item, entry))

    def intact(pair: tuple[Item, dict[str, Any]]) -> bool:
        return all(output_intact(str(uri), conn_id) for uri in pair[1]["output_uris"])

    with ThreadPoolExecutor(CHECK_THREADS, thread_name_prefix="segmind-reuse") as pool:
        verdicts = list(pool.map(intact, candidates))
    for (item, entry), ok in zip(candidates, verdicts, strict=True):
        if ok:
            item.end(COMPLETED, uris=[str(u) for u in entry["output_uris"]])
            item.request_id = entry.get("request_id")
            paid_here = float(entry.get("submitted_at") or 0.0) >= ledger.started_at
            item.reused, item.cost = True, (entry.get("cost") if paid_here else 0.0)
    return sum(verdicts)


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
    item: Item, future: Future[tuple[dict[str, Any], float]], store: Any, log: Any
) -> SegmindError | None:
    """Record one submit's outcome on its item and in the store; returns an error that stops the batch."""
    try:
        answer, submitted_at = future.result()
    except SegmindSubmitUncertainError as exc:
        item.end(FAILED, error=f"{exc}; a retry looks it up in the request history before paying again")
        item.uncertain = True
        _remember(store, item, {"uncertain": True, "at": time.time()}, log)
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
        _remember(store, item, {"request_id": item.request_id, "submitted_at": submitted_at}, log)
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
    """When this task instance's first try started the batch (``default`` when no try submitted yet)."""
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
) -> None:
    """Submit ``items`` a few at a time (the key's budget paces them), each remembered as soon as it is
    answered; a new submit starts only once an earlier one is remembered, so a worker killed mid-wave
    leaves at most ``threads`` paid requests unrecorded (those whose answers were on their way)."""
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
                fatal = fatal or _record_submit(item, future, store, log)
                if fatal is None and item.status != NOT_STARTED:
                    launch()
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
    by_request = ledger.by_request()
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
    expected_format: str | None,
    max_bytes: int,
) -> None:
    """Fetch the result (unless the event carried the output) and store it as ``{output_dir}/{key}.{ext}``."""
    from segmind_provider.outputs import store_output

    try:
        output = inline if inline is not None else hook.get_result(str(item.request_id)).get("output")
        uris: list[str] = []
        if output_dir:
            uris = store_output(
                output,
                item_path(output_dir, item.key),
                download=lambda url, fileobj: hook.download(url, fileobj, max_bytes=max_bytes),
                output_conn_id=output_conn_id,
                expected_format=expected_format,
                max_bytes=max_bytes,
            )
        item.end(COMPLETED, uris=uris, output=None if output_dir else output)
    except (SegmindRequestFailedError, SegmindOutputError, SegmindNotFoundError) as exc:
        item.end(FAILED, error=str(exc))


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
