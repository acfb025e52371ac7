"""Segmind's whole model directory: every model known (kind, price, latency), served by the emulator,
run end to end through the real operators; the importer, the user catalog, retired and unknown slugs."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from segmind_provider import catalog
from segmind_provider.account.spend import price_of
from segmind_provider.catalog import (
    DirectoryModel,
    default_timeout,
    directory_model,
    directory_models,
    estimate_cost,
    get_model,
    model_notice,
    output_kind,
    typical_seconds,
)
from segmind_provider.catalog.directory import KINDS, parse_directory, records_from_list
from segmind_provider.catalog.importer import diff_entries, import_page
from segmind_provider.exceptions import (
    SegmindCreditFloorError,
    SegmindModelRetiredError,
    SegmindNotFoundError,
    SegmindValidationError,
)
from segmind_provider.hooks.segmind import SegmindHook
from segmind_provider.operators.batch import SegmindBatchOperator
from segmind_provider.operators.segmind import SegmindOperator
from segmind_provider.testing.emulator.runner import SegmindEmulator
from segmind_provider.triggers.polling import DurationObserver, estimate_duration

ROOT = Path(__file__).resolve().parents[2]
PAGES = ROOT / "tests" / "data" / "pages"
#: Every shipped full entry, as the JSON files hold it.
SHIPPED = {
    path.stem: json.loads(path.read_text(encoding="utf-8"))
    for path in sorted((ROOT / "segmind_provider" / "catalog" / "models").glob("*.json"))
}
#: Entries made by hand before the importer, with no stored page to re-import them from.
MADE_BY_HAND = ["clarity-upscaler", "flux-kontext-pro", "kling-o1-image-to-video", "llava-v1.6"]
#: The project's seed page, in the ``shared/`` folder beside the clone where there is one; the stored
#: copy under tests/data/pages is what the test imports either way.
SEED_PAGES = [
    ROOT.parent / "shared" / "seeds" / "000_d4653e5968a61e76.txt",
    Path("/work/shared/seeds/000_d4653e5968a61e76.txt"),
]
#: A fast emulator for the sample: the longest directory model (~780 s) takes about 1.6 s.
SCALE = 0.002
#: What each stored kind starts with (the container's own signature).
MAGIC = {
    "video": lambda data: data[4:8] == b"ftyp",
    "audio": lambda data: data[:4] == b"RIFF" and data[8:12] == b"WAVE",
    "3d": lambda data: data[:4] == b"glTF",
    "image": lambda data: (
        data[:8] == b"\x89PNG\r\n\x1a\n" or data[:3] == b"\xff\xd8\xff" or data[8:12] == b"WEBP"
    ),
}


@pytest.fixture(autouse=True)
def _no_user_catalog(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts from the shipped catalog (a user folder set by a connection is forgotten)."""
    monkeypatch.delenv(catalog.ENV_CATALOG_DIR, raising=False)
    monkeypatch.setattr(catalog, "_configured_dir", None)
    catalog.reload()
    yield
    catalog.reload()


def directory_only() -> list[DirectoryModel]:
    """Directory models without a full entry: what the directory alone must make usable."""
    return [m for m in directory_models() if get_model(m.slug) is None]


def sample_per_category(seed: int = 19) -> list[DirectoryModel]:
    """One directory-only model per category, drawn at random (seeded, so a failure can be replayed)."""
    rng = random.Random(seed)
    by_category: dict[str, list[DirectoryModel]] = {}
    for model in directory_only():
        by_category.setdefault(model.category, []).append(model)
    return [rng.choice(models) for _, models in sorted(by_category.items())]


# --- the data -------------------------------------------------------------------------------


def test_the_directory_knows_every_listed_model_with_kind_price_and_latency() -> None:
    models = directory_models()
    assert len(models) == 507  # the stored llms.txt's rows
    assert {m.output_kind for m in models} == set(KINDS)
    assert all(m.read == "2026-12-06" and m.title and m.category for m in models)
    assert all(m.price_usd is not None and m.price_usd > 0 for m in models)
    assert sum(m.latency_s is None for m in models) == 24  # "-" in the directory: unknown, not 0
    for entry in catalog.models():  # every full entry is also a directory model
        assert directory_model(entry.slug) is not None, entry.slug
    slow = directory_model("kling-v2-pro-avatar")
    assert slow is not None and slow.latency_s == 779.47 and slow.output_kind == "video"
    # a category is not always the output kind: the line says so, with the reason
    fibo = directory_model("bria-fibo-generate")
    assert fibo is not None and fibo.category == "Image-to-Text (Vision)" and fibo.output_kind == "image"
    assert fibo.kind_note and "images" in fibo.kind_note
    successors = [m.successor for m in models if m.successor]
    assert successors and all(directory_model(s) is not None for s in successors)


