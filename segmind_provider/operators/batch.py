"""SegmindBatchOperator: a whole campaign as one task, in waves, paying only for what changed.

One task submits from the worker in waves (at most ``max_in_flight`` requests at once, paced by
the key's budget), defers to one ``SegmindBatchTrigger`` that watches every request in flight,
submits the next wave, stores what finished and defers again until every item has ended. What the
batch knows and where it survives (between waves, across tries, across runs) is the ``batch``
package's: its ledger, its journal, its manifest, its recovery. The credit floor and real costs are
in ``account.spend``. See docs/operator.md ("SegmindBatchOperator").
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator
from jinja2.nativetypes import NativeEnvironment

from segmind_provider.account.history import costs_from_history
from segmind_provider.account.spend import CreditGuard, price_of
from segmind_provider.batch import items as batch_items
from segmind_provider.batch.journal import BatchJournal
from segmind_provider.batch.ledger import FAILED, NOT_STARTED, PENDING, RUNNING, Item, Ledger
from segmind_provider.batch.manifest import read_manifest, write_delta, write_manifest
from segmind_provider.batch.recovery import reattach
from segmind_provider.catalog import announce, timeout_seconds, validate_payload
from segmind_provider.durable import fingerprint
from segmind_provider.exceptions import (
    SegmindBatchItemsFailedError,
    SegmindCreditFloorError,
    SegmindError,
    SegmindValidationError,
)
from segmind_provider.hooks.account import HISTORY_PAGE_SIZE
from segmind_provider.hooks.segmind import SegmindHook
from segmind_provider.outputs import DEFAULT_MAX_BYTES
from segmind_provider.task_defaults import DEFAULT_RETRIES, DEFAULT_RETRY_DELAY
from segmind_provider.triggers.batch import POLL_ENDPOINTS, SegmindBatchTrigger
from segmind_provider.triggers.polling import DEFAULT_POLL_INTERVAL
from segmind_provider.triggers.workload import workload
from segmind_provider.wait import run_in_worker, run_in_worker_within, task_deadline

try:
    from airflow.providers.common.compat.sdk import conf
except ImportError:  # pragma: no cover - without the common.compat provider
    from airflow.configuration import conf

if TYPE_CHECKING:
    from airflow.sdk import Context


__all__ = ["DEFAULT_MAX_IN_FLIGHT", "DEFAULT_WORKER_WAIT", "SegmindBatchOperator"]

DEFAULT_MAX_IN_FLIGHT = 100
#: A wave due sooner than this is waited for in the worker: deferring (the trigger's pickup, its
#: event, scheduling the resume, a task process) costs seconds of its own (docs/operator.md).
DEFAULT_WORKER_WAIT = 5.0
#: Beyond the last request's deadline, so the trigger's own timeouts (which name the requests) come first.
WAVE_GRACE_SECONDS = 60.0
#: Threads submitting, and fetching and storing results, in the worker (the key's budget paces them).
WORKER_THREADS = 8
#: Unknown costs are looked up in the request history once this many have piled up (one page's worth).
COST_LOOKUP_BATCH = 100
#: Failed items named in the task's last message (all of them are in the manifest).
NAMED_FAILURES = 20


class _ResumedPayloads(Mapping[str, dict[str, Any]]):
    """A resumed wave's payloads, by the keys the try's journal planned; each checked when first used.

    A resume touches the payloads of the requests it submits and stores (at most twice
    ``max_in_flight``), so only those are validated: every one was checked before the try's first
    submit, and checking ten thousand again per wave costs seconds.
    """

    def __init__(self, model: str, raw: Any, keys: list[str], *, validate: bool) -> None:
        if isinstance(raw, Mapping):
            self._raw = {str(key): value for key, value in raw.items()}
            same = set(self._raw) == set(keys)
        elif isinstance(raw, (list, tuple)):
            self._raw = dict(zip(keys, raw, strict=False))
            same = len(raw) == len(keys)
        else:
            same = False
        if not same:
            raise SegmindValidationError(
                "the batch's payloads changed between two waves of one try (templates must render the same "
                "items each time); clear the task to start the batch again"
            )
        self._model, self._validate = model, validate
        self._checked: dict[str, dict[str, Any]] = {}

    def __getitem__(self, key: str) -> dict[str, Any]:
        if key not in self._checked:
            raw = self._raw[key]
            self._checked[key] = validate_payload(self._model, raw) if self._validate else dict(raw)
        return self._checked[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)


def _plain_text(text: str, env: Any) -> bool:
    """Text Jinja would render as itself: no delimiter of ``env``, no newline it would rewrite or drop."""
    if (
        isinstance(env, NativeEnvironment)
        or "\r" in text
        or (text.endswith("\n") and not env.keep_trailing_newline)
    ):
        return False
    markers = [env.block_start_string, env.variable_start_string, env.comment_start_string]
    markers += [p for p in (env.line_statement_prefix, env.line_comment_prefix) if p]
    return not any(marker in text for marker in markers)


class _ThreadHooks(threading.local):
    """One hook per worker thread: a hook's sync sessions are not shared between threads."""

    def __init__(self, conn_id: str) -> None:
        self.hook = SegmindHook(segmind_conn_id=conn_id)


