"""Spend that never surprises: a credit floor checked before each submit, and what requests really cost.

Before a submit, the key's balance (``GET /v1/get-user-credits``, read at most once a minute per
key and process, lowered in between by the catalog's price of every submit) must stay at or above
the floor after the submit's estimated price; otherwise nothing more is submitted. What a request
really cost comes from the account API's request history (``credits_deduction``), read in pages
of up to 100 rows, never one call per request: on a 50-per-minute key every extra call is an
image not made.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

from segmind_provider.catalog import estimate_cost
from segmind_provider.exceptions import SegmindCreditFloorError, SegmindValidationError
from segmind_provider.hooks.account import HISTORY_PAGE_SIZE
from segmind_provider.hooks.credits import balance_usd
from segmind_provider.runtime import process_state

if TYPE_CHECKING:
    from segmind_provider.hooks.segmind import SegmindHook

__all__ = ["BALANCE_MAX_AGE", "CreditGuard", "check_floor", "costs_from_history", "price_of"]

#: Seconds a balance read stays good; in between, submits lower it by their estimated price.
BALANCE_MAX_AGE = 60.0
#: History pages read beyond what the wanted requests would fill: other work on the key interleaves.
EXTRA_HISTORY_PAGES = 3
#: The history answers windows of at most 31 days.
MAX_HISTORY_DAYS = 30


def price_of(model: str, payload: Mapping[str, Any] | None = None) -> float:
    """The catalog's price of one call; a floor cannot be kept for a model without one, so that is refused."""
    price = estimate_cost(model, payload)
    if price is None:
        raise SegmindValidationError(
            f"credit_floor needs a price per call, and the catalog has none for model {model!r}: "
            f"add its entry (segmind_provider/catalog/models/) or drop credit_floor"
        )
    return price


class CreditGuard:
    """Lets a submit through only while the balance stays at or above ``floor`` (USD) after it."""

    def __init__(self, hook: SegmindHook, floor: float, log: logging.Logger | Any) -> None:
        if floor < 0:
            raise SegmindValidationError(f"credit_floor must not be negative, got {floor!r}")
        self.hook = hook
        self.floor = float(floor)
        self.log = log
        self.spent = 0.0
        self.balance = process_state().balance(hook.get_settings())

    def available(self) -> float:
        """The balance now, re-read when the last read is a minute old."""
        if self.balance.stale(BALANCE_MAX_AGE):
            self.balance.refresh(balance_usd(self.hook.get_credits()))
        known = self.balance.estimate()
        return 0.0 if known is None else known

    def allow(self, cost: float) -> bool:
        """Count ``cost`` as spent and return True if the balance stays at or above the floor after it."""
        self.available()
        if not self.balance.try_charge(cost, self.floor):
            return False
        self.spent += cost
        return True

    def affordable(self, cost: float) -> int:
        """How many more calls of ``cost`` fit above the floor now (for the pre-flight message)."""
        room = self.available() - self.floor
        return max(int((room + 1e-9) // cost), 0) if cost > 0 else 10**9

    def summary(self) -> str:
        """Spent, left and the floor, for the task's last words."""
        left = self.balance.estimate()
        left_text = f"${left:.4f}" if left is not None else "unknown"
        return f"spent ${self.spent:.4f} (estimated), balance about {left_text}, floor ${self.floor:.4f}"


def check_floor(
    hook: SegmindHook,
    floor: float | None,
    model: str,
    payload: Mapping[str, Any],
    log: logging.Logger | Any,
) -> None:
    """SegmindOperator's check before it pays: the floor (argument, else the connection's) holds after it."""
    if floor is None:
        floor = hook.get_settings().credit_floor
    if floor is None:
        return
    price = price_of(model, payload)
    guard = CreditGuard(hook, floor, log)
    if not guard.allow(price):
        raise SegmindCreditFloorError(
            f"Not submitted: ${price:.4f} for this {model} request would take the balance (about "
            f"${guard.available():.4f}) below the credit floor ${floor:.4f}; this task spent nothing"
        )


def _day(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).date().isoformat()


def _created(row: Mapping[str, Any]) -> float | None:
    text = row.get("created_at")
    if not isinstance(text, str):
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def costs_from_history(
    hook: SegmindHook, model: str, request_ids: Collection[str], since: float
) -> dict[str, float]:
    """What each of ``request_ids`` cost (``credits_deduction``, USD), from the key's request history.

    Pages of up to 100 rows, newest first, filtered by model and starting the day before ``since``
    (the first submit), until every id is found, a row older than ``since`` appears, or the pages
    the ids could fill (plus a few for other work on the key) are read. A request listed once per
    output counts once. Ids not found are left out: their cost stays unknown, never guessed.
    """
    wanted = set(request_ids)
    found: dict[str, float] = {}
    if not wanted:
        return found
    pages = -(-len(wanted) // HISTORY_PAGE_SIZE) + EXTRA_HISTORY_PAGES
    first_day = _day(max(since - 86400.0, time.time() - MAX_HISTORY_DAYS * 86400.0))
    for page in range(1, pages + 1):
        rows = hook.request_history(model=model, from_date=first_day, page=page, per_page=HISTORY_PAGE_SIZE)
        for row in rows:
            request_id = str(row.get("request_id") or "")
            cost = row.get("credits_deduction")
            if request_id in wanted and request_id not in found and isinstance(cost, (int, float)):
                found[request_id] = float(cost)
        created = [c for c in map(_created, rows) if c is not None]
        older = bool(created) and min(created) < since - 60.0
        if len(found) == len(wanted) or len(rows) < HISTORY_PAGE_SIZE or older:
            break
    return found