def test_a_malformed_directory_line_is_refused_with_its_place() -> None:
    with pytest.raises(ValueError, match="line 2: kind 'hologram'"):
        parse_directory("## Things|image\na|A|0.1|2|kind=hologram (no)\n", "test.txt")
    with pytest.raises(ValueError, match="line 3: 'a' is listed twice"):
        parse_directory("## Things|image\na|A|0.1|2\na|A|0.1|2\n", "test.txt")
    with pytest.raises(ValueError, match="latency: 'soon' is not a number"):
        parse_directory("## Things|image\na|A|0.1|soon\n", "test.txt")


def test_every_directory_model_has_a_price_for_credit_floor_and_a_deadline_with_headroom() -> None:
    for model in directory_models():
        assert price_of(model.slug, {}) == (get_model(model.slug) or model).price_usd  # type: ignore[union-attr]
        timeout = default_timeout(model.slug)
        typical = typical_seconds(model.slug)
        assert timeout >= 600 and (typical is None or timeout >= 2.5 * typical - 0.5), model.slug
    assert default_timeout("kling-v2-pro-avatar") == 1949  # 2.5 x 779.47 s: over the old 600 s default
    assert default_timeout("flux-1.1-pro") == 600
    assert SegmindOperator(task_id="t", model="kling-v2-pro-avatar", payload={}).timeout == 1949
    batch = SegmindBatchOperator(task_id="b", model="kling-v2-pro-avatar", payloads=[{}])
    assert batch.timeout == 1949
    assert SegmindOperator(task_id="t", model="kling-v2-pro-avatar", payload={}, timeout=30).timeout == 30


def test_a_price_is_refused_for_a_slug_nobody_knows_naming_the_nearest() -> None:
    with pytest.raises(SegmindValidationError, match=r"flux-1.1-por.*nearest known: flux-1.1-pro"):
        price_of("flux-1.1-por")


def test_the_poll_schedule_expects_the_directory_latency() -> None:
    estimate = estimate_duration("kling-v2-pro-avatar", observer=DurationObserver(), time_scale=0.01)
    assert estimate is not None and estimate.source == "default"
    assert estimate.typical == pytest.approx(7.7947)
    assert estimate_duration("no-such-model", observer=DurationObserver()) is None


def test_notices_say_unvalidated_or_name_the_nearest_slugs() -> None:
    assert model_notice("flux-1.1-pro") is None  # a full entry: validated, nothing to say
    known = model_notice("kling-2.6")
    assert known is not None and "unvalidated" in known and "video output" in known
    typo = model_notice("flux-1.1-por")
    assert typo is not None and "nearest known: flux-1.1-pro" in typo and "\n" not in typo
    assert output_kind("gemini-2.5-flash-tts") == "audio" and output_kind("hunyuan3d-2.1") == "3d"
    assert output_kind("nope") is None


# --- through the real operators, against the emulator ------------------------------------------


def _payload(model: DirectoryModel) -> dict[str, Any]:
    """A payload in the model's own words: nothing validates it (no full entry), the service takes it."""
    if model.output_kind == "text":
        return {
            "messages": [{"role": "user", "content": "Write a caption for a lighthouse"}],
            "prompt": "caption",
        }
    return {"prompt": f"a lighthouse ({model.slug})", "some_model_field": 3}


def _check_stored(slug: str, kind: str | None, result: dict[str, Any]) -> None:
    """The one stored file is of the model's kind: media by its signature, text and JSON as UTF-8, and
    equal to the answer where the result carries it (a batch with an output folder leaves it on disk)."""
    (uri,) = result["output_uris"]
    data = Path(uri.removeprefix("file://")).read_bytes()
    if kind in MAGIC:
        assert MAGIC[kind](data), (slug, data[:16])
    elif kind == "text":
        text = data.decode("utf-8")
        assert text and text == (result.get("chat") or {}).get("text", result.get("output", text)), slug
    else:
        value = json.loads(data)
        assert isinstance(value, dict) and value == result.get("output", value), slug


