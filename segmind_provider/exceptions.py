"""The Segmind error family: the only place the provider defines its exceptions.

Errors that no retry can fix also subclass ``AirflowFailException`` so Airflow
skips the task's remaining retries instead of paying for them. ``str(exc)``
never carries an API key: the hook scrubs details before building these.
"""

from __future__ import annotations

try:
    from airflow.sdk.exceptions import AirflowException, AirflowFailException
except ImportError:  # pragma: no cover - Airflow without the task SDK exceptions module
    from airflow.exceptions import AirflowException, AirflowFailException  # type: ignore[no-redef]

__all__ = [
    "SegmindAuthError",
    "SegmindBadRequestError",
    "SegmindBatchItemsFailedError",
    "SegmindContentBlockedError",
    "SegmindCreditFloorError",
    "SegmindError",
    "SegmindInsufficientCreditsError",
    "SegmindModelRetiredError",
    "SegmindNotFoundError",
    "SegmindOutputError",
    "SegmindRateLimitError",
    "SegmindRequestFailedError",
    "SegmindServerError",
    "SegmindSubmitUncertainError",
    "SegmindTimeoutError",
    "SegmindTransportError",
    "SegmindValidationError",
]


class SegmindError(AirflowException):
    """Base of every Segmind error; carries what a caller needs to decide what to do next."""

    #: What the user should do about it, appended to the message (the detail stays the API's words).
    hint: str = ""

    def __init__(
        self,
        detail: str,
        *,
        status_code: int | None = None,
        request_id: str | None = None,
    ) -> None:
        self.detail = detail
        self.status_code = status_code  # type: ignore[assignment]  # AirflowException types it HTTPStatus
        self.request_id = request_id
        super().__init__(self._compose())

    def _compose(self) -> str:
        text = self.detail
        if self.status_code is not None:
            text = f"HTTP {self.status_code} from Segmind: {text}"
        if self.hint:
            text += f"; {self.hint}"
        if self.request_id:
            text += f" (request_id={self.request_id})"
        return text

    def __str__(self) -> str:
        return self._compose()

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only init arguments need help to survive pickling (executors, XCom of errors).
        return (_rebuild, (type(self), self.detail, self.status_code, self.request_id, dict(self.__dict__)))


def _rebuild(
    cls: type[SegmindError],
    detail: str,
    status_code: int | None,
    request_id: str | None,
    state: dict[str, object],
) -> SegmindError:
    exc = cls.__new__(cls)
    SegmindError.__init__(exc, detail, status_code=status_code, request_id=request_id)
    exc.__dict__.update(state)
    return exc


class SegmindValidationError(SegmindError, AirflowFailException):
    """The payload failed a local check before any HTTP request; retrying cannot help."""


class SegmindBadRequestError(SegmindError, AirflowFailException):
    """400: the API rejected the parameters."""

    hint = "fix the payload: the same request fails again, so Airflow does not retry it"


class SegmindAuthError(SegmindError, AirflowFailException):
    """401 / 403, or no API key configured at all."""


class SegmindNotFoundError(SegmindError):
    """404: unknown model, or a request id that is unknown or expired (results live 1 hour)."""


class SegmindModelRetiredError(SegmindError, AirflowFailException):
    """410 Gone: Segmind retired the model; not billed, and no retry brings it back."""


class SegmindInsufficientCreditsError(SegmindError, AirflowFailException):
    """406: the account has no credits left."""

    hint = (
        "add credits to the Segmind account (SegmindHook.get_credits() shows the balance); "
        "Airflow does not retry this"
    )


class SegmindRateLimitError(SegmindError):
    """429; ``retry_after`` is the server's requested wait in seconds, when it gave one."""

    def __init__(
        self,
        detail: str,
        *,
        status_code: int | None = 429,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(detail, status_code=status_code, request_id=request_id)


class SegmindServerError(SegmindError):
    """5xx from the API or a gateway in front of it; ``retry_after`` when the server sent one."""

    def __init__(
        self,
        detail: str,
        *,
        status_code: int | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(detail, status_code=status_code, request_id=request_id)


class SegmindRequestFailedError(SegmindError):
    """The job ended FAILED (served as 422); ``detail`` is the API's reason."""


class SegmindContentBlockedError(SegmindRequestFailedError, AirflowFailException):
    """The job FAILED because a content / safety (RAI) filter blocked it: same input, same block."""

    hint = "change the prompt or input image: the same input is blocked again, so Airflow does not retry it"


class SegmindTimeoutError(SegmindError):
    """Our own deadline passed while the job was still running; the message carries the request id."""


class SegmindTransportError(SegmindError):
    """Connection or read error, wrapped. ``maybe_sent`` is False only when the request surely never left."""

    def __init__(
        self,
        detail: str,
        *,
        status_code: int | None = None,
        request_id: str | None = None,
        maybe_sent: bool = True,
    ) -> None:
        self.maybe_sent = maybe_sent
        super().__init__(detail, status_code=status_code, request_id=request_id)


class SegmindSubmitUncertainError(SegmindError, AirflowFailException):
    """A submit failed in a way that may have created a (billed) job, and the job was not found.

    The operators first look for the job in the key's request history (``segmind_provider.durable``)
    and re-attach when it is there; this error stands only when it did not appear. Airflow's
    retries stop too: a retry would submit anew and may pay for a second image.
    """


class SegmindOutputError(SegmindError):
    """Downloading, verifying or storing an output failed."""


class SegmindCreditFloorError(SegmindError, AirflowFailException):
    """Submitting more would take the balance below the ``credit_floor``: nothing more was submitted.

    The message says what was spent, what is left and which items were not started. Airflow does not
    retry it: nothing changes until credits are added (then clear the task; finished items are kept).
    """


class SegmindBatchItemsFailedError(SegmindError):
    """Some items of a batch ended FAILED (listed with their reasons in the message and the manifest).

    Retried like any failure: a retry keeps what finished, re-attaches to what is still running and
    submits the failed items again, except content blocks (the same input is blocked again).
    """
