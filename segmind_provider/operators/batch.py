"""SegmindBatchOperator: a whole campaign as one task, in waves, paying only for what changed.

One task submits from the worker in waves (at most ``max_in_flight`` requests at once, paced by
the key's budget), defers to one ``SegmindBatchTrigger`` that watches every request in flight,
stores what finished, submits the next wave and defers again until every item has ended. Where
its state lives between waves, across tries and across runs is in ``operators.batch_state``;
reuse of unchanged items in ``operators.manifest``; the credit floor and real costs in
``operators.spend``. See docs/operator.md ("SegmindBatchOperator").
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator

from segmind_provider.account.history import costs_from_history
from segmind_provider.account.spend import CreditGuard, price_of
from segmind_provider.catalog import announce, timeout_seconds
from segmind_provider.durable import fingerprint
from segmind_provider.exceptions import (
    SegmindBatchItemsFailedError,
    SegmindCreditFloorError,
    SegmindError,
    SegmindValidationError,
)
from segmind_provider.hooks.account import HISTORY_PAGE_SIZE
from segmind_provider.hooks.segmind import SegmindHook
from segmind_provider.operators import batch_items
from segmind_provider.operators.batch_recovery import reattach
from segmind_provider.operators.batch_state import (
    COMPLETED,
    FAILED,
    NOT_STARTED,
    PENDING,
    RUNNING,
    Item,
    Ledger,
)
from segmind_provider.operators.manifest import manifest_uri, read_manifest
from segmind_provider.outputs import DEFAULT_MAX_BYTES, store_document
from segmind_provider.triggers.batch import POLL_ENDPOINTS, SegmindBatchTrigger
from segmind_provider.triggers.polling import DEFAULT_POLL_INTERVAL
from segmind_provider.triggers.workload import workload
from segmind_provider.wait import run_in_worker

try:
    from airflow.providers.common.compat.sdk import conf
except ImportError:  # pragma: no cover - without the common.compat provider
    from airflow.configuration import conf

if TYPE_CHECKING:
    from airflow.sdk import Context


__all__ = ["DEFAULT_MAX_IN_FLIGHT", "SegmindBatchOperator"]

DEFAULT_MAX_IN_FLIGHT = 100
#: Beyond the last request's deadline, so the trigger's own timeouts (which name the requests) come first.
WAVE_GRACE_SECONDS = 60.0
#: Threads submitting, and fetching and storing results, in the worker (the key's budget paces them).
WORKER_THREADS = 8
#: Unknown costs are looked up in the request history once this many have piled up (one page's worth).
COST_LOOKUP_BATCH = 100
#: Failed items named in the task's last message (all of them are in the manifest).
NAMED_FAILURES = 20


class _ThreadHooks(threading.local):
    """One hook per worker thread: a hook's sync sessions are not shared between threads."""

    def __init__(self, conn_id: str) -> None:
        self.hook = SegmindHook(segmind_conn_id=conn_id)


