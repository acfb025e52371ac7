"""A batch's state: one record per item, where it travels between waves and where it survives a retry.

Three places, each for what survives there:

- **between waves of one try** the try's journal (``batch.journal``): the plan once, then what
  changed in each wave; a wave's trigger carries only the requests it watches;
- **across tries** (a retry, a worker killed mid-batch) each submitted item's request id is written
  to the task's ``task_state_store`` (Airflow 3.3+, kept across tries) as soon as its answer comes,
  in groups of submits (``batch.submits``): a retry re-attaches to every request already paid for.
  A marker key counts the rounds of submits started: a first try finds none and reads nothing back;
  a resume whose ledger is behind it (a try killed mid-round, then resumed from its last event)
  re-attaches before it submits;
- **across runs** the manifest in ``output_dir`` (``batch.manifest``), written after each wave's
  submits and after its results are stored, says what is stored and for which fingerprint (a later
  run reuses what did not change) and which requests are still running (a run killed mid-batch and
  started again re-attaches to them: on Airflow 3.2, or where ``airflow dags test`` replaced the run
  and its ``task_state_store`` with it).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from segmind_provider.chat import chat_of

__all__ = [
    "COMPLETED",
    "FAILED",
    "NOT_STARTED",
    "PENDING",
    "RUNNING",
    "STORE_MARKER",
    "Item",
    "Ledger",
    "store_key",
]

# An item's states in the ledger, spelled as manifests store them: not API statuses
# (``segmind_provider.status``), and never compared with one.
PENDING = "PENDING"  # not submitted yet
RUNNING = "RUNNING"  # submitted, not ended
COMPLETED = "COMPLETED"
FAILED = "FAILED"
NOT_STARTED = "NOT_STARTED"  # left unsubmitted (the credit floor)

#: ``task_state_store`` keys; renaming them breaks in-flight retries.
STORE_MARKER = "segmind_batch"
STORE_PREFIX = "segmind_batch/"


_PACKED = (
    "fingerprint",
    "request_id",
    "submitted_at",
    "status",
    "output_uris",
    "output",
    "error",
    "cost",
    "reused",
    "uncertain",
    "output_sizes",
    "output_sha256",
    "unstored",
)


def _empty(value: Any) -> bool:
    """A field at its default (None, False, []); 0.0 is a known cost, not empty."""
    return value is None or value is False or (isinstance(value, list) and not value)


def store_key(key: str) -> str:
    """The ``task_state_store`` key of item ``key``'s request."""
    return STORE_PREFIX + key


