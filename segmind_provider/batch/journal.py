"""The ledger between the waves of one try, written as what changed: bytes linear in N, not N x waves.

A deferred batch leaves the worker between waves; what it knew must wait somewhere. Carrying the
whole ledger through each wave's trigger (kwargs and event, both kept in the metadata database)
writes ~250 bytes per item per wave: at 10,000 items and 200 waves, 389 MB. The journal writes it
once instead:

- the **plan** (every item's key and fingerprint, in order) once per try, in parts of at most
  ``PART_BYTES`` (the store warns above 64 KB per value);
- then, per wave, only the items whose record changed (submitted, ended, stored), as one more
  numbered chunk; a resume folds plan and chunks back into the ledger.

Its home is the task's ``task_state_store`` (Airflow 3.3+; one key per part, under the try's own
prefix, deleted when the try finishes) with a read-through copy in a local file, so a resume on the
same machine reads one file instead of one store round trip per chunk; a resume elsewhere (another
Celery worker) reads what the local copy lacks from the store. Without a store (Airflow 3.2) the same
parts ride in the wave's trigger as one string, as before: bytes N x waves, fine for hundreds of items.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from segmind_provider.batch.ledger import PENDING, Item, Ledger

__all__ = ["PART_BYTES", "BatchJournal"]

log = logging.getLogger(__name__)

#: Largest value written under one key (the store warns above 64 KB).
PART_BYTES = 48_000
#: ``task_state_store`` keys; renaming them breaks in-flight batches.
_PREFIX = "segmind_batch/journal/"
_LOCAL_DIR = "segmind-batch-journal"


def _parts(records: Iterable[tuple[str, Any]], limit: int = PART_BYTES) -> Iterator[dict[str, Any]]:
    """``{key: record}`` dicts of at most ``limit`` bytes of JSON each (a record larger alone: by itself)."""
    part: dict[str, Any] = {}
    size = 2
    for key, record in records:
        length = len(json.dumps(record, separators=(",", ":"))) + len(key) + 6
        if part and size + length > limit:
            yield part
            part, size = {}, 2
        part[key] = record
        size += length
    if part:
        yield part


class _LocalCopy:
    """An append-only file of the values written (one JSON line each): the fast path of a resume."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def read(self) -> dict[str, Any]:
        if self.path is None:
            return {}
        values: dict[str, Any] = {}
        with contextlib.suppress(OSError), self.path.open(encoding="utf-8") as handle:
            for line in handle:
                try:
                    key, value = json.loads(line)
                except ValueError:  # a line cut by a killed worker: the store has it
                    continue
                values[key] = value
        return values

    def append(self, values: Mapping[str, Any]) -> None:
        if self.path is None or not values:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.writelines(
                    json.dumps([key, value], separators=(",", ":")) + "\n" for key, value in values.items()
                )
        except OSError as exc:  # only a cache: the store holds every value
            log.debug("Could not write the batch journal's local copy %s: %s", self.path, exc)

    def remove(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


class BatchJournal:
    """One try's ledger between waves: ``start`` once, ``record`` per wave, ``load`` on resume.

    :param store: the task's ``task_state_store``, or None (Airflow 3.2): the values then travel in the
        trigger (:meth:`carried`, and back through ``carried=`` on resume).
    :param identity: the task instance (``Ledger.run``), naming the local copy; None: no local copy.
    :param try_number: the try, so a retry's journal never mixes with its predecessor's.
    :param carried: the string an earlier wave's trigger carried back (no store only).
    """

    def __init__(
        self,
        store: Any,
        identity: str | None,
        try_number: int,
        *,
        carried: str | None = None,
        local_dir: Path | None = None,
    ) -> None:
        self.store = store
        self.prefix = f"{_PREFIX}{int(try_number)}/"
        self.carried_values: dict[str, Any] = json.loads(carried) if carried and store is None else {}
        path = None
        if store is not None and identity is not None:
            name = hashlib.sha256(f"{identity}/{try_number}".encode()).hexdigest()[:24]
            path = (local_dir or Path(tempfile.gettempdir()) / _LOCAL_DIR) / f"{name}.jsonl"
        self.local = _LocalCopy(path)
        self.head = {"plan": 0, "chunks": 0}  # how many plan parts and chunks are written

    # ------------------------------------------------------------------ writing

    def start(self, ledger: Ledger) -> None:
        """Write the plan (keys and fingerprints in order) and every item already known (reused, re-attached)."""
        if self.store is not None:
            self.local.remove()  # a copy left by a try that had this number before (a cleared task)
        plan = _parts((item.key, item.fingerprint) for item in ledger.items.values())
        values = {f"{self.prefix}plan/{index}": part for index, part in enumerate(plan)}
        self.head = {"plan": len(values), "chunks": 0}
        self._write(values)
        self.record(ledger, [item for item in ledger.items.values() if item.status != PENDING])

    def record(self, ledger: Ledger, changed: Iterable[Item] | None = None) -> int:
        """Append what changed since the last record (``changed``, default: the items marked changed);
        returns how many item records were written."""
        items = list(ledger.changed() if changed is None else changed)
        values: dict[str, Any] = {}
        meta = ledger.meta()
        packs = ((item.key, [None, *item.pack()[1:]]) for item in items)  # the plan has the fingerprint
        for part in _parts(packs) if items else iter([{}]):
            self.head["chunks"] += 1
            values[f"{self.prefix}{self.head['chunks']}"] = {"meta": meta, "items": part}
        self._write(values)
        ledger.settle()
        return len(items)

    def _write(self, values: Mapping[str, Any]) -> None:
        """The parts first, then the head naming them: a reader never sees a head ahead of its parts."""
        head = dict(self.head)
        everything = {**values, self.prefix + "head": head}
        if self.store is None:
            self.carried_values.update(everything)
            return
        for key, value in values.items():
            self.store.set(key, value)
        self.store.set(self.prefix + "head", head)
        self.local.append(everything)

    # ------------------------------------------------------------------ reading

    def load(self) -> Ledger:
        """The ledger as the last record left it: the plan's items, then each chunk's changes in order."""
        values = self.carried_values if self.store is None else self.local.read()
        head = (
            values.get(self.prefix + "head") if self.store is None else self.store.get(self.prefix + "head")
        )
        if not isinstance(head, dict):
            raise LookupError(f"no batch journal under {self.prefix!r}")
        self.head = {"plan": int(head["plan"]), "chunks": int(head["chunks"])}
        wanted = [f"{self.prefix}plan/{i}" for i in range(int(head["plan"]))]
        wanted += [f"{self.prefix}{n}" for n in range(1, int(head["chunks"]) + 1)]
        missing = {key: self.store.get(key) for key in wanted if key not in values} if self.store else {}
        if missing:
            self.local.append(missing)
            values = {**values, **missing}
        items: dict[str, Item] = {}
        for key in wanted[: int(head["plan"])]:
            for item_key, fingerprint in values[key].items():
                items[item_key] = Item(item_key, fingerprint)
        meta: dict[str, Any] = {}
        for key in wanted[int(head["plan"]) :]:
            chunk = values[key]
            meta = chunk["meta"]
            for item_key, packed in chunk["items"].items():
                items[item_key] = Item.unpack(item_key, [items[item_key].fingerprint, *packed[1:]])
        ledger = Ledger.from_meta(items.values(), meta)
        ledger.settle()
        return ledger

    def carried(self) -> str | None:
        """What the trigger carries for the worker's next resume: everything without a store, else None."""
        if self.store is not None:
            return None
        return json.dumps(self.carried_values, separators=(",", ":"))

    def close(self) -> None:
        """Delete this try's journal (the batch finished; its manifest and the item records remain)."""
        if self.store is None:
            return
        keys = [f"{self.prefix}plan/{i}" for i in range(self.head["plan"])]
        keys += [f"{self.prefix}{n}" for n in range(1, self.head["chunks"] + 1)] + [self.prefix + "head"]
        for key in keys:
            with contextlib.suppress(Exception):  # retention expires what is left
                self.store.delete(key)
        self.local.remove()
