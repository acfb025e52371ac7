"""Retries the provider's task classes default to, and why they are safe.

Airflow's stale-executor-event race (apache/airflow#72716; 3.3.2 has no fix) fails a deferred task
that has just resumed from a trigger that fired: the scheduler drains the executor's SUCCESS for the
try that deferred only after the resumed attempt is queued or running. Only a retry carries a task
past it, and Airflow's default is no retry. A retry of ours never pays twice (operators re-attach to
what earlier tries paid for; a sensor only reads), so every task class defaults to a few quick ones.
A task or ``default_args`` that sets ``retries`` (0 too) keeps its own; a site's higher
``[core] default_task_retries`` wins.
"""

from __future__ import annotations

from datetime import timedelta

try:
    from airflow.providers.common.compat.sdk import conf
except ImportError:  # pragma: no cover - without the common.compat provider
    from airflow.configuration import conf

__all__ = ["DEFAULT_RETRIES", "DEFAULT_RETRY_DELAY"]

#: Retries when neither the task nor ``default_args`` set any (a site's higher default wins).
DEFAULT_RETRIES = max(2, conf.getint("core", "default_task_retries", fallback=0))
#: A retry re-attaches or re-reads: no reason to wait Airflow's default five minutes.
DEFAULT_RETRY_DELAY = timedelta(seconds=10)
