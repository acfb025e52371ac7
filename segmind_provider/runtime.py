"""The one home for process-wide state, and its one lifetime for connection settings.

A worker or triggerer process shares, between all its hooks and triggers:

- the resolved connection settings, per connection id, each kept ``settings_ttl`` (60 s)
  seconds: a changed key or host reaches running triggers within that time;
- the request budget of each API key (``hooks.budget``) and its known credit balance
  (``hooks.credits``);
- the pooled async HTTP client of each running event loop (``hooks.client``);
- the durations observed per model (``durations``) and one random generator;
- the clock and the sleeps every wait uses, given to the constructor (tests pass virtual ones):
  ``sleep``/``asleep`` for retry back-offs, ``pace``/``apace`` for the budgets' pacing.

Nothing else in the package keeps state between calls. Tests and benches start afresh with
:func:`reset_process_state`.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping

from segmind_provider.durations import DurationObserver
from segmind_provider.hooks.budget import RequestBudget
from segmind_provider.hooks.client import LoopClient, LoopClients
from segmind_provider.hooks.connection import ConnectionSettings, afetch_settings, fetch_settings
from segmind_provider.hooks.credits import CreditBalance

__all__ = ["ProcessState", "process_state", "reset_process_state"]

SETTINGS_TTL = 60.0
POOL_LIMIT = 50
"""Sockets per (event loop, base URL): thousands of triggers share this many connections."""


class _LoopState:
    """What one event loop owns: its HTTP clients and its settings lookups in flight."""

    __slots__ = ("clients", "lookups")

    def __init__(self, pool_limit: int) -> None:
        self.clients = LoopClients(pool_limit)
        self.lookups: dict[str, asyncio.Task[ConnectionSettings]] = {}


class ProcessState:
    """Everything hooks and triggers of one process share (see the module docstring)."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        asleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        pace: Callable[[float], None] | None = None,
        apace: Callable[[float], Awaitable[None]] | None = None,
        settings_ttl: float = SETTINGS_TTL,
        pool_limit: int = POOL_LIMIT,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        self.clock = clock
        self.sleep = sleep
        self.asleep = asleep
        self.pace = pace or sleep
        self.apace = apace or asleep
        self.settings_ttl = settings_ttl
        self.pool_limit = pool_limit
        self.environ = environ
        self.durations = DurationObserver()
        self.rng = random.Random()
        self._lock = threading.Lock()
        self._settings: dict[str, tuple[float, ConnectionSettings]] = {}
        self._budgets: dict[str, RequestBudget] = {}
        self._balances: dict[str, CreditBalance] = {}
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )
        self._keepers: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ connection settings

    def _cached(self, conn_id: str) -> ConnectionSettings | None:
        entry = self._settings.get(conn_id)
        if entry is not None and entry[0] > self.clock():
            return entry[1]
        return None

    def _keep(self, conn_id: str, settings: ConnectionSettings) -> ConnectionSettings:
        with self._lock:
            self._settings[conn_id] = (self.clock() + self.settings_ttl, settings)
        return settings

    def settings(self, conn_id: str) -> ConnectionSettings:
        """The connection's settings, read the blocking way at most once per ``settings_ttl``."""
        return self._cached(conn_id) or self._keep(conn_id, fetch_settings(conn_id, self.environ))

    async def asettings(self, conn_id: str) -> ConnectionSettings:
        """The connection's settings without blocking the loop; one lookup in flight per loop and id."""
        cached = self._cached(conn_id)
        if cached is not None:
            return cached
        lookups = self._loop_state().lookups
        task = lookups.get(conn_id)
        if task is None:
            task = asyncio.get_running_loop().create_task(afetch_settings(conn_id, self.environ))
            lookups[conn_id] = task
            task.add_done_callback(lambda _: lookups.pop(conn_id, None))
        return self._keep(conn_id, await asyncio.shield(task))

    # ------------------------------------------------------------ budgets and clients

    def budget(self, settings: ConnectionSettings) -> RequestBudget:
        """The budget of the settings' API key, configured with their limit."""
        budget = self._budgets.get(settings.key_id)
        if budget is None:
            with self._lock:
                budget = self._budgets.setdefault(
                    settings.key_id,
                    RequestBudget(settings.key_id, clock=self.clock, sleep=self.pace, asleep=self.apace),
                )
        if settings.requests_per_minute:
            budget.configure(settings.requests_per_minute)
        return budget

    def cached_budget(self, conn_id: str) -> RequestBudget | None:
        """The budget of a connection whose settings are at hand, else None: never a lookup (or an await)."""
        settings = self._cached(conn_id)
        return None if settings is None else self.budget(settings)

    def balance(self, settings: ConnectionSettings) -> CreditBalance:
        """The known credit balance of the settings' API key."""
        with self._lock:
            return self._balances.setdefault(settings.key_id, CreditBalance(self.clock))

    def _loop_state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            state = self._loops[loop] = _LoopState(self.pool_limit)
            keeper = loop.create_task(state.clients.close_on_shutdown(), name="segmind-session-keeper")
            self._keepers.add(keeper)
            keeper.add_done_callback(self._keepers.discard)
        return state

    def client(self, base_url: str) -> LoopClient:
        """The running loop's pooled client for ``base_url``."""
        return self._loop_state().clients.get(base_url)

    async def aclose_clients(self) -> None:
        """Close the running loop's sessions now (benches, a clean shutdown)."""
        state = self._loops.get(asyncio.get_running_loop())
        if state is not None:
            await state.clients.aclose()


_current = ProcessState()


def process_state() -> ProcessState:
    """This process's state."""
    return _current


def reset_process_state(**kwargs: object) -> ProcessState:
    """Start afresh (tests, benches running several scenarios): forget settings, budgets, durations."""
    global _current
    _current = ProcessState(**kwargs)  # type: ignore[arg-type]
    return _current
