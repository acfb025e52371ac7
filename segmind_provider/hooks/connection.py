"""The ``segmind`` connection: what it holds, how it is read, and how the key is masked.

Connection: password = API key; host = optional API base URL; extras ``timeout``,
``max_retries``, ``requests_per_minute``, ``run_timeout``, ``storage_url``,
``account_url``, ``time_scale``, ``credit_floor``, ``catalog_dir``. With no such connection, ``SEGMIND_API_KEY`` (and
``SEGMIND_BASE_URL``) are used, as the official SDK does.

The API key is sent to the three Segmind hosts named here (API, storage, account) and
nowhere else. When ``host`` is not Segmind's (the emulator, a proxy), storage and account follow
it unless set: ``{host}/storage`` and ``{host}/account``, the emulator's layout, so a local API
never sends a file or the key to Segmind's real hosts.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from airflow.sdk import BaseHook

from segmind_provider.catalog import use_catalog_dir
from segmind_provider.exceptions import SegmindAuthError, SegmindValidationError
from segmind_provider.hooks.retry import DEFAULT_MAX_RETRIES

try:
    from airflow.sdk.exceptions import AirflowNotFoundException
except ImportError:  # pragma: no cover
    from airflow.exceptions import AirflowNotFoundException  # type: ignore[no-redef]

__all__ = [
    "DEFAULT_ACCOUNT_URL",
    "DEFAULT_BASE_URL",
    "DEFAULT_STORAGE_URL",
    "ENV_API_KEY",
    "ConnectionSettings",
    "afetch_settings",
    "check_key",
    "fetch_settings",
    "is_segmind_url",
    "key_id",
    "normalise_url",
    "path_segment",
    "settings_from",
]

DEFAULT_BASE_URL = "https://api.segmind.com"
DEFAULT_STORAGE_URL = "https://workflows-api.segmind.com"
DEFAULT_ACCOUNT_URL = "https://api.spotprod.segmind.com"
DEFAULT_TIMEOUT = 30.0
DEFAULT_RUN_TIMEOUT = 300.0
ENV_API_KEY = "SEGMIND_API_KEY"
ENV_BASE_URL = "SEGMIND_BASE_URL"
#: Where a non-Segmind ``host`` serves the storage and account APIs unless the extras say otherwise.
LOCAL_STORAGE_PATH = "/storage"
LOCAL_ACCOUNT_PATH = "/account"

log = logging.getLogger(__name__)


def key_id(api_key: str) -> str:
    """A stable, non-reversible name for a key: budgets and balances are keyed by this, never by the key."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class ConnectionSettings:
    """A resolved connection. Immutable: a changed connection is a new object (docs/hook.md)."""

    base_url: str
    api_key: str = field(repr=False)
    timeout: float = DEFAULT_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    requests_per_minute: float | None = None
    run_timeout: float = DEFAULT_RUN_TIMEOUT
    storage_url: str = DEFAULT_STORAGE_URL
    account_url: str = DEFAULT_ACCOUNT_URL
    time_scale: float = 1.0
    """Multiplies the catalog's typical durations in the poll schedule (a time-scaled emulator)."""
    credit_floor: float | None = None
    """USD the operators never spend below (their ``credit_floor`` argument overrides it); None: no check."""
    catalog_dir: str | None = None
    """The user catalog folder (extra ``catalog_dir``): refreshed directory and imported entries."""
    key_source: str = ""
    """Where the key came from, for an auth error that says what to fix."""
    key_id: str = field(default="", repr=False)
    """A non-reversible name for the key (:func:`key_id`): budgets and balances are keyed by it."""


def normalise_url(value: str | None, port: int | None = None, *, default: str = DEFAULT_BASE_URL) -> str:
    """Host may be empty (default), bare (https), or a full URL with scheme, port and path."""
    host = (value or "").strip()
    if not host:
        return default
    if "://" not in host:
        host = f"https://{host}"
    parts = urlsplit(host)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SegmindValidationError(
            f"Segmind URL must be http(s)://host[:port], got scheme {parts.scheme!r}"
        )
    netloc = parts.netloc
    if port and parts.port is None:
        netloc = f"{netloc}:{port}"
    path = re.sub(r"/v[12]/?$", "", parts.path.rstrip("/"))
    return urlunsplit((parts.scheme, netloc, path, "", "")).rstrip("/")


def is_segmind_url(url: str) -> bool:
    """True for Segmind's own hosts (``segmind.com`` and its subdomains)."""
    host = (urlsplit(url).hostname or "").lower()
    return host == "segmind.com" or host.endswith(".segmind.com")


def _service_url(extras: Mapping[str, Any], name: str, base_url: str, default: str, local_path: str) -> str:
    """An explicit extra wins; else Segmind's host beside Segmind's API, or a path under any other API."""
    if str(extras.get(name) or "").strip():
        return normalise_url(extras.get(name))
    return default if is_segmind_url(base_url) else base_url + local_path


def _note_unscaled(conn_id: str, base_url: str, extras: Mapping[str, Any]) -> None:
    """A non-Segmind API without ``time_scale`` polls at the models' real durations: say how to scale."""
    if is_segmind_url(base_url) or str(extras.get("time_scale") or "").strip():
        return
    log.info(
        "Connection %r: %s is not Segmind's API and sets no time_scale, so polls wait the models' real "
        "durations (flux-1.1-pro about 14 s); for an emulator started with --time-scale S, add the "
        "extra time_scale S",
        conn_id,
        base_url,
    )


