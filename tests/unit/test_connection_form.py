"""Issue 20, defect 2: the connection form has a described field for every extra the hook reads."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import airflow
import jsonschema

import segmind_provider
from segmind_provider.hooks.connection import settings_from


class ReadRecorder(dict):  # type: ignore[type-arg]
    """Connection extras that remember which names were asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def __bool__(self) -> bool:  # read as given, not replaced by an empty dict
        return True

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self.asked.add(key)
        return super().__getitem__(key)


def extras_read() -> set[str]:
    extras = ReadRecorder()
    conn = SimpleNamespace(host="http://127.0.0.1:8765", port=None, password="k", extra_dejson=extras)
    settings_from(conn, "segmind_default", {})
    return extras.asked


def form_fields() -> dict[str, Any]:
    (conn,) = segmind_provider.get_provider_info()["connection-types"]
    return dict(conn["conn-fields"])


def test_every_extra_the_settings_read_has_a_form_field() -> None:
    assert extras_read() == set(form_fields())


def test_every_form_field_has_a_label_a_description_and_a_typed_schema() -> None:
    for name, field in form_fields().items():
        assert field["label"] and len(field["description"]) > 20, name
        assert field["schema"]["type"], name


def test_every_extra_in_the_readme_and_hook_docs_is_a_form_field() -> None:
    root = Path(__file__).parents[2]
    readme = (root / "README.md").read_text()
    hook_doc = (root / "docs" / "hook.md").read_text()
    for name in form_fields():
        assert f"`{name}`" in readme, name
        assert f"extra `{name}`" in hook_doc, name


def test_provider_info_is_valid_for_airflow() -> None:
    """Airflow's own schema for provider.yaml (3.2+: conn-fields) accepts what we register."""
    schema = json.loads((Path(airflow.__file__).parent / "provider.yaml.schema.json").read_text())
    conn_types = schema["properties"]["connection-types"]
    jsonschema.validate(segmind_provider.get_provider_info()["connection-types"], conn_types)


def test_airflow_builds_a_described_form_field_from_each() -> None:
    """What the UI's connection form is built from: Airflow's providers manager, reading our entry point."""
    from airflow.providers_manager import ProvidersManager

    widgets = ProvidersManager().connection_form_widgets
    for name, field in form_fields().items():
        widget = widgets[f"extra__segmind__{name}"]
        assert widget.field["description"] == field["description"]
        assert widget.field["schema"]["title"] == field["label"]
