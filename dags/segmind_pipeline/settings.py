"""Where the example DAGs write, read at task run time (never at parse time).

Precedence, most specific first: an Airflow Variable (set in the UI or as ``AIRFLOW_VAR_...``), then
the plain environment variable, then a default under ``AIRFLOW_HOME``. The DAG passes the Variable
values in, so this module stays free of Airflow imports and easy to test.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

OUTPUT_DIR_ENV = "SEGMIND_OUTPUT_DIR"
PUBLISH_URI_ENV = "SEGMIND_PUBLISH_URI"
PUBLISH_CONN_ENV = "SEGMIND_PUBLISH_CONN_ID"
CATALOG_ENV = "SEGMIND_CATALOG"
AUTO_APPROVE_ENV = "SEGMIND_AUTO_APPROVE"

OUTPUT_DIR_VARIABLE = "segmind_output_dir"
PUBLISH_URI_VARIABLE = "segmind_publish_uri"
PUBLISH_CONN_VARIABLE = "segmind_publish_conn_id"
CATALOG_VARIABLE = "segmind_catalog"
AUTO_APPROVE_VARIABLE = "segmind_auto_approve"

#: The pool the content pipeline's generation tasks run in (created by ``scripts/demo.py`` and the tests).
POOL_NAME = "segmind"


def output_root(variable: str | None = None, env: Mapping[str, str] = os.environ) -> str:
    """Folder (or object storage URI) for generated originals."""
    if variable:
        return variable
    if env.get(OUTPUT_DIR_ENV):
        return env[OUTPUT_DIR_ENV]
    airflow_home = env.get("AIRFLOW_HOME") or str(Path("~/airflow").expanduser())
    return str(Path(airflow_home) / "segmind-output")


def segmind_output_root() -> str:
    """Template macro of the example DAGs: resolved when the task runs, so parsing touches no Variable."""
    from airflow.sdk import Variable

    return output_root(Variable.get(OUTPUT_DIR_VARIABLE, default=None)).rstrip("/")


def publish_uri(
    variable: str | None = None, output_dir_variable: str | None = None, env: Mapping[str, str] = os.environ
) -> str:
    """Destination of the published formats, manifest and gallery: any ObjectStoragePath URI."""
    if variable:
        return variable
    if env.get(PUBLISH_URI_ENV):
        return env[PUBLISH_URI_ENV]
    return output_root(output_dir_variable, env).rstrip("/") + "/published"


def publish_conn_id(variable: str | None = None, env: Mapping[str, str] = os.environ) -> str | None:
    """Connection for the publish destination (e.g. ``aws_default`` for ``s3://``); None for local."""
    return variable or env.get(PUBLISH_CONN_ENV) or None


def catalog_path(variable: str | None = None, env: Mapping[str, str] = os.environ) -> str | None:
    """A catalog other than the shipped one, or None for ``dags/data/product_catalog.json``."""
    return variable or env.get(CATALOG_ENV) or None


def auto_approve(variable: str | None = None, env: Mapping[str, str] = os.environ) -> bool:
    """Demo mode: the review step approves itself instead of waiting for a person.

    Off unless the Variable or the environment says ``1``/``true``/``yes``; ``make demo`` turns it on."""
    text = variable or env.get(AUTO_APPROVE_ENV) or ""
    return text.strip().lower() in ("1", "true", "yes", "on")
