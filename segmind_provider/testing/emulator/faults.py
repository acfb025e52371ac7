"""Injectable faults: errors, slow answers and dropped connections, per endpoint.

Clients are judged by how they behave when the service misbehaves; these rules make
every such case reproducible (a seeded RNG decides the probabilistic ones).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

API_ENDPOINTS = ("submit", "sync", "status", "result", "credits")
ENDPOINTS = (*API_ENDPOINTS, "upload", "history", "history_item", "media")
ENDPOINT_GROUPS = {
    "*": ENDPOINTS,
    "api": API_ENDPOINTS,
    "account": ("history", "history_item"),
}
# error: answer with `status`; delay: answer late; drop: close the connection unanswered;
# hang: hold the connection open unanswered for `delay` seconds (default an hour), then close it;
# corrupt: the real answer with its full Content-Length, the first bytes (a valid PNG signature
# and header) intact and the rest garbage; truncate: the real headers, then half the body, then close;
# flip: the real answer with FLIP_BYTES bytes in the middle inverted (length and signature intact);
# drip: the real headers at once, then the body at `rate` bytes per second.
KINDS = ("error", "delay", "drop", "hang", "corrupt", "truncate", "flip", "drip")
# Kinds that change the real answer: the endpoint always does its work first.
BODY_KINDS = ("corrupt", "truncate", "flip", "drip")
HANG_SECONDS = 3600.0
FLIP_BYTES = 64
DRIP_RATE = 1.0
WHEN = ("before", "after")


@dataclass
class FaultRule:
    """One fault: where, what, how often.

    `count` limits how many times it fires (then it is removed); `probability`
    is rolled per matching call. `when="after"` lets the endpoint do its work
    first (a submit then creates and bills the job) and replaces only the answer,
    which is how a lost response looks to a client (`drop` or `hang`).
    """

    endpoint: str = "*"
    kind: str = "error"
    status: int = 500
    probability: float = 1.0
    count: int | None = None
    delay: float = 0.0
    when: str = "before"
    body: str | None = None
    rate: float = DRIP_RATE
    id: int = 0
    fired: int = 0

    def __post_init__(self) -> None:
        if self.endpoint not in ENDPOINTS and self.endpoint not in ENDPOINT_GROUPS:
            raise ValueError(f"endpoint: must be one of {', '.join((*ENDPOINTS, *ENDPOINT_GROUPS))}")
        if self.kind not in KINDS:
            raise ValueError(f"kind: must be one of {', '.join(KINDS)}")
        if self.when not in WHEN:
            raise ValueError("when: must be 'before' or 'after'")
        if self.kind == "error" and not 400 <= int(self.status) <= 599:
            raise ValueError("status: must be an HTTP error code (400-599)")
        if not 0.0 <= float(self.probability) <= 1.0:
            raise ValueError("probability: must be between 0 and 1")
        if self.count is not None and int(self.count) < 1:
            raise ValueError("count: must be at least 1")
        if float(self.delay) < 0:
            raise ValueError("delay: must be >= 0")
        if float(self.rate) <= 0:
            raise ValueError("rate: must be > 0 (bytes per second)")

    def matches(self, endpoint: str) -> bool:
        return self.endpoint == endpoint or endpoint in ENDPOINT_GROUPS.get(self.endpoint, ())

    @property
    def hold(self) -> float:
        """Seconds a `hang` keeps the connection open before closing it."""
        return self.delay or HANG_SECONDS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultRule:
        """Build from JSON or CLI input; a `delay` alone means a delay fault."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k not in ("id", "fired")}
        if "kind" not in known and "delay" in known and "status" not in known:
            known["kind"] = "delay"
        for name, conv in (("status", int), ("probability", float), ("delay", float), ("rate", float)):
            if name in known:
                known[name] = conv(known[name])
        if known.get("count") is not None:
            known["count"] = int(known["count"])
        return cls(**known)

    @classmethod
    def parse(cls, spec: str) -> FaultRule:
        """Parse the CLI form `endpoint=status,status=502,count=2`."""
        data: dict[str, Any] = {}
        for part in spec.split(","):
            if not part.strip():
                continue
            name, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"fault spec part {part!r} is not name=value")
            data[name.strip()] = value.strip()
        return cls.from_dict(data)


@dataclass
class Fired:
    """What the rules decided for one call."""

    delay_before: float = 0.0
    delay_after: float = 0.0
    before: FaultRule | None = None
    after: FaultRule | None = None
    body: FaultRule | None = None


@dataclass
class FaultBook:
    """The active rules and the seeded dice."""

    seed: int = 0
    rules: list[FaultRule] = field(default_factory=list)
    _next_id: int = 1

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def add(self, rule: FaultRule) -> FaultRule:
        rule.id = self._next_id
        self._next_id += 1
        self.rules.append(rule)
        return rule

    def remove(self, rule_id: int) -> bool:
        before = len(self.rules)
        self.rules = [r for r in self.rules if r.id != rule_id]
        return len(self.rules) != before

    def clear(self) -> None:
        self.rules.clear()
        self._rng = random.Random(self.seed)

    def restart(self, rules: Iterable[FaultRule]) -> None:
        """Start over with copies of these rules: ids from 1, the dice from the seed."""
        self.clear()
        self._next_id = 1
        for rule in rules:
            self.add(copy.deepcopy(rule))

    def roll(self, endpoint: str) -> Fired | None:
        """Decide the faults for one call; None (the common case) costs one empty-list check."""
        if not self.rules:
            return None
        fired = Fired()
        hit = False
        for rule in list(self.rules):
            if not rule.matches(endpoint):
                continue
            if rule.probability < 1.0 and self._rng.random() >= rule.probability:
                continue
            hit = True
            rule.fired += 1
            if rule.count is not None and rule.fired >= rule.count:
                self.rules.remove(rule)
            if rule.kind in BODY_KINDS:
                fired.body = fired.body or rule
            elif rule.kind == "hang":
                if rule.when == "after":
                    fired.after = fired.after or rule
                else:
                    fired.before = fired.before or rule
            elif rule.when == "after":
                fired.delay_after += rule.delay
                if rule.kind != "delay":
                    fired.after = fired.after or rule
            else:
                fired.delay_before += rule.delay
                if rule.kind != "delay":
                    fired.before = fired.before or rule
        return fired if hit else None