@dataclass
class Item:
    """One item of the batch."""

    key: str
    fingerprint: str
    request_id: str | None = None
    submitted_at: float | None = None
    status: str = PENDING
    output_uris: list[str] = field(default_factory=list)
    output: Any = None
    error: str | None = None
    cost: float | None = None
    reused: bool = False
    uncertain: bool = False
    output_sizes: list[int] = field(default_factory=list)  # bytes of each stored output, as stored
    output_sha256: list[str] = field(default_factory=list)  # and its digest: a rerun reuses only these bytes
    unstored: bool = False  # Segmind completed it but its output was not stored: a rerun fetches it again
    changed: bool = field(default=False, compare=False, repr=False)  # since the journal's last record

    def __setattr__(self, name: str, value: Any) -> None:
        """Any change marks the item, so the journal writes only what changed in a wave; an item in a
        ledger tells it too (``Ledger`` keeps its items by status and the changed ones apart)."""
        ledger: Ledger | None = self.__dict__.get("_ledger")
        if ledger is not None:
            ledger._set(self, name, value)
            return
        object.__setattr__(self, name, value)
        if name != "changed":
            object.__setattr__(self, "changed", True)

    def pack(self) -> list[Any]:
        """A compact JSON form for the journal: the fields in order, without the trailing defaults."""
        packed = [getattr(self, name) for name in _PACKED]
        while packed and _empty(packed[-1]):
            packed.pop()
        return packed

    @classmethod
    def unpack(cls, key: str, packed: list[Any]) -> Item:
        """The item back from :meth:`pack`; a ledger packed before the last fields existed lacks them."""
        if len(packed) > len(_PACKED):
            raise ValueError(f"item {key!r}: {len(packed)} packed fields, at most {len(_PACKED)} known")
        return cls(key, **dict(zip(_PACKED, packed, strict=False)))

    def end(
        self,
        status: str,
        *,
        error: str | None = None,
        uris: Iterable[str] = (),
        digests: Iterable[tuple[int, str]] = (),
        output: Any = None,
    ) -> None:
        """End the item; ``digests`` are the stored outputs' (size, sha256), in the order of ``uris``."""
        self.status = status
        self.error = error
        self.output_uris = list(uris)
        pairs = list(digests)
        self.output_sizes = [size for size, _ in pairs]
        self.output_sha256 = [digest for _, digest in pairs]
        self.unstored = False
        if output is not None:
            self.output = output

    def delta(self) -> dict[str, Any]:
        """The item's manifest entry without its empty fields: what a wave's delta holds."""
        return {k: v for k, v in self.entry(with_output=False).items() if not _empty(v)}

    def entry(self, with_output: bool) -> dict[str, Any]:
        """The item's manifest entry."""
        entry: dict[str, Any] = {
            "request_id": self.request_id,
            "status": self.status,
            "output_uris": list(self.output_uris),
            "error": self.error,
            "cost": self.cost,
            "reused": self.reused,
            "fingerprint": self.fingerprint,
            "submitted_at": self.submitted_at,
            "output_sizes": list(self.output_sizes),
            "output_sha256": list(self.output_sha256),
            "unstored": self.unstored,
        }
        if with_output:
            entry["output"] = self.output
        return entry


