"""Spend that never surprises: a credit floor checked before each submit, and what requests really cost.

Before a submit, the key's balance (``GET /v1/get-user-credits``, read at most once a minute per
key and process, lowered in between by the catalog's or directory's price of every submit) must stay at or above
the floor after the submit's estimated price; otherwise nothing more is submitted. What a request
really cost comes from the account's request history (``account.history``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from segmind_provider.catalog import estimate_cost, is_known, nearest_slugs
from segmind_provider.exceptions import SegmindCreditFloorError, SegmindValidationError
from segmind_provider.runtime import process_state

if TYPE_CHECKING:
    from segmind_provider.hooks.api import SegmindApiHook

__all__ = ["BALANCE_MAX_AGE", "CreditGuard", "balance_usd", "check_floor", "price_of"]

#: Seconds a balance read stays good; in between, submits lower it by their estimated price.
BALANCE_MAX_AGE = 60.0


def balance_usd(answer: Mapping[str, Any]) -> float:
    """The spendable balance in a ``get-user-credits`` answer: paid credits plus free credits (USD)."""
    total = 0.0
    for name in ("credits", "free-credits", "free_credits"):
        value = answer.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            total += float(value)
    return total


def price_of(model: str, payload: Mapping[str, Any] | None = None) -> float:
    """The price of one call: the model's catalog entry, else the directory's average price.

    A floor cannot be kept for a model without either (a slug the directory does not list, or one
    it lists without a price), so that is refused, naming the nearest known slugs.
    """
    price = estimate_cost(model, payload)
    if price is None:
        close = nearest_slugs(model)
        hint = f" (nearest known: {', '.join(close)})" if close and not is_known(model) else ""
        raise SegmindValidationError(
            f"credit_floor needs a price per call, and neither the catalog nor Segmind's directory "
            f"has one for model {model!r}{hint}: add its entry (python -m segmind_provider.catalog "
            f"import PAGE), refresh the directory, or drop credit_floor"
        )
    return price


class CreditGuard:
    """Lets a submit through only while the balance stays at or above ``floor`` (USD) after it."""

    def __init__(self, hook: SegmindApiHook, floor: float, log: logging.Logger | Any) -> None:
        if floor < 0:
            raise SegmindValidationError(f"credit_floor must not be negative, got {floor!r}")
        self.hook = hook
        self.floor = float(floor)
        self.log = log
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
        return self.balance.try_charge(cost, self.floor)

    def affordable(self, cost: float) -> int:
        """How many more calls of ``cost`` fit above the floor now (for the pre-flight message)."""
        room = self.available() - self.floor
        return max(int((room + 1e-9) // cost), 0) if cost > 0 else 10**9

    def summary(self) -> str:
        """What is left and the floor, for the task's last words."""
        left = self.balance.estimate()
        left_text = f"${left:.4f}" if left is not None else "unknown"
        return f"balance about {left_text}, floor ${self.floor:.4f}"


def check_floor(
    hook: SegmindApiHook,
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
