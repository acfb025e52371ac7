"""DAG hygiene: every file in dags/ imports cleanly and makes no network call while being parsed.

The bag is a ``BundleDagBag`` (the ``DagBag`` subclass the dag-processor and the task runner use):
like them it puts the dags folder on ``sys.path``, which is how the DAGs import their helper package.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"
ASTRONAUT = (
    "A photo of an astronaut with a mirrored helmet standing in a field of sunflowers. The spacesuit has "
    "a NASA logo on it. The astronaut is covered in dirt and has vines wrapped around his body. The sky "
    "is dark and cloudy."
)


class NetworkBlocked(OSError):
    pass


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Refuse (and record) every IP connection and name lookup while the fixture is active."""
    attempts: list[Any] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def _is_ip(sock: socket.socket) -> bool:
        return sock.family in (socket.AF_INET, socket.AF_INET6)

    def connect(self: socket.socket, address: Any) -> None:
        if _is_ip(self):
            attempts.append(("connect", address))
            raise NetworkBlocked(f"network call during DAG import: connect {address!r}")
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if _is_ip(self):
            attempts.append(("connect_ex", address))
            raise NetworkBlocked(f"network call during DAG import: connect_ex {address!r}")
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        attempts.append(("getaddrinfo", host))
        raise NetworkBlocked(f"network call during DAG import: getaddrinfo {host!r}")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(
        socket, "create_connection", lambda address, *a, **k: connect_ex(socket.socket(), address)
    )
    yield attempts


@pytest.fixture
def parsed(no_network: list[Any], monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[Any]]:
    """The bag of the repository's dags/ folder, and the network calls attempted while filling it."""
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    monkeypatch.delenv("SEGMIND_API_KEY", raising=False)
    from airflow.dag_processing.dagbag import BundleDagBag

    bag = BundleDagBag(dag_folder=DAGS, bundle_path=DAGS, bundle_name="dags-folder")
    return bag, list(no_network)


def test_the_guard_catches_a_network_call(no_network: list[Any]) -> None:
    """The fixture must be able to fail: a real connection attempt is refused and recorded."""
    with pytest.raises(NetworkBlocked):
        socket.create_connection(("198.51.100.7", 443), timeout=0.1)
    assert no_network


def test_every_dag_file_imports_without_errors_or_network(parsed: tuple[Any, list[Any]]) -> None:
    dagbag, network_attempts = parsed
    assert dagbag.import_errors == {}
    assert network_attempts == []
    assert set(dagbag.dag_ids) == {"segmind_quickstart", "segmind_content_pipeline", "segmind_review"}
    assert dagbag.size() == 3  # the helper package and data/ are in .airflowignore, not parsed as DAGs


def test_quickstart_is_the_model_page_example(parsed: tuple[Any, list[Any]]) -> None:
    dag = parsed[0].dags["segmind_quickstart"]
    task = dag.get_task("astronaut")
    assert task.model == "flux-1.1-pro"
    assert task.payload == {
        "prompt": ASTRONAUT,
        "seed": 12345,
        "width": 1024,
        "height": 1024,
        "aspect_ratio": "1:1",
        "output_format": "png",
        "output_quality": 80,
        "safety_tolerance": 2,
        "prompt_upsampling": False,
    }
    assert task.output_path.endswith(".png") and "segmind_output_root()" in task.output_path


def test_content_pipeline_shape(parsed: tuple[Any, list[Any]]) -> None:
    dag = parsed[0].dags["segmind_content_pipeline"]
    assert dag.schedule == "@daily" or str(dag.timetable.summary) == "@daily"
    models = {
        "product.cutout": "bg-removal-v2",
        "product.scene": "flux-kontext-pro",
        "product.caption": "llava-v1.6",
        "hero_upscale": "clarity-upscaler",
        "hero_clip": "kling-o1-image-to-video",
    }
    for task_id, model in models.items():
        task = dag.get_task(task_id)
        assert task.model == model and task.deferrable is True and task.pool == "segmind"
        assert task.input_files, task_id  # every stage starts from a file
    # Each stage's input is the previous stage's stored output.
    assert dag.get_task("product.scene").upstream_task_ids >= {"product.cutout"}
    assert dag.get_task("product.caption").upstream_task_ids >= {"product.scene"}
    assert "stage_output(ti, 'cutout')" in dag.get_task("product.scene").input_files["input_image"]
    assert (
        {"hero"}
        == dag.get_task("hero_upscale").upstream_task_ids
        == dag.get_task("hero_clip").upstream_task_ids
    )
    assert dag.get_task("hero").trigger_rule == "all_done"  # one blocked product does not stop the hero
    candidates, approval, publish = (
        dag.get_task("candidates"),
        dag.get_task("review"),
        dag.get_task("publish"),
    )
    assert candidates.trigger_rule == "all_done"
    assert {"product.caption", "hero_upscale", "hero_clip"} <= candidates.upstream_task_ids
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    assert isinstance(approval, ApprovalOperator) and approval.upstream_task_ids == {"candidates"}
    assert (
        approval.defaults == ["Reject"] and approval.response_timeout is not None
    )  # unanswered: nothing published
    assert approval.ignore_downstream_trigger_rules is True
    assert publish.upstream_task_ids == {"plan", "review"}
    assert [a.name for a in publish.outlets] == ["segmind_marketing_assets"]
    assert dag.leaves == [publish]


def test_a_dag_file_with_a_top_level_request_is_caught(
    tmp_path: Path, no_network: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same bag and guard flag a DAG file that calls out while being parsed."""
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    (tmp_path / "chatty_dag.py").write_text(
        "import urllib.request\n"
        "from airflow.sdk import DAG\n"
        "urllib.request.urlopen('http://api.segmind.com/v1/get-user-credits', timeout=1)\n"
        "dag = DAG('chatty', schedule=None)\n"
    )
    from airflow.dag_processing.dagbag import BundleDagBag

    bag = BundleDagBag(dag_folder=tmp_path, bundle_path=tmp_path, bundle_name="tmp")
    assert no_network and bag.import_errors
