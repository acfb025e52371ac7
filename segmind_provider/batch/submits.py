"""What a batch's rounds of submits paid for, kept in ``task_state_store`` in groups; read back on retry.

A retry must know every request an earlier try paid for, so each answered submit is remembered at
once. One store write per submit is one execution-API round trip per image (about 10 ms of the task's
CPU under ``airflow dags test``, measured in bench/batch_scale.py; a call to the API server in a
deployment), so answers are written as groups: up to ``GROUP`` of them, or those of the last
``GROUP_SECONDS``, under one key per group. A worker killed mid-round leaves unrecorded at most the
submits on their way and the group not yet written: the request history finds those
(``batch.recovery``; a round is at most ``max_in_flight`` submits, and the history is read that far).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from segmind_provider.batch.ledger import Item

__all__ = ["GROUP", "GROUP_SECONDS", "SubmitRecords", "group_key", "read_submits"]

log = logging.getLogger(__name__)

#: Answers written under one key, at most.
GROUP = 25
#: An answer waits at most this long (the next one's arrival) before its group is written.
GROUP_SECONDS = 1.0
#: ``task_state_store`` keys; renaming them breaks in-flight retries. Not under ``ledger.STORE_PREFIX``
#: (item keys follow it).
_PREFIX = "segmind_batch_submits/"


def group_key(round_number: int, index: int) -> str:
    """The key of the ``index``-th group of round ``round_number`` (both counted from the batch's start)."""
    return f"{_PREFIX}{round_number}/{index}"


class SubmitRecords:
    """One round's answered submits, written in groups; :meth:`flush` writes the last one."""

    def __init__(self, store: Any, round_number: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._store, self._round, self._clock = store, round_number, clock
        self._pending: dict[str, dict[str, Any]] = {}
        self._index = 0
        self._since = 0.0

    def add(self, item: Item, record: dict[str, Any]) -> None:
        """Remember ``record`` for ``item`` (written with its group)."""
        if self._store is None:
            return
        if not self._pending:
            self._since = self._clock()
        self._pending[item.key] = {"fingerprint": item.fingerprint, **record}
        if len(self._pending) >= GROUP or self._clock() - self._since >= GROUP_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Write the group gathered so far; one that fails to write is kept for the next try."""
        if not self._pending:
            return
        try:
            self._store.set(group_key(self._round, self._index), self._pending)
        except Exception:
            log.warning(
                "Could not remember %d submits in task_state_store (trying again with the next ones); a "
                "retry before then looks them up in the request history",
                len(self._pending),
                exc_info=True,
            )
            return
        self._index += 1
        self._pending = {}


def read_submits(store: Any, rounds: int) -> dict[str, dict[str, Any]]:
    """Item key -> the record of its latest submit, over rounds ``1..rounds`` (groups read until one is missing)."""
    records: dict[str, dict[str, Any]] = {}
    for round_number in range(1, rounds + 1):
        index = 0
        while isinstance(group := store.get(group_key(round_number, index)), dict):
            records.update((str(k), v) for k, v in group.items() if isinstance(v, dict))
            index += 1
    return records
