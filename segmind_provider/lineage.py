"""OpenLineage facets for a finished request: input files and stored outputs as datasets.

Called by the OpenLineage provider's listener (only installed where OpenLineage is used), so its
imports are made on call. The request id and model travel as an external-query run facet:
Segmind's request is the external job that turned the inputs into the outputs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

__all__ = ["dataset_id", "operator_lineage"]


def dataset_id(uri: str) -> tuple[str, str]:
    """OpenLineage's (namespace, name) for a stored file: ``file`` + absolute path, or scheme://host + path."""
    parts = urlsplit(uri)
    if parts.scheme in ("", "file", "local") or len(parts.scheme) == 1:
        path = parts.path if parts.scheme in ("file", "local") else uri
        return "file", os.path.abspath(path)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}", parts.path or "/"


def operator_lineage(
    *, model: str, request_id: str | None, inputs: Iterable[str], outputs: Iterable[str]
) -> Any:
    """An ``OperatorLineage`` naming the input files, the stored outputs, the model and the request."""
    from airflow.providers.openlineage.extractors import OperatorLineage
    from openlineage.client.event_v2 import InputDataset, OutputDataset
    from openlineage.client.facet_v2 import external_query_run

    run_facets = {}
    if request_id:
        run_facets["externalQuery"] = external_query_run.ExternalQueryRunFacet(
            externalQueryId=request_id, source=f"segmind:{model}"
        )
    return OperatorLineage(
        inputs=[InputDataset(*dataset_id(uri)) for uri in inputs],
        outputs=[OutputDataset(*dataset_id(uri)) for uri in outputs],
        run_facets=run_facets,
    )