def _number(extras: Mapping[str, Any], name: str, default: float | None, *, integer: bool = False) -> Any:
    value = extras.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    try:
        number = int(float(value)) if integer else float(value)
    except (TypeError, ValueError):
        raise SegmindValidationError(f"connection extra {name!r} must be a number, got {value!r}") from None
    if number < 0:
        raise SegmindValidationError(f"connection extra {name!r} must not be negative, got {value!r}")
    return number


_CHAR_NAMES = {"\n": "line feed", "\r": "carriage return", "\t": "tab"}


def check_key(key: str, source: str) -> None:
    """Refuse a key holding whitespace or a control character, naming neither the key nor any of it.

    Such a key cannot be sent in a header: requests refuses it with an error quoting the key escaped
    (``\\n``), which the secrets masker does not recognise. Surrounding whitespace is already stripped.
    """
    for position, char in enumerate(key, start=1):
        if char.isspace() or unicodedata.category(char).startswith("C"):
            name = _CHAR_NAMES.get(char) or unicodedata.name(char, "control character").lower()
            raise SegmindAuthError(
                f"the API key of {source} holds a {name} (U+{ord(char):04X}, character {position} of "
                f"{len(key)}); an API key "
                "has no whitespace or control characters: paste it again"
            )


def settings_from(conn: Any | None, conn_id: str, environ: Mapping[str, str]) -> ConnectionSettings:
    """Connection (or the SEGMIND_API_KEY fallback) to settings; a missing key fails here, before any request."""
    if conn is None:
        key = environ.get(ENV_API_KEY, "").strip()
        if not key:
            raise SegmindAuthError(
                f"no Segmind API key: connection {conn_id!r} does not exist and {ENV_API_KEY} is not set"
            )
        base_url = normalise_url(environ.get(ENV_BASE_URL))
        extras: Mapping[str, Any] = {}
        source = f"{ENV_API_KEY} (there is no connection {conn_id!r})"
    else:
        key = (conn.password or "").strip()
        if not key:
            raise SegmindAuthError(
                f"connection {conn_id!r} has no API key (set it as the password / 'API Key')"
            )
        base_url = normalise_url(conn.host, conn.port)
        extras = conn.extra_dejson or {}
        source = f"connection {conn_id!r}"
    check_key(key, source)
    timeout = _number(extras, "timeout", DEFAULT_TIMEOUT) or DEFAULT_TIMEOUT
    _note_unscaled(conn_id, base_url, extras)
    return ConnectionSettings(
        base_url=base_url,
        api_key=key,
        timeout=timeout,
        max_retries=_number(extras, "max_retries", DEFAULT_MAX_RETRIES, integer=True),
        requests_per_minute=_number(extras, "requests_per_minute", None) or None,
        run_timeout=_number(extras, "run_timeout", max(DEFAULT_RUN_TIMEOUT, timeout)) or DEFAULT_RUN_TIMEOUT,
        storage_url=_service_url(extras, "storage_url", base_url, DEFAULT_STORAGE_URL, LOCAL_STORAGE_PATH),
        account_url=_service_url(extras, "account_url", base_url, DEFAULT_ACCOUNT_URL, LOCAL_ACCOUNT_PATH),
        time_scale=_number(extras, "time_scale", 1.0) or 1.0,
        credit_floor=_number(extras, "credit_floor", None),
        catalog_dir=str(extras.get("catalog_dir") or "").strip() or None,
        key_source=source,
        key_id=key_id(key),
    )


def _mask(secret: str) -> None:
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - older task SDK
        from airflow.sdk.execution_time.secrets_masker import mask_secret  # type: ignore[no-redef]
    mask_secret(secret)


async def _amask(secret: str) -> None:
    try:
        from airflow.sdk.log import amask_secret
    except ImportError:  # pragma: no cover - Airflow 3.2 has only the sync one
        _mask(secret)
        return
    await amask_secret(secret)


def fetch_settings(conn_id: str, environ: Mapping[str, str]) -> ConnectionSettings:
    """Read the connection the blocking way (workers; never on an event loop) and mask its key."""
    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        conn = None
    settings = settings_from(conn, conn_id, environ)
    _mask(settings.api_key)
    use_catalog_dir(settings.catalog_dir)
    return settings


async def afetch_settings(conn_id: str, environ: Mapping[str, str]) -> ConnectionSettings:
    """Read the connection without blocking the loop, and mask its key.

    ``BaseHook.aget_connection`` does not find a connection stored in the metadata database under
    ``airflow dags test`` although the blocking lookup does: a job already paid for must not fail
    over that, so a "not found" is asked again the blocking way, in a thread.
    """
    try:
        conn = await BaseHook.aget_connection(conn_id)
    except AirflowNotFoundException:
        try:
            conn = await asyncio.to_thread(BaseHook.get_connection, conn_id)
        except AirflowNotFoundException:
            conn = None
    settings = settings_from(conn, conn_id, environ)
    await _amask(settings.api_key)
    use_catalog_dir(settings.catalog_dir)
    return settings


def path_segment(value: str, name: str) -> str:
    """A single, escaped path segment: ids and model names can never reshape the URL."""
    if not isinstance(value, str) or not value.strip():
        raise SegmindValidationError(f"{name} must be a non-empty string, got {value!r}")
    return quote(value.strip(), safe="")