class SegmindBatchOperator(BaseOperator):
    """Generate a whole batch of items with one task: waves, one trigger per wave, stored outputs, a manifest.

    :param model: the Segmind model slug (templated).
    :param payloads: a dict of item key to payload, or a list of payload dicts (each keyed by the first
        16 hex digits of its fingerprint, ``-2``... for repeats: inserting an item re-keys no other);
        templated, or an XComArg.
    :param output_dir: where item ``k`` is stored as ``{output_dir}/{k}.{ext}`` and the manifest as
        ``{output_dir}/manifest.json`` (local path or ObjectStoragePath URI); None: nothing is downloaded.
    :param output_conn_id: the connection for ``output_dir``'s storage (templated).
    :param segmind_conn_id: the Segmind connection (templated).
    :param max_in_flight: requests submitted and not yet ended, at most.
    :param deferrable: wait in the triggerer between waves instead of holding a worker slot.
    :param timeout: seconds from each request's submit to its deadline; None: the model's default
        (2.5 times its typical time, at least 600 s).
    :param poll_interval: the longest gap between two polls of one request.
    :param reuse: reuse an item whose manifest entry has the same fingerprint and whose stored outputs
        still have their recorded size and sha256, instead of paying for it again; False also ignores
        an unreadable manifest (which otherwise stops the task before any spend).
    :param fail_on_item_failure: fail the task after the batch ends if any item failed (every item that
        could finish is stored and in the manifest either way); False: succeed and list them.
    :param credit_floor: USD never spent below (overrides the connection's ``credit_floor``).
    :param poll_endpoint: ``"status"``, or ``"result"`` to poll the result endpoint (saves the result
        fetch where it answers non-final states; falls back to the status endpoint otherwise).
    :param expected_duration: typical seconds per request, overriding the model's for the poll schedule.
    :param validate: check every payload against the model's schema before anything is spent.
    :param durable: keep each submitted request in ``task_state_store`` so a retry re-attaches (3.3+).
    :param max_output_bytes: size cap per stored output.
    """

    template_fields: Sequence[str] = ("model", "payloads", "segmind_conn_id", "output_dir", "output_conn_id")
    template_fields_renderers: ClassVar[dict[str, str]] = {"payloads": "json"}
    ui_color = "#ecd9ff"

    def __init__(
        self,
        *,
        model: str,
        payloads: Any,
        output_dir: Any = None,
        output_conn_id: str | None = None,
        segmind_conn_id: str = "segmind_default",
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        timeout: float | timedelta | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        reuse: bool = True,
        fail_on_item_failure: bool = True,
        credit_floor: float | None = None,
        poll_endpoint: str = "status",
        expected_duration: float | None = None,
        validate: bool = True,
        durable: bool = True,
        max_output_bytes: int = DEFAULT_MAX_BYTES,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        seconds = timeout_seconds(timeout, model)
        if seconds <= 0 or poll_interval <= 0 or int(max_in_flight) < 1:
            raise ValueError("timeout and poll_interval must be positive and max_in_flight at least 1")
        if poll_endpoint not in POLL_ENDPOINTS:
            raise ValueError(f"poll_endpoint must be one of {POLL_ENDPOINTS}, got {poll_endpoint!r}")
        if credit_floor is not None and credit_floor < 0:
            raise ValueError(f"credit_floor must not be negative, got {credit_floor!r}")
        self.model = model
        self.payloads = payloads
        self.output_dir = output_dir
        self.output_conn_id = output_conn_id
        self.segmind_conn_id = segmind_conn_id
        self.max_in_flight = int(max_in_flight)
        self.deferrable = deferrable
        self.timeout = seconds
        self.poll_interval = float(poll_interval)
        self.reuse = reuse
        self.fail_on_item_failure = fail_on_item_failure
        self.credit_floor = credit_floor
        self.poll_endpoint = poll_endpoint
        self.expected_duration = expected_duration
        self.validate = validate
        self.durable = durable
        self.max_output_bytes = max_output_bytes

    @cached_property
    def hook(self) -> SegmindHook:
        return SegmindHook(segmind_conn_id=self.segmind_conn_id)

    @cached_property
    def _thread_hooks(self) -> _ThreadHooks:
        return _ThreadHooks(self.segmind_conn_id)

    # ------------------------------------------------------------------ entry points

    def execute(self, context: Context) -> dict[str, Any]:
        announce(self.model, self.log)
        payloads = batch_items.checked_payloads(self.model, self.payloads, validate=self.validate)
        if self.output_dir:
            batch_items.check_item_paths(self.model, payloads, self.output_dir)
        guard = self._guard(payloads)
        items = (Item(key, fingerprint(self.model, p)) for key, p in payloads.items())
        ledger = Ledger(items, time.time(), run=self._run_id(context))
        self._recover(ledger, self._store(context), payloads)
        if guard is not None:
            self._preflight(guard, payloads, ledger)
        return self._advance(context, ledger, payloads, guard)

    def execute_wave(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after a wave's event: store what ended, submit the next wave or finish.

        The batch's ledger comes back in the event (the trigger carries it untouched).
        """
        payloads = batch_items.checked_payloads(self.model, self.payloads, validate=self.validate)
        if not isinstance(event, dict) or not isinstance(event.get("state"), str):
            raise SegmindError(f"unexpected batch trigger event: {str(event)[:300]}")
        state = Ledger.unpack(json.loads(event["state"]))
        store = self._store(context)
        if batch_items.rounds_started(store) > state.rounds:  # resumed from an old event: a later round ran
            self._recover(state, store, payloads)
        self._apply(state, event, payloads)
        return self._advance(context, state, payloads, self._guard(payloads))

    def _recover(self, ledger: Ledger, store: Any, payloads: Mapping[str, dict[str, Any]]) -> None:
        """What earlier runs or tries paid for: reuse what is stored and intact, re-attach what runs."""
        marker = batch_items.read_marker(store)  # one read: the rounds and the batch's first start
        ledger.started_at = batch_items.first_started_at(
            marker, ledger.started_at
        )  # a retry: the first try's
        manifest = self._read_manifest()
        if manifest is not None and ledger.run is not None and manifest.get("run") == ledger.run:
            # this run's earlier try wrote it: its start counts (a retry without task_state_store, 3.2)
            ledger.started_at = batch_items.first_started_at(manifest, ledger.started_at)
        if self.reuse and manifest is not None:
            reused = batch_items.reuse_stored(ledger, manifest, self.output_conn_id)
            if reused:
                self.log.info(
                    "Reusing %d of %d items stored by an earlier run or try (same fingerprint, intact)",
                    reused,
                    len(ledger.items),
                )
        pages = math.ceil(self.max_in_flight / HISTORY_PAGE_SIZE) + 1
        reattach(
            ledger, store, manifest, self.hook, self.log, payloads=payloads, model=self.model, pages=pages
        )
        for item in ledger.with_status(RUNNING):  # re-attached: an earlier run's request cost this one 0.0
            item.cost = ledger.paid_earlier(item.submitted_at)
        ledger.rounds = max(ledger.rounds, int(marker.get("rounds") or 0))  # all known now

    def _read_manifest(self) -> dict[str, Any] | None:
        """The earlier runs' manifest; an unreadable one stops the task before any spend, unless reuse
        is off (the user's way past it: the manifest is then overwritten)."""
        if not self.output_dir:
            return None
        try:
            return read_manifest(self.output_dir, self.output_conn_id)
        except SegmindValidationError as exc:
            if self.reuse:
                raise
            self.log.warning("Ignoring the earlier manifest (reuse=False): %s", exc.detail)
            return None

    # ------------------------------------------------------------------ waves

    def _advance(
        self,
        context: Context,
        ledger: Ledger,
        payloads: Mapping[str, dict[str, Any]],
        guard: CreditGuard | None,
    ) -> dict[str, Any]:
        """Submit up to ``max_in_flight``, then wait for the wave (deferred or here); finish when all ended."""
        store = self._store(context)
        while True:
            if self._submit_wave(ledger, payloads, store, guard) and self.output_dir:
                self._write_manifest(ledger)  # the requests just paid for, for a run killed before they end
            running = ledger.with_status(RUNNING)
            if not running:
                return self._finish(context, ledger, guard)
            ledger.waves += 1
            trigger = self._trigger(ledger, running, payloads)
            if self.deferrable:
                deadline = max(item.submitted_at or 0.0 for item in running) + self.timeout
                grace = max(WAVE_GRACE_SECONDS, 2 * self.poll_interval)
                self.defer(
                    trigger=trigger,
                    method_name="execute_wave",
                    timeout=timedelta(seconds=max(deadline - time.time(), 0.0) + grace),
                )
            self._apply(ledger, run_in_worker(trigger), payloads)

    def _trigger(
        self, ledger: Ledger, running: list[Item], payloads: Mapping[str, dict[str, Any]]
    ) -> SegmindBatchTrigger:
        more = any(item.status == PENDING for item in ledger.items.values())
        return SegmindBatchTrigger(
            requests={
                str(item.request_id): [
                    float(item.submitted_at or time.time()),
                    workload(self.model, payloads[item.key]),
                ]
                for item in running
            },
            model=self.model,
            segmind_conn_id=self.segmind_conn_id,
            poll_interval=self.poll_interval,
            timeout=self.timeout,
            refill_after=math.ceil(len(running) / 2) if more else None,
            expected_duration=self.expected_duration,
            time_scale=self.hook.get_settings().time_scale,
            poll_endpoint=self.poll_endpoint,
            state=json.dumps(ledger.pack(), separators=(",", ":")),
        )

    def _submit_wave(
        self,
        ledger: Ledger,
        payloads: Mapping[str, dict[str, Any]],
        store: Any,
        guard: CreditGuard | None,
    ) -> int:
        """Submit pending items up to ``max_in_flight``; below the credit floor, leave the rest unstarted.

        Returns how many were sent.
        """
        room = self.max_in_flight - len(ledger.with_status(RUNNING))
        chosen: list[Item] = []
        for item in ledger.with_status(PENDING)[: max(room, 0)]:
            if guard is not None and not guard.allow(price_of(self.model, payloads[item.key])):
                for rest in ledger.with_status(PENDING):
                    rest.status = NOT_STARTED
                break
            chosen.append(item)
        if chosen:
            batch_items.begin_round(store, ledger)
            batch_items.submit_all(
                chosen, payloads, self.model, store, self._thread_hooks, self.log, WORKER_THREADS
            )
        return len(chosen)

    def _apply(self, ledger: Ledger, event: Any, payloads: Mapping[str, dict[str, Any]]) -> None:
        """Record a wave's ended requests: fetch and store the completed ones, list the failed ones."""
        completed = batch_items.record_wave(ledger, event, self.log)
        if completed:
            with ThreadPoolExecutor(WORKER_THREADS, thread_name_prefix="segmind-store") as pool:
                list(pool.map(lambda pair: self._collect(pair[0], pair[1], payloads), completed))
        self._costs(ledger, final=False)
        if self.output_dir:
            self._write_manifest(ledger)
        done = len(ledger.with_status(COMPLETED, FAILED, NOT_STARTED))
        self.log.info(
            "Wave %d: %s; %d of %d items ended, %d running",
            ledger.waves,
            str(event.get("message") if isinstance(event, dict) else ""),
            done,
            len(ledger.items),
            len(ledger.with_status(RUNNING)),
        )

    def _collect(self, item: Item, inline: Any, payloads: Mapping[str, dict[str, Any]]) -> None:
        """Fetch (unless the event carried it) and store one completed item; a failure fails the item only."""
        hook = self._thread_hooks.hook
        batch_items.collect(
            item,
            inline,
            hook,
            output_dir=self.output_dir,
            output_conn_id=self.output_conn_id,
            model=self.model,
            payload=payloads[item.key],
            max_bytes=self.max_output_bytes,
        )

    # ------------------------------------------------------------------ money

    def _guard(self, payloads: Mapping[str, dict[str, Any]]) -> CreditGuard | None:
        floor = self.credit_floor if self.credit_floor is not None else self.hook.get_settings().credit_floor
        if floor is None:
            return None

        for payload in payloads.values():
            price_of(self.model, payload)  # a model without a price is refused before any spend
        return CreditGuard(self.hook, floor, self.log)

    def _preflight(self, guard: CreditGuard, payloads: Mapping[str, dict[str, Any]], ledger: Ledger) -> None:
        """The whole batch's estimate against the balance, before the first submit."""
        todo = ledger.with_status(PENDING)
        total = sum(price_of(self.model, payloads[item.key]) for item in todo)
        room = guard.available() - guard.floor
        if total <= room + 1e-9:
            self.log.info(
                "Batch estimate $%.4f for %d items fits above the credit floor ($%.4f to spare)",
                total,
                len(todo),
                room - total,
            )
            return
        each = total / len(todo) if todo else 0.0
        self.log.warning(
            "Batch estimate $%.4f for %d items exceeds the $%.4f above the credit floor $%.4f: about %d items "
            "will be made, the rest left unstarted",
            total,
            len(todo),
            max(room, 0.0),
            guard.floor,
            guard.affordable(each) if each else 0,
        )

    def _costs(self, ledger: Ledger, *, final: bool) -> None:
        """Actual costs from the request history, a page per 100 requests, once enough are unknown."""
        unknown = [  # an earlier run's item cost 0.0 here, so it is never looked up
            item
            for item in ledger.with_status(COMPLETED, FAILED)
            if item.request_id and item.cost is None and not item.uncertain
        ]
        if not unknown or (not final and len(unknown) < COST_LOOKUP_BATCH):
            return

        try:
            costs = costs_from_history(
                self.hook, self.model, [str(i.request_id) for i in unknown], ledger.started_at
            )
        except SegmindError as exc:  # the images are made and stored: a missing bill is not worth failing for
            self.log.warning("Could not read the request history for costs: %s", exc)
            return
        for item in unknown:
            item.cost = costs.get(str(item.request_id))

    # ------------------------------------------------------------------ the end

    def _write_manifest(self, ledger: Ledger) -> str:
        data = json.dumps(ledger.manifest(self.model, with_output=False), indent=1, sort_keys=True)
        return store_document(
            data.encode(), manifest_uri(self.output_dir), output_conn_id=self.output_conn_id
        )

    def _finish(self, context: Context, ledger: Ledger, guard: CreditGuard | None) -> dict[str, Any]:
        self._costs(ledger, final=True)
        manifest = ledger.manifest(self.model, with_output=not self.output_dir)
        uri = self._write_manifest(ledger) if self.output_dir else None
        batch_items.announce(self, context, manifest, uri)
        failed = ledger.with_status(FAILED)
        self.log.info(
            "Batch done: %d completed (%d reused), %d failed, %d not started, cost %s%s",
            manifest["completed"],
            manifest["reused"],
            manifest["failed"],
            len(manifest["not_started"]),
            batch_items.cost_text(manifest),
            f"; manifest {uri}" if uri else "",
        )
        listing = batch_items.failure_listing(failed, NAMED_FAILURES)
        if failed:
            self.log.warning("Failed items: %s", listing)
        if manifest["not_started"]:
            raise SegmindCreditFloorError(batch_items.floor_message(ledger, guard, manifest, uri))
        if failed and self.fail_on_item_failure:
            raise SegmindBatchItemsFailedError(
                f"{len(failed)} of {len(ledger.items)} items failed: {listing}"
                + (f"; everything else is stored (manifest {uri})" if uri else "")
            )
        return manifest

    def _run_id(self, context: Context) -> str | None:
        """The task instance's identity across its tries; None where the context does not say."""
        run_id = context.get("run_id")
        if not run_id:
            return None
        map_index = getattr(context.get("ti"), "map_index", -1)
        return json.dumps([self.dag_id, str(run_id), self.task_id, map_index])

    def _store(self, context: Context) -> Any:
        return context.get("task_state_store") if self.durable else None  # Airflow 3.3+