class SegmindBatchOperator(BaseOperator):
    """Generate a whole batch of items with one task: waves, one trigger per wave, stored outputs, a manifest.

    :param model: the Segmind model slug (templated).
    :param payloads: a dict of item key to payload, or a list of payload dicts (each keyed by the first
        16 hex digits of its fingerprint, ``-2``... for repeats: inserting an item re-keys no other);
        templated, or an XComArg; or a JSON Lines file of payload dicts (a path, a URI or an
        ``ObjectStoragePath``), read as a list: the way to pass ten thousand of them.
    :param output_dir: where item ``k`` is stored as ``{output_dir}/{k}.{ext}`` and the manifest as
        ``{output_dir}/manifest.json`` (local path or ObjectStoragePath URI); None: nothing is downloaded.
    :param output_conn_id: the connection for ``output_dir``'s storage (templated).
    :param segmind_conn_id: the Segmind connection (templated).
    :param max_in_flight: requests submitted and not yet ended, at most.
    :param deferrable: wait in the triggerer between waves instead of holding a worker slot.
    :param worker_wait: with ``deferrable``, a wave the poll schedule expects to end within this many
        seconds is waited for in the worker (at most that long, then it defers after all): a deferral's
        own round trip costs more than such a wait. 0: every wave defers.
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
    :param retries: Airflow's retries; default ``task_defaults.DEFAULT_RETRIES`` (a retry re-attaches, never
        pays twice, and carries the task past Airflow's stale-executor race, apache/airflow#72716).
    :param retry_delay: the pause before a retry; default ``task_defaults.DEFAULT_RETRY_DELAY``.
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
        worker_wait: float = DEFAULT_WORKER_WAIT,
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
        retries: int | None = DEFAULT_RETRIES,
        retry_delay: timedelta | float = DEFAULT_RETRY_DELAY,
        **kwargs: Any,
    ) -> None:
        # Declared, not read from kwargs: Airflow fills them from default_args first, and .partial()
        # takes a class's defaults from its __init__ signature (segmind_provider.task_defaults says why).
        super().__init__(retries=retries, retry_delay=retry_delay, **kwargs)
        seconds = timeout_seconds(timeout, model)
        if seconds <= 0 or poll_interval <= 0 or int(max_in_flight) < 1 or worker_wait < 0:
            raise ValueError(
                "timeout and poll_interval must be positive, max_in_flight at least 1 and worker_wait not negative"
            )
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
        self.worker_wait = float(worker_wait)
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

    def render_template(
        self, content: Any, context: Any, jinja_env: Any = None, seen_oids: set[int] | None = None
    ) -> Any:
        """Text without a template is kept as it is, not compiled: Airflow renders ``payloads`` again at
        every resume, and compiling ten thousand prompts costs 14 s per wave (measured in bench/batch_scale.py)."""
        if isinstance(content, str) and not content.endswith(tuple(self.template_ext)):
            env = jinja_env or self.get_template_env()
            if _plain_text(content, env):
                return content
            jinja_env = env
        return super().render_template(content, context, jinja_env, seen_oids)

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
        journal = self._journal(context, ledger.run)
        self._write_delta(ledger.changed(), ledger)
        journal.start(ledger)
        return self._advance(context, ledger, payloads, guard, journal, [])

    def execute_wave(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after a wave's event: submit the next wave, store what ended, defer again or finish.

        The ledger comes back from the try's journal (``batch.journal``); the event says only what ended.
        """
        if not isinstance(event, dict):
            raise SegmindError(f"unexpected batch trigger event: {str(event)[:300]}")
        journal = self._journal(context, self._run_id(context), carried=event.get("state"))
        ledger = journal.load()
        raw = batch_items.load_payloads(self.payloads)
        payloads = _ResumedPayloads(self.model, raw, list(ledger.items), validate=self.validate)
        store = self._store(context)
        if batch_items.rounds_started(store) > ledger.rounds:  # resumed from an old event: a later round ran
            self._recover(ledger, store, payloads)
        completed = batch_items.record_wave(ledger, event, self.log)
        return self._advance(
            context, ledger, payloads, self._guard(payloads, check=False), journal, completed
        )

    def _journal(self, context: Context, run: str | None, carried: str | None = None) -> BatchJournal:
        try_number = int(getattr(context.get("ti"), "try_number", 1) or 1)
        return BatchJournal(context.get("task_state_store"), run, try_number, carried=carried)

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
        journal: BatchJournal,
        completed: list[tuple[Item, Any]],
    ) -> dict[str, Any]:
        """Submit up to ``max_in_flight`` while what the last wave completed is stored (Segmind works in the
        meantime; submits stay on this thread, the only one that writes ``task_state_store``), record
        what changed, then wait for the next wave; finish when every item has ended."""
        store = self._store(context)
        while True:
            with ThreadPoolExecutor(1, thread_name_prefix="segmind-collect") as side:
                storing = side.submit(
                    self._collect_all, completed, payloads, task_deadline(self, context)
                )  # while the next wave is sent
                self._submit_wave(ledger, payloads, store, guard, ending=len(completed))
                storing.result()
            self._costs(ledger, final=False)
            running = ledger.with_status(RUNNING)
            self.log.info(
                "Wave %d: %d of %d items ended, %d running",
                ledger.waves,
                len(ledger.items) - len(running) - ledger.count(PENDING),
                len(ledger.items),
                len(running),
            )
            if not running:
                return self._finish(context, ledger, guard, journal)
            ledger.waves += 1
            self._write_delta(ledger.changed(), ledger)
            journal.record(ledger)
            trigger = self._trigger(ledger, running, payloads, journal)
            event = self._short_wave(trigger, ledger.waves) if self.deferrable else run_in_worker(trigger)
            if event is None:
                deadline = max(item.submitted_at or 0.0 for item in running) + self.timeout
                grace = max(WAVE_GRACE_SECONDS, 2 * self.poll_interval)
                self.defer(
                    trigger=trigger,
                    method_name="execute_wave",
                    timeout=timedelta(seconds=max(deadline - time.time(), 0.0) + grace),
                )
            completed = batch_items.record_wave(ledger, event, self.log)

    def _short_wave(self, trigger: SegmindBatchTrigger, wave: int) -> dict[str, Any] | None:
        """The wave's event, waited for here if it is due within ``worker_wait`` and comes by then; else None."""
        due = trigger.expected_event_at() if self.worker_wait > 0 else None
        left = None if due is None else max(due - time.time(), 0.0)
        if left is None or left > self.worker_wait:
            return None
        self.log.info(
            "Wave %d is due in %.1f s: waited for in the worker (worker_wait %.1f s)",
            wave,
            left,
            self.worker_wait,
        )
        event = run_in_worker_within(trigger, self.worker_wait)
        if event is None:
            self.log.info("The wave was not over within %.1f s; deferring", self.worker_wait)
        return event

    def _trigger(
        self,
        ledger: Ledger,
        running: list[Item],
        payloads: Mapping[str, dict[str, Any]],
        journal: BatchJournal,
    ) -> SegmindBatchTrigger:
        more = ledger.count(PENDING) > 0
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
            state=journal.carried(),
        )

    def _submit_wave(
        self,
        ledger: Ledger,
        payloads: Mapping[str, dict[str, Any]],
        store: Any,
        guard: CreditGuard | None,
        *,
        ending: int = 0,
    ) -> int:
        """Submit pending items up to ``max_in_flight`` (``ending``: running items whose request completed,
        not yet stored); below the credit floor, leave the rest unstarted. Returns how many were sent.
        """
        room = self.max_in_flight - ledger.count(RUNNING) + ending
        chosen: list[Item] = []
        for item in ledger.first(PENDING, room):
            if guard is not None and not guard.allow(price_of(self.model, payloads[item.key])):
                for rest in ledger.with_status(PENDING):
                    rest.status = NOT_STARTED
                break
            chosen.append(item)
        if chosen:
            batch_items.begin_round(store, ledger)
            batch_items.submit_all(
                chosen,
                payloads,
                self.model,
                store,
                self._thread_hooks,
                self.log,
                WORKER_THREADS,
                ledger.rounds,
            )
        return len(chosen)

    def _collect_all(
        self,
        completed: list[tuple[Item, Any]],
        payloads: Mapping[str, dict[str, Any]],
        deadline: float | None,
    ) -> None:
        """Fetch and store a wave's completed items, a few at a time, none past the task's
        ``execution_timeout``; a failure fails its item only."""
        if not completed:
            return
        keyed = [(item, inline, payloads[item.key]) for item, inline in completed]  # validated here, once
        with ThreadPoolExecutor(WORKER_THREADS, thread_name_prefix="segmind-store") as pool:
            list(pool.map(lambda job: self._collect(job[0], job[1], job[2], deadline), keyed))

    def _collect(self, item: Item, inline: Any, payload: Mapping[str, Any], deadline: float | None) -> None:
        """Fetch (unless the event carried it) and store one completed item."""
        batch_items.collect(
            item,
            inline,
            self._thread_hooks.hook,
            output_dir=self.output_dir,
            output_conn_id=self.output_conn_id,
            model=self.model,
            payload=payload,
            max_bytes=self.max_output_bytes,
            deadline=deadline,
        )

    # ------------------------------------------------------------------ money

    def _guard(self, payloads: Mapping[str, dict[str, Any]], *, check: bool = True) -> CreditGuard | None:
        """The credit floor's guard, or None; ``check``: refuse a payload without a price (before any spend)."""
        floor = self.credit_floor if self.credit_floor is not None else self.hook.get_settings().credit_floor
        if floor is None:
            return None
        for payload in payloads.values() if check else ():
            price_of(self.model, payload)
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
        unknown = ledger.unpriced()  # an earlier run's item cost 0.0 here, so it is never looked up
        if not unknown or (not final and len(unknown) < COST_LOOKUP_BATCH):
            return

        oldest = min((i.submitted_at for i in unknown if i.submitted_at), default=ledger.started_at)
        wanted = {id(i) for i in unknown}
        newer = sum(  # this batch's later requests, listed before the oldest wanted one
            1
            for i in ledger.items.values()
            if i.request_id and id(i) not in wanted and (i.submitted_at or 0.0) > oldest
        )
        try:
            costs = costs_from_history(
                self.hook, self.model, [str(i.request_id) for i in unknown], ledger.started_at, newer=newer
            )
        except SegmindError as exc:  # the images are made and stored: a missing bill is not worth failing for
            self.log.warning("Could not read the request history for costs: %s", exc)
            return
        for item in unknown:
            item.cost = costs.get(str(item.request_id))

    # ------------------------------------------------------------------ the end

    def _write_delta(self, changed: list[Item], ledger: Ledger) -> None:
        """The changed items' manifest entries, for a rerun while the batch runs (a killed run's requests)."""
        if self.output_dir and changed:
            entries = {item.key: item.delta() for item in changed}
            write_delta(self.output_dir, self.output_conn_id, entries, ledger.meta())

    def _finish(
        self, context: Context, ledger: Ledger, guard: CreditGuard | None, journal: BatchJournal
    ) -> dict[str, Any]:
        self._costs(ledger, final=True)
        manifest = ledger.manifest(self.model, with_output=not self.output_dir)
        uri = write_manifest(self.output_dir, self.output_conn_id, manifest) if self.output_dir else None
        journal.close()
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