def _batch(
    tmp_path: Path, slug: str, payloads: dict[str, dict[str, Any]], **options: Any
) -> SegmindBatchOperator:
    """A batch of ``slug`` waiting in the worker, its outputs under ``tmp_path/out`` (no floor unless given)."""
    return SegmindBatchOperator(
        task_id="batch",
        model=slug,
        payloads=payloads,
        output_dir=str(tmp_path / "out"),
        deferrable=False,
        **{"credit_floor": 0.0, **options},
    )


@pytest.mark.segmind_emulator(time_scale=SCALE)
def test_a_sample_of_directory_models_runs_end_to_end_per_category(
    emulator: SegmindEmulator, make_context: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sample = sample_per_category()
    assert len(sample) >= 16 and {m.output_kind for m in sample} == set(KINDS)
    for model in sample:
        op = SegmindOperator(
            task_id=f"t-{model.slug}",
            model=model.slug,
            payload=_payload(model),
            deferrable=False,
            output_path=str(tmp_path / model.slug),
            credit_floor=0.0,
        )
        capsys.readouterr()
        result = op.execute(make_context())
        assert result["status"] == "COMPLETED" and result["cost"] == model.price_usd
        _check_stored(model.slug, model.output_kind, result)
        log = capsys.readouterr().out
        assert log.count("has no full catalog entry") == 1 and f"Model {model.slug!r}" in log  # once per task
    submitted = [
        json.loads(c["detail"]) if isinstance(c.get("detail"), str) else c for c in emulator.calls("submit")
    ]
    assert len(submitted) == len(sample)


@pytest.mark.segmind_emulator(time_scale=SCALE)
@pytest.mark.parametrize(
    "slug",
    [
        "sora-2",
        "tts-eleven-labs",
        "hunyuan3d-2.1",
        "gpt-5.4-mini",
        "eleven-labs-transcript",
        "text-embedding-3-large",
    ],
)
def test_video_audio_3d_llm_transcription_and_json_models_run_through_the_batch_operator(
    emulator: SegmindEmulator, make_context: Any, tmp_path: Path, slug: str
) -> None:
    result = _batch(tmp_path, slug, {"a": {"prompt": "one"}, "b": {"prompt": "two"}}).execute(make_context())
    assert result["cost"] == pytest.approx(2 * (estimate_cost(slug) or 0), rel=1e-3)  # the directory's price
    items = result["items"]
    assert sorted(items) == ["a", "b"] and all(i["status"] == "COMPLETED" for i in items.values())
    for item in items.values():
        _check_stored(slug, output_kind(slug), item)


@pytest.mark.segmind_emulator(time_scale=SCALE)
def test_a_batch_of_a_directory_model_is_estimated_at_its_price_per_item_and_kept_above_the_floor(
    emulator: SegmindEmulator, make_context: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each item is priced with its own payload (``price_of(model, payload)``); a model the directory alone
    knows has one price for every payload (its pages give one figure), so the estimate is items x price."""
    slug, floor = "veo-3-fast", 1.0
    price = price_of(slug, {})
    emulator.configure(credits=floor + 3 * price + price / 2)  # three clips fit above the floor
    payloads = {f"clip-{i}": {"prompt": f"a lighthouse, take {i}", "duration": 4 + i} for i in range(5)}
    assert [price_of(slug, p) for p in payloads.values()] == [price] * 5
    with pytest.raises(SegmindCreditFloorError, match="2 of 5 items were not started"):
        _batch(tmp_path, slug, payloads, credit_floor=floor, max_in_flight=2).execute(make_context())
    assert f"Batch estimate ${5 * price:.4f} for 5 items exceeds" in capsys.readouterr().out
    assert len(emulator.requests()) == 3 and emulator.config()["credits_remaining"] >= floor - 1e-9


# --- retired and unknown models ----------------------------------------------------------------


def test_a_retired_model_fails_final_naming_its_successor_and_is_not_billed(
    emulator: SegmindEmulator, make_context: Any
) -> None:
    emulator.register_model("flux-pro", retired=True)
    before = emulator.stats()["spent"]
    op = SegmindOperator(task_id="t", model="flux-pro", payload={"prompt": "x"}, deferrable=False)
    with pytest.raises(SegmindModelRetiredError) as info:
        op.execute(make_context())
    message = str(info.value)
    assert "'flux-pro' is retired" in message and "410" in message and "nothing was billed" in message
    assert "successor is 'flux-1.1-pro'" in message  # the directory's, not the server's word
    assert [c["status"] for c in emulator.calls("submit")] == [410]  # final: not retried
    assert emulator.stats()["spent"] == before


def test_an_unknown_slug_is_warned_about_before_any_spend(
    emulator: SegmindEmulator, make_context: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    op = SegmindOperator(task_id="t", model="flux-1.1-por", payload={"prompt": "x"}, deferrable=False)
    with pytest.raises(SegmindNotFoundError):
        op.execute(make_context())
    log = capsys.readouterr().out
    warning = next(line for line in log.splitlines() if "flux-1.1-por" in line and "nearest" in line)
    assert "warning" in warning and "nearest known: flux-1.1-pro, flux-1.1-pro-ultra" in warning
    # with a credit floor nothing is even sent: no price can be kept for a slug nobody knows
    floored = SegmindOperator(
        task_id="t", model="flux-1.1-por", payload={"prompt": "x"}, deferrable=False, credit_floor=1.0
    )
    emulator.clear_calls()
    with pytest.raises(SegmindValidationError, match=r"nearest known: flux-1\.1-pro"):
        floored.execute(make_context())
    assert emulator.calls("submit") == [] and emulator.calls("credits") == []


# --- the live model list and the user catalog ----------------------------------------------------


def test_the_emulator_lists_every_model_it_serves(emulator: SegmindEmulator) -> None:
    listed = SegmindHook().list_models()
    slugs = {item["slug"] for item in listed}
    assert {m.slug for m in directory_models()} <= slugs
    kling = next(item for item in listed if item["slug"] == "kling-v2-pro-avatar")
    assert kling["output_kind"] == "video" and kling["average_latency_s"] == 779.47


def test_refresh_reads_the_live_list_into_the_user_catalog_which_wins(
    emulator: SegmindEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from segmind_provider.catalog.__main__ import main

    emulator.register_model("brand-new-tts", latency=7.0, output="audio", cost=0.02)
    emulator.register_model("kling-2.6", cost=9.99)
    emulator.register_model("flux-pro", retired=True, successor="flux-1.1-pro")
    assert directory_model("brand-new-tts") is None
    assert main(["refresh", "--catalog-dir", str(tmp_path)]) == 0
    written = json.loads((tmp_path / "directory.json").read_text())
    assert written["read"] and written["source"].endswith("/inference-model-information/list")
    monkeypatch.setenv(catalog.ENV_CATALOG_DIR, str(tmp_path))
    catalog.reload()
    new = directory_model("brand-new-tts")
    assert new is not None and new.output_kind == "audio" and new.price_usd == 0.02 and new.latency_s == 7.0
    assert estimate_cost("kling-2.6") == 9.99  # the user catalog wins over the shipped directory
    assert estimate_cost("flux-1.1-pro") == get_model("flux-1.1-pro").price_usd  # type: ignore[union-attr]
    with pytest.raises(SegmindValidationError, match=r"'flux-pro' is retired.*use 'flux-1\.1-pro'"):
        model_notice("flux-pro")  # refused before any spend once the list says so


def test_refresh_without_a_user_catalog_folder_says_how_to_name_one(emulator: SegmindEmulator) -> None:
    from segmind_provider.catalog.__main__ import main

    assert main(["refresh"]) == 2


def test_the_connection_extra_names_the_user_catalog(
    emulator: SegmindEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = json.loads(emulator.connection_json())
    conn["extra"]["catalog_dir"] = str(tmp_path)
    monkeypatch.setenv("AIRFLOW_CONN_SEGMIND_DEFAULT", json.dumps(conn))
    assert SegmindHook().get_settings().catalog_dir == str(tmp_path)
    assert catalog.user_catalog_dir() == tmp_path


def test_records_from_an_unknown_list_shape_are_read_tolerantly() -> None:
    answer = {
        "data": [
            {
                "slug": "a",
                "title": "A",
                "type": "Text-to-Image Generation",
                "price": "$0.5",
                "latency": "12s",
            },
            {"name": "b", "category": "Speech Synthesis"},
            {"title": "no slug"},
            "junk",
        ]
    }
    records = records_from_list(answer, "2026-12-06", "test", {"Text-to-Image Generation": "image"})
    assert sorted(records) == ["a", "b"]
    assert (
        records["a"].output_kind == "image" and records["a"].price_usd == 0.5 and records["a"].latency_s == 12
    )
    assert records["b"].output_kind == "audio" and records["b"].price_usd is None


# --- the importer -------------------------------------------------------------------------------


def _imported(name: str) -> dict[str, Any]:
    result = import_page((PAGES / name).read_text(), directory=catalog._directory(), read="2026-12-06")
    assert result.complete, result.problems
    return result.entry


def test_the_seed_page_reproduces_flux_1_1_pro_and_every_difference_is_explained() -> None:
    for seed in (path for path in SEED_PAGES if path.is_file()):
        assert seed.read_text() == (PAGES / "flux-1.1-pro.txt").read_text()  # the stored copy is the seed
    shipped = json.loads((ROOT / "segmind_provider/catalog/models/flux-1.1-pro.json").read_text())
    differences = diff_entries(_imported("flux-1.1-pro.txt"), shipped)
    assert differences == ["price_usd", "parameters.prompt.min_length", "parameters.seed.minimum"]
    notes = " ".join(shipped["import_notes"])
    assert all(path in notes for path in differences)


def test_every_shipped_entry_names_its_page_file_but_those_made_by_hand() -> None:
    without = sorted(slug for slug, entry in SHIPPED.items() if "page_file" not in entry)
    assert without == MADE_BY_HAND
    for slug in MADE_BY_HAND:
        assert "Made by hand" in " ".join(SHIPPED[slug]["import_notes"])
    for slug in sorted(set(SHIPPED) - set(MADE_BY_HAND)):
        assert (PAGES / SHIPPED[slug]["page_file"]).is_file(), slug


@pytest.mark.parametrize("slug", sorted(set(SHIPPED) - set(MADE_BY_HAND)))
def test_a_stored_page_reproduces_its_shipped_entry(slug: str) -> None:
    """Re-imported from its page file, an entry is what ships, or each difference is in its notes."""
    shipped = SHIPPED[slug]
    result = import_page(
        (PAGES / shipped["page_file"]).read_text(encoding="utf-8"),
        directory=catalog._directory(),
        read=shipped.get("read"),
        page_file=shipped["page_file"],
    )
    assert result.complete, result.problems
    notes = " ".join(shipped.get("import_notes", []))
    assert [path for path in diff_entries(result.entry, shipped) if path not in notes] == []
    if "read" in shipped:  # written by the importer: the same file, byte for byte
        assert result.entry == shipped


def _entry_payload(entry: dict[str, Any], photo: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """An entry's required fields: files from a local photo (``input_files``), the rest from the
    entry's default, its first allowed value, its minimum, or a chat message for ``messages``."""
    payload: dict[str, Any] = {}
    files: dict[str, str] = {}
    for name, param in entry["parameters"].items():
        if not param.get("required"):
            continue
        if param.get("media"):
            files[name] = str(photo)
        elif param.get("default") is not None:
            payload[name] = param["default"]
        elif "enum" in param:
            payload[name] = param["enum"][0]
        elif name == "messages":
            payload[name] = [{"role": "user", "content": "Write a caption for a lighthouse"}]
        else:
            kind = param["type"]
            payload[name] = param.get("minimum", 1) if kind in ("integer", "number") else "a lighthouse"
    return payload, files


@pytest.mark.segmind_emulator(time_scale=SCALE)
@pytest.mark.parametrize("slug", sorted(SHIPPED))
def test_every_shipped_entry_runs_through_the_operator_with_its_required_fields(
    emulator: SegmindEmulator, make_context: Any, tmp_path: Path, slug: str
) -> None:
    from PIL import Image

    entry = SHIPPED[slug]
    photo = tmp_path / "photo.png"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(photo)
    payload, files = _entry_payload(entry, photo)
    kind = entry["output"]["kind"]
    op = SegmindOperator(
        task_id=f"t-{slug}",
        model=slug,
        payload=payload,
        input_files=files or None,
        deferrable=False,
        output_path=str(tmp_path / "out" / slug),
        credit_floor=0.0,
    )
    result = op.execute(make_context())
    assert result["status"] == "COMPLETED" and result["cost"] == entry["price_usd"]
    _check_stored(slug, kind, result)


def test_what_the_page_does_not_say_is_reported_not_guessed() -> None:
    esrgan = import_page((PAGES / "esrgan.txt").read_text(), directory=catalog._directory())
    assert "enum" not in esrgan.entry["parameters"]["scale"]  # '248': 2, 4, 8 or 248? not guessed
    assert any("scale" in p and "unreadable" in p for p in esrgan.problems)
    assert esrgan.entry["price_note"].startswith("not on the page")  # the directory's average, said so
    bg = import_page((PAGES / "bg-removal-v2.txt").read_text(), directory=catalog._directory())
    assert "enum" not in bg.entry["parameters"]["type"] and any("+3 more" in p for p in bg.problems)
    cut = import_page((PAGES / "chatterbox-tts.txt").read_text(), directory=catalog._directory())
    assert not cut.complete and any("ends before 'Response Type'" in p for p in cut.problems)
    with pytest.raises(ValueError, match="no model slug"):
        import_page("Some page\n\nParameters\n", directory={})


def test_an_llm_page_imports_its_chat_layout() -> None:
    """``messages`` is an ``object[]`` whose ``Array items:`` fields are described in it, not made top
    level; ``Response Format`` (a JSON sample follows) closes the list like ``Response Type``."""
    deepseek = _imported("deepseek-chat.txt")
    messages = deepseek["parameters"]["messages"]
    assert list(deepseek["parameters"]) == ["messages"]
    assert (messages["type"], messages["required"]) == ("array", True)
    assert "Each item: role (required string; one of 'user', 'assistant')" in messages["description"]
    assert (deepseek["task"], deepseek["output"]["kind"], deepseek["typical_seconds"]) == (
        "text",
        "text",
        31.05,
    )
    assert any("'OpenAI GPT (Standard Format)'" in note for note in deepseek["import_notes"])
    claude = _imported("claude-4-sonnet.txt")
    assert sorted(claude["parameters"]) == ["instruction", "messages"]  # the page's own field after the items
    assert "required" not in claude["parameters"]["instruction"]
    assert any("'Anthropic Claude'" in note for note in claude["import_notes"])


def test_an_older_layout_page_imports_its_attributes() -> None:
    """``Attributes`` with ``<name><type>[ *][ ( default: X )]`` headers, ``min :``/``max :`` lines, up to
    the note on credit usage; a page that opens with its code sample has its title below its fields."""
    reasoner = _imported("deepseek-reasoner.txt")
    assert (reasoner["slug"], reasoner["title"], reasoner["task"]) == (
        "deepseek-reasoner",
        "DeepSeek R1",
        "text",
    )
    messages = reasoner["parameters"]["messages"]
    assert list(reasoner["parameters"]) == ["messages"] and "required" not in messages  # the page marks none
    assert "Each item: role (string): Could be" in messages["description"]
    gpt = _imported("gpt-4o.txt")
    assert (gpt["title"], gpt["description"]) == (
        "GPT-4o",
        "GPT-4o is the next iteration of GPT-4 language model.",
    )
    page = (
        'Tool\n\nA tool.\n\nPOST\nurl = "https://api.segmind.com/v1/esrgan"\nAttributes\n\nimagestr *\n\n'
        "Input an image URL.\n\nscaleint ( default: 3 )\n\nBlur.\n\nmin : 1,\n\nmax : 5\n\n"
        "flagboolean ( default: 1 )\n\nA flag.\n\nTo keep track of your credit usage, look.\n"
    )
    result = import_page(page, directory=catalog._directory())
    params = result.entry["parameters"]
    assert result.complete, result.problems
    assert params["image"] == {
        "type": "string",
        "required": True,
        "description": "Input an image URL.",
        "media": "image",
        "encoding": "url",
    }
    assert (params["scale"]["default"], params["scale"]["minimum"], params["scale"]["maximum"]) == (3, 1, 5)
    assert "default" not in params["flag"]  # "1" is not a boolean: reported, not taken
    assert any("flag: default '1' is not a boolean" in p for p in result.problems)


def test_a_field_the_older_layout_marks_as_affecting_the_price_is_read_and_the_mark_reported() -> None:
    """``<name><type> ( default: X ) Affects Pricing``: the field is read like any other; the entry's one
    price cannot follow it (the page does not say how), which the import says. An 'int' the page itself
    gives a fraction is a number."""
    result = import_page((PAGES / "sound-generation.txt").read_text(), directory=catalog._directory())
    params = result.entry["parameters"]
    assert result.complete, result.problems
    assert sorted(params) == ["duration_seconds", "prompt_influence", "text"]
    assert params["text"] == {
        "type": "string",
        "required": True,
        "description": "The text that will get converted into a sound effect.",
    }
    assert (params["duration_seconds"]["minimum"], params["duration_seconds"]["maximum"]) == (0.5, 22)
    # Typed 'int' on the page, but its bound (0.5) and its own code sample (0.3) are fractions: numbers.
    assert params["duration_seconds"]["type"] == params["prompt_influence"]["type"] == "number"
    assert any("prompt_influence: the page types it 'int' but gives 0.3" in p for p in result.problems)
    assert any(
        "duration_seconds, prompt_influence" in p and "affect the price" in p for p in result.problems
    ), result.problems


def test_a_page_with_nested_object_fields_is_reported_not_imported() -> None:
    gemini = import_page(
        (PAGES / "gemini-3.1-flash-lite.txt").read_text(encoding="utf-8"), directory=catalog._directory()
    )
    assert not gemini.complete
    assert any(
        "messages.system_instruction: unknown type 'object'; not imported" in p for p in gemini.problems
    )


def test_a_list_of_urls_is_a_list_of_files_said_in_the_notes() -> None:
    image_urls = _imported("nano-banana.txt")["parameters"]["image_urls"]
    assert (image_urls["type"], image_urls["media"], image_urls["encoding"]) == ("array", "image", "url")


def test_a_price_range_takes_its_upper_bound_and_says_so() -> None:
    page = (
        (PAGES / "faceswap-v5.txt")
        .read_text()
        .replace("$0.05 per generation", "$0.037 - $0.113 per generation")
    )
    result = import_page(page, directory=catalog._directory())
    assert result.entry["price_usd"] == 0.113 and "range" in result.entry["price_note"]
    assert any(note.startswith("price_usd: the page gives a range") for note in result.entry["import_notes"])


def test_an_html_page_imports_like_its_text(tmp_path: Path) -> None:
    text = (PAGES / "faceswap-v5.txt").read_text()
    html = (
        "<!DOCTYPE html><html><head><script>var x = 1;</script></head><body>"
        + "".join(f"<div>{line}</div>" for line in text.splitlines())
        + "</body></html>"
    )
    from_html = import_page(html, directory=catalog._directory(), read="2026-12-06")
    assert from_html.entry == _imported("faceswap-v5.txt")


def test_import_writes_into_the_user_catalog_whose_entry_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from segmind_provider.catalog.__main__ import main

    monkeypatch.setenv(catalog.ENV_CATALOG_DIR, str(tmp_path))
    assert main(["import", str(PAGES / "chatterbox-tts.txt")]) == 1  # a cut page is not written
    assert not (tmp_path / "models").exists()
    page = tmp_path / "page.txt"
    page.write_text((PAGES / "faceswap-v5.txt").read_text().replace("~9.82s", "~4.5s"))
    assert main(["import", str(page)]) == 0
    assert (tmp_path / "models" / "faceswap-v5.json").is_file()
    catalog.reload()
    assert typical_seconds("faceswap-v5") == 4.5


def test_the_module_imports_a_page_to_stdout_without_a_user_catalog() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "segmind_provider.catalog",
            "import",
            str(PAGES / "esrgan.txt"),
            "--read",
            "2026-12-06",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in __import__("os").environ.items() if k != catalog.ENV_CATALOG_DIR},
    )
    assert json.loads(done.stdout)["slug"] == "esrgan"
    assert "not read: parameters.scale" in done.stderr
