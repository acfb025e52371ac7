"""Apache Airflow provider for Segmind's serverless generation API."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "get_provider_info"]


def get_provider_info() -> dict[str, Any]:
    """Describe the provider to Airflow's providers manager (entry point ``apache_airflow_provider``)."""
    return {
        "package-name": "airflow-provider-segmind",
        "name": "Segmind",
        "description": "Run Segmind's serverless generation models (image, video, audio, text) from "
        "Airflow: deferrable, retry-safe, offline-testable.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Segmind",
                "external-doc-url": "https://docs.segmind.com/",
                "tags": ["ai"],
            }
        ],
        "hooks": [{"integration-name": "Segmind", "python-modules": ["segmind_provider.hooks.segmind"]}],
        "operators": [
            {
                "integration-name": "Segmind",
                "python-modules": [
                    "segmind_provider.operators.segmind",
                    "segmind_provider.operators.workflow",
                    "segmind_provider.operators.review",
                ],
            }
        ],
        "sensors": [{"integration-name": "Segmind", "python-modules": ["segmind_provider.sensors.segmind"]}],
        "triggers": [
            {
                "integration-name": "Segmind",
                "python-modules": [
                    "segmind_provider.triggers.segmind",
                    "segmind_provider.triggers.batch",
                    "segmind_provider.triggers.workflow",
                ],
            }
        ],
        "task-decorators": [
            {"class-name": "segmind_provider.decorators.segmind.segmind_task", "name": "segmind"},
            {"class-name": "segmind_provider.decorators.segmind.segmind_batch_task", "name": "segmind_batch"},
        ],
        "extra-links": ["segmind_provider.operators.segmind.SegmindOutputLink"],
        "connection-types": [
            {
                "connection-type": "segmind",
                "hook-class-name": "segmind_provider.hooks.segmind.SegmindHook",
                "hook-name": "Segmind",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "login", "port"],
                    "relabeling": {"password": "API Key", "host": "Base URL"},
                    "placeholders": {
                        "host": "https://api.segmind.com (optional; e.g. http://127.0.0.1:8765 for the emulator)",
                        "password": "your Segmind API key",
                    },
                },
                "conn-fields": {
                    "timeout": {
                        "label": "Request timeout (s)",
                        "description": "Read timeout for each HTTP call to Segmind.",
                        "schema": {"type": ["number", "null"], "default": 30},
                    },
                    "max_retries": {
                        "label": "Max retries",
                        "description": "Retries for idempotent calls on 429, 5xx and transport errors.",
                        "schema": {"type": ["integer", "null"], "default": 5},
                    },
                    "requests_per_minute": {
                        "label": "Requests per minute",
                        "description": "Client-side budget for this key (Free 5, Pro 50); empty learns from 429s.",
                        "schema": {"type": ["integer", "null"]},
                    },
                    "credit_floor": {
                        "label": "Credit floor (USD)",
                        "description": "Never submit below this balance (checked before each submit); empty: no check.",
                        "schema": {"type": ["number", "null"], "minimum": 0},
                    },
                    "run_timeout": {
                        "label": "Sync run timeout (s)",
                        "description": "Read timeout of a mode='sync' call (POST /v1/{model}), which waits for the output.",
                        "schema": {"type": ["number", "null"], "default": 300, "minimum": 0},
                    },
                    "storage_url": {
                        "label": "Storage URL",
                        "description": "Where input files are uploaded. Empty: https://workflows-api.segmind.com "
                        "with Segmind's API, {Base URL}/storage with any other (the emulator).",
                        "schema": {"type": ["string", "null"], "format": "url"},
                    },
                    "account_url": {
                        "label": "Account URL",
                        "description": "Request history and costs. Empty: https://api.spotprod.segmind.com "
                        "with Segmind's API, {Base URL}/account with any other (the emulator).",
                        "schema": {"type": ["string", "null"], "format": "url"},
                    },
                    "catalog_dir": {
                        "label": "Catalog folder",
                        "description": "A folder of model entries (python -m segmind_provider.catalog refresh, "
                        "or import) that win over the package's catalog; empty: SEGMIND_CATALOG_DIR or none.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "time_scale": {
                        "label": "Time scale",
                        "description": "Multiplies the models' typical durations in the poll schedule: "
                        "the emulator's --time-scale (1 for Segmind).",
                        "schema": {"type": ["number", "null"], "default": 1, "minimum": 0},
                    },
                },
            }
        ],
    }