class Ledger:
    """Every item of the batch, in the order given, with the batch's own facts (start, waves)."""

    def __init__(
        self,
        items: Iterable[Item],
        started_at: float,
        waves: int = 0,
        rounds: int = 0,
        run: str | None = None,
    ) -> None:
        self.items: dict[str, Item] = {item.key: item for item in items}
        self.started_at = started_at  # when this run's first try started the batch
        self.waves = waves
        self.rounds = rounds  # rounds of submits this ledger has seen (see batch.items.begin_round)
        self.run = run  # the task instance (DAG, run, task, map index): the manifest says whose it is
        # Indexes kept as items change, so a wave's work is the wave's, not the whole batch's: the items
        # by status (each in the order it reached that status; pending ones in the batch's order), the
        # changed ones, and the ended ones whose cost is still to be looked up. Items change from the
        # threads that submit and store, so every change and every read of an index holds the lock.
        self._lock = threading.Lock()
        self._by_status: dict[str, dict[str, Item]] = {}
        self._changed: dict[str, Item] = {}
        self._unpriced: dict[str, Item] = {}
        for item in self.items.values():
            self._by_status.setdefault(item.status, {})[item.key] = item
            self._index(item)
            object.__setattr__(item, "_ledger", self)

    def _set(self, item: Item, name: str, value: Any) -> None:
        """Set one of ``item``'s fields (``Item.__setattr__``) and keep the indexes true."""
        with self._lock:
            if name == "status" and value != item.status:
                self._by_status[item.status].pop(item.key, None)
                self._by_status.setdefault(value, {})[item.key] = item
            object.__setattr__(item, name, value)
            if name != "changed":
                object.__setattr__(item, "changed", True)
            self._index(item)

    def _index(self, item: Item) -> None:
        if item.changed:
            self._changed[item.key] = item
        else:
            self._changed.pop(item.key, None)
        if (
            item.status in (COMPLETED, FAILED)
            and item.request_id
            and item.cost is None
            and not item.uncertain
        ):
            self._unpriced[item.key] = item
        else:
            self._unpriced.pop(item.key, None)

    def meta(self) -> dict[str, Any]:
        """The batch's own facts, without its items (``batch.journal`` writes those as they change)."""
        return {"started_at": self.started_at, "waves": self.waves, "rounds": self.rounds, "run": self.run}

    @classmethod
    def from_meta(cls, items: Iterable[Item], meta: Mapping[str, Any]) -> Ledger:
        return cls(
            items,
            float(meta["started_at"]),
            int(meta.get("waves", 0)),
            int(meta.get("rounds", 0)),
            meta.get("run"),
        )

    def changed(self) -> list[Item]:
        """Items changed since :meth:`settle`."""
        with self._lock:
            return list(self._changed.values())

    def settle(self) -> None:
        """Mark every item as recorded."""
        with self._lock:
            for item in self._changed.values():
                object.__setattr__(item, "changed", False)
            self._changed.clear()

    def with_status(self, *statuses: str) -> list[Item]:
        """The items in any of ``statuses``, status by status."""
        with self._lock:
            return [item for status in statuses for item in self._by_status.get(status, {}).values()]

    def first(self, status: str, most: int) -> list[Item]:
        """At most ``most`` items in ``status``, the first to reach it first (pending ones: in order)."""
        with self._lock:
            return list(itertools.islice(self._by_status.get(status, {}).values(), max(most, 0)))

    def count(self, status: str) -> int:
        """How many items are in ``status``, without listing them."""
        with self._lock:
            return len(self._by_status.get(status, ()))

    def by_request(self, *statuses: str) -> dict[str, Item]:
        """Items with a request, by its id; only those in ``statuses`` when given."""
        chosen = self.with_status(*statuses) if statuses else list(self.items.values())
        return {item.request_id: item for item in chosen if item.request_id}

    def unpriced(self) -> list[Item]:
        """Ended items with a request of this run whose cost is still to be looked up (a cost already
        known, 0.0 for an earlier run's request, or an uncertain submit is not)."""
        with self._lock:
            return list(self._unpriced.values())

    def paid_earlier(self, submitted_at: Any) -> float | None:
        """An earlier run's request costs this run 0.0; None (look it up) when this run's tries paid for it
        or when it is not known when it was submitted."""
        if isinstance(submitted_at, (int, float)) and float(submitted_at) < self.started_at:
            return 0.0
        return None

    def unknown_costs(self) -> list[Item]:
        """Items this run paid for (or may have) whose cost is not known."""
        return [i for i in self.items.values() if i.cost is None and (i.request_id or i.uncertain)]

    def manifest(self, model: str, with_output: bool) -> dict[str, Any]:
        """``{"items": {key: entry}, "order": [key...], "completed": n, "cost": total or None, ...}``.

        ``cost`` is None (unknown) when any item paid for has no known cost: never a partial sum.
        """
        items = {key: item.entry(with_output) for key, item in self.items.items()}
        for key, item in self.items.items():
            chat = chat_of(model, item.output) if with_output and item.status == COMPLETED else None
            if chat is not None:  # an LLM's answer, read into one shape (segmind_provider.chat)
                items[key]["chat"] = chat
        unknown = len(self.unknown_costs())
        costs = [item.cost for item in self.items.values() if item.cost is not None]
        total = round(sum(costs), 10)  # float noise off, a $0.000003 embedding's price kept
        return {
            "items": items,
            "order": list(self.items),
            "completed": sum(1 for item in self.items.values() if item.status == COMPLETED),
            "failed": sum(1 for item in self.items.values() if item.status == FAILED),
            "cost": None if unknown else total,
            "cost_known": total,
            "cost_unknown": unknown,
            "model": model,
            "reused": sum(1 for item in self.items.values() if item.reused),
            "not_started": [item.key for item in self.items.values() if item.status == NOT_STARTED],
            "waves": self.waves,
            "run": self.run,
            "started_at": self.started_at,
        }
