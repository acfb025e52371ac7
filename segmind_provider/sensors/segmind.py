"""SegmindRequestSensor: wait on a Segmind request submitted elsewhere (another task, another system).

A sensor only reads, so a retry is always safe: unless the task (or ``default_args``) sets its own,
it gets ``DEFAULT_SENSOR_RETRIES`` retries ``DEFAULT_SENSOR_RETRY_DELAY`` apart. That is what carries a
deferred sensor past Airflow's stale-executor-event race (apache/airflow#72716), in which the
scheduler fails a task that has just resumed from a successful trigger; the retry pokes once, finds
the request done, and returns its result (docs/reliability.md has the measurement).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from segmind_provider.events import raise_for_event
from segmind_provider.exceptions import SegmindTimeoutError
from segmind_provider.hooks.errors import failure_error, failure_reason
from segmind_provider.hooks.segmind import SegmindHook
from segmind_provider.status import RequestStatus, read_status
from segmind_provider.triggers.polling import DEFAULT_POLL_INTERVAL
from segmind_provider.triggers.segmind import SegmindRequestTrigger

try:
    from airflow.providers.common.compat.sdk import conf
except ImportError:  # pragma: no cover - without the common.compat provider
    from airflow.configuration import conf

try:
    from airflow.sdk.exceptions import AirflowSensorTimeout
except ImportError:  # pragma: no cover - older task SDK
    from airflow.exceptions import AirflowSensorTimeout  # type: ignore[no-redef]

if TYPE_CHECKING:
    from airflow.sdk import Context


__all__ = ["DEFAULT_SENSOR_RETRIES", "DEFAULT_SENSOR_RETRY_DELAY", "SegmindRequestSensor"]

#: Retries when neither the task nor ``default_args`` set any (a site's higher default wins).
DEFAULT_SENSOR_RETRIES = max(2, conf.getint("core", "default_task_retries", fallback=0))
#: A retry only re-reads the request's status: no reason to wait Airflow's default five minutes.
DEFAULT_SENSOR_RETRY_DELAY = timedelta(seconds=10)


class SegmindRequestSensor(BaseSensorOperator):
    """Wait until a Segmind request is done; return its result (``output`` as the API gave it).

    The request was submitted elsewhere at an unknown time, so the deferred wait polls
    every ``poll_interval`` (no model-duration guess: the job may be about to finish).

    :param request_id: the v2 request id (templated), e.g. ``{{ ti.xcom_pull('gen', key='request_id') }}``.
    :param segmind_conn_id: the Segmind connection.
    :param deferrable: wait in the triggerer (same trigger as the operator) instead of poking.
    :param poll_interval: seconds between status checks (the sensor's ``poke_interval``).
    :param timeout: the whole wait, seconds or a timedelta; passing it fails the task without a retry.
    :param retries: Airflow's retries; default ``DEFAULT_SENSOR_RETRIES`` (a retry only reads, and it
        survives Airflow's stale-executor-event race, apache/airflow#72716).
    :param retry_delay: the pause before a retry; default ``DEFAULT_SENSOR_RETRY_DELAY``.
    """

    template_fields: Sequence[str] = ("request_id",)

    def __init__(
        self,
        *,
        request_id: str,
        segmind_conn_id: str = "segmind_default",
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        timeout: float | timedelta = 600,
        retries: int | None = DEFAULT_SENSOR_RETRIES,
        retry_delay: timedelta | float = DEFAULT_SENSOR_RETRY_DELAY,
        **kwargs: Any,
    ) -> None:
        # Declared here, not read from kwargs: Airflow fills them from default_args first, and
        # .partial() (mapped sensors) takes a class's defaults from its __init__ signature.
        super().__init__(
            poke_interval=poll_interval, timeout=timeout, retries=retries, retry_delay=retry_delay, **kwargs
        )
        self.request_id = request_id
        self.segmind_conn_id = segmind_conn_id
        self.deferrable = deferrable
        self.poll_interval = float(poll_interval)

    @cached_property
    def hook(self) -> SegmindHook:
        return SegmindHook(segmind_conn_id=self.segmind_conn_id)

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        done = self.poke(context)
        if done:
            return done.xcom_value if isinstance(done, PokeReturnValue) else None
        wait = float(self.timeout) if self.timeout is not None else 600.0
        self.defer(
            trigger=SegmindRequestTrigger(
                request_id=self.request_id,
                segmind_conn_id=self.segmind_conn_id,
                poll_interval=self.poll_interval,
                end_time=time.time() + wait,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=wait + max(60.0, 2 * self.poll_interval)),
        )

    def poke(self, context: Context) -> PokeReturnValue | bool:
        answer = self.hook.get_status(self.request_id)
        status = read_status(answer)
        self.log.info("Segmind request %s is %s", self.request_id, answer.get("status") or "unknown")
        if status is RequestStatus.COMPLETED:
            return PokeReturnValue(is_done=True, xcom_value=self._result())
        if status is RequestStatus.FAILED:
            raise failure_error(self.request_id, failure_reason(answer))
        return False

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resume from the trigger's event: the same outcomes as a poke; a timeout is final, as a poke's is."""
        try:
            raise_for_event(event, request_id=self.request_id)
        except SegmindTimeoutError as exc:
            raise AirflowSensorTimeout(str(exc)) from exc
        return self._result()

    def _result(self) -> dict[str, Any]:
        result = self.hook.get_result(self.request_id)
        return {
            "request_id": self.request_id,
            "status": RequestStatus.COMPLETED.value,
            "output": result.get("output"),
            "output_uris": [],
            "metrics": result.get("metrics") or {},
        }
