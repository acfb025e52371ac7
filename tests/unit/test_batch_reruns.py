"""SegmindBatchOperator across reruns and retries (issue 21): what is reused, under which key, at what cost.

Every test drives the real operator, hook and trigger over loopback HTTP against the emulator, through
the helpers of ``test_batch.py`` (each deferral resumed the way Airflow resumes it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred
from PIL import Image
from test_batch import PRICE, Run, batch, payloads, submits

from segmind_provider.exceptions import SegmindBatchItemsFailedError, SegmindValidationError
from segmind_provider.testing.emulator.runner import SegmindEmulator
from segmind_provider.triggers.batch import SegmindBatchTrigger


async def next_wave(run: Run, deferred: TaskDeferred) -> TaskDeferred:
    """Run one deferral's trigger and resume the task with its event; the task must defer again."""
    (event,) = [e async for e in SegmindBatchTrigger(**deferred.trigger.serialize()[1]).run()]
    payload = json.loads(json.dumps(event.payload))  # events are stored as JSON
    result, again = await run.step(lambda: run.op.execute_wave(run.context, event=payload))
    assert result is None and again is not None
    return again


def manifest_on_disk(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "manifest.json").read_text())
    return data


async def test_a_rerun_makes_again_every_stored_file_whose_size_or_digest_changed(
    emulator: SegmindEmulator, tmp_path: Path, make_context: Callable[..., dict[str, Any]]
) -> None:
    """Case 3: zeros (a power cut), an HTML 502 page and another item's intact PNG are no longer the
    stored outputs: each is generated again; only the untouched file is reused."""
    items = dict(zip("abcd", payloads(4), strict=True))
    out = tmp_path / "out"
    await Run(batch(tmp_path, items), make_context()).all()
    (out / "b.png").write_bytes(bytes((out / "b.png").stat().st_size))
    (out / "c.png").write_bytes(b"<html><body><h1>502 Bad Gateway</h1></body></html>\n")
    (out / "d.png").write_bytes((out / "a.png").read_bytes())  # a whole PNG, but another item's
    emulator.clear_calls()
    again = await Run(batch(tmp_path, items), make_context()).all()
    assert submits(emulator) == 3
    assert [k for k, e in again["items"].items() if e["reused"]] == ["a"]
    for key in items:
        data = (out / f"{key}.png").read_bytes()
        with Image.open(out / f"{key}.png") as image:
            image.load()
        assert again["items"][key]["output_sizes"] == [len(data)]
        assert again["items"][key]["output_sha256"] == [hashlib.sha256(data).hexdigest()]
    assert manifest_on_disk(out)["items"] == json.loads(json.dumps(again["items"]))


@contextlib.contextmanager
def small_disk(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where``: a real filesystem that runs out of space (needs root)."""
    where.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        reason = f"cannot mount a tmpfs here (root with CAP_SYS_ADMIN needed): {mounted.stderr.strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)  # CI runs as root: there this test must run, not skip
        pytest.skip(reason)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """Fill ``disk`` until ``leave`` bytes are free."""
    stats = os.statvfs(disk)
    filler = disk / "filler.bin"
    with filler.open("wb") as handle:
        handle.truncate(0)
        remaining = stats.f_bavail * stats.f_frsize - leave
        block = bytes(1 << 20)
        while remaining > 0:
            chunk = block[: min(len(block), remaining)]
            handle.write(chunk)
            remaining -= len(chunk)
    return filler


async def test_a_rerun_after_a_full_disk_fetches_again_what_was_paid_for(
    emulator: SegmindEmulator, tmp_path: Path, make_context: Callable[..., dict[str, Any]]
) -> None:
    """Case 4: seven items stored, then the disk fills (a real ENOSPC from a tmpfs) and three completed
    requests cannot be stored. The rerun, space freed, fetches two again and pays only for the third,
    whose result Segmind no longer holds."""
    with small_disk(tmp_path / "disk", "8m") as disk:
        items, out = payloads(10), disk / "out"
        op = batch(None, items, output_dir=str(out), max_in_flight=1)  # one item a wave: stored in order
        run = Run(op, make_context())
        deferred = await run.deferred_once()
        for _ in range(7):
            deferred = await next_wave(run, deferred)
        assert len(list(out.glob("*.png"))) == 7
        filler = fill(disk, 16 * 1024)  # room for the manifest, not for one more image
        with pytest.raises(SegmindBatchItemsFailedError) as raised:
            await run.resume(deferred)
        assert "No space left on device" in str(raised.value)
        assert len(emulator.requests()) == 10
        entries = manifest_on_disk(out)["items"]
        unstored = [k for k, e in entries.items() if e["status"] == "FAILED"]
        assert len(unstored) == 3 and all(entries[k]["request_id"] for k in unstored)
        filler.unlink()  # space freed
        gone = str(entries[unstored[0]]["request_id"])
        assert emulator.expire(gone) == 1  # results are kept an hour: this one is past it
        emulator.clear_calls()
        rerun = await Run(batch(None, items, output_dir=str(out), max_in_flight=1), make_context()).all()
        assert submits(emulator) == 1  # only the one Segmind no longer holds
        assert rerun["completed"] == 10 and rerun["reused"] == 7
        for key in unstored[1:]:  # fetched again: the same request, paid by the first run
            assert rerun["items"][key]["request_id"] == entries[key]["request_id"]
            assert rerun["items"][key]["cost"] == 0.0
        assert rerun["items"][unstored[0]]["request_id"] != gone
        assert rerun["cost"] == pytest.approx(PRICE)
        assert len(list(out.glob("*.png"))) == 10


async def test_item_keys_that_share_a_file_or_contradict_their_format_are_refused_before_any_spend(
    emulator: SegmindEmulator, tmp_path: Path, make_context: Callable[..., dict[str, Any]]
) -> None:
    """Case 5: ``hero`` and ``hero.png`` would both be ``hero.png``; ``sku-9.jpg`` asks for a PNG."""
    p = payloads(3)
    with pytest.raises(SegmindValidationError) as raised:
        await Run(batch(tmp_path, {"hero": p[0], "hero.png": p[1], "side": p[2]}), make_context()).all()
    text = str(raised.value)
    assert "'hero'" in text and "'hero.png'" in text and "hero.png" in text and "'side'" not in text
    with pytest.raises(SegmindValidationError) as raised:
        await Run(batch(tmp_path, {"Hero": p[0], "hero": p[1]}), make_context()).all()
    assert "'Hero'" in str(raised.value) and "'hero'" in str(raised.value)
    with pytest.raises(SegmindValidationError) as raised:
        await Run(batch(tmp_path, {"sku-9.jpg": p[0], "sku-10": p[1]}), make_context()).all()
    assert "'sku-9.jpg'" in str(raised.value) and "png" in str(raised.value)
    assert emulator.calls() == [] and not (tmp_path / "out").exists()
    manifest = await Run(batch(tmp_path, {"sku-9.png": p[0], "sku-10": p[1]}), make_context()).all()
    assert manifest["items"]["sku-9.png"]["output_uris"] == [str(tmp_path / "out" / "sku-9.png")]


async def test_inserting_an_item_at_the_front_of_a_list_pays_for_that_item_only(
    emulator: SegmindEmulator, tmp_path: Path, make_context: Callable[..., dict[str, Any]]
) -> None:
    """Case 6: a list's items are keyed by what they ask (their fingerprint), not their position."""
    items = payloads(5)
    first = await Run(batch(tmp_path, items[1:]), make_context()).all()
    assert submits(emulator) == 4
    emulator.clear_calls()
    second = await Run(batch(tmp_path, items), make_context()).all()
    assert submits(emulator) == 1 and second["reused"] == 4
    assert set(first["items"]) < set(second["items"])
    assert second["order"] == [k for k in second["items"]] and second["order"][1:] == first["order"]
    for key, entry in second["items"].items():
        assert entry["output_uris"] == [str(tmp_path / "out" / f"{key}.png")]
    emulator.clear_calls()
    twice = await Run(batch(tmp_path / "twice", [items[0], items[0]]), make_context()).all()
    assert (
        submits(emulator) == 2 and len(set(twice["order"])) == 2
    )  # the same payload asked twice: two images


async def test_a_list_stored_under_positional_keys_is_reused_in_place(
    emulator: SegmindEmulator, tmp_path: Path, make_context: Callable[..., dict[str, Any]]
) -> None:
    """Case 6, upgrading: a manifest keyed ``"0"``, ``"1"``... (a list batch before its keys were
    fingerprints) is matched by fingerprint; its files stay where they are and nothing is paid again.
    A file another item now writes is not borrowed: ``b`` asks what ``x`` asked, and ``x.png`` is the
    new item ``x.png``'s file now."""
    items = payloads(4)
    await Run(batch(tmp_path, {str(i): p for i, p in enumerate(items[:3])}), make_context()).all()
    emulator.clear_calls()
    listed = await Run(batch(tmp_path, items[:3]), make_context()).all()
    assert submits(emulator) == 0 and listed["reused"] == 3
    out = tmp_path / "out"
    assert [e["output_uris"] for e in listed["items"].values()] == [[str(out / f"{i}.png")] for i in range(3)]
    again = await Run(batch(tmp_path, items[:3]), make_context()).all()
    assert submits(emulator) == 0 and again["items"] == listed["items"]
    emulator.clear_calls()
    await Run(batch(tmp_path / "named", {"x": items[3]}), make_context()).all()
    emulator.clear_calls()
    renamed = await Run(batch(tmp_path / "named", {"b": items[3], "x.png": items[0]}), make_context()).all()
    assert submits(emulator) == 2 and renamed["reused"] == 0
    assert renamed["items"]["b"]["output_uris"] == [str(tmp_path / "named" / "out" / "b.png")]


async def test_an_unreadable_manifest_stops_the_task_before_any_spend(
    emulator: SegmindEmulator, tmp_path: Path, make_context: Callable[..., dict[str, Any]]
) -> None:
    """Case 8: a stray trailing comma; the task names the file, the parse error and the ways out."""
    items = payloads(4)
    await Run(batch(tmp_path, items), make_context()).all()
    path = tmp_path / "out" / "manifest.json"
    text = path.read_text().rstrip()
    path.write_text(text[:-1].rstrip() + ",\n}\n")
    emulator.clear_calls()
    with pytest.raises(SegmindValidationError) as raised:
        await Run(batch(tmp_path, items), make_context()).all()
    message = str(raised.value)
    assert str(path) in message and "line" in message and "column" in message
    assert "delete it" in message and "reuse=False" in message
    assert submits(emulator) == 0
    fresh = await Run(batch(tmp_path, items, reuse=False), make_context()).all()
    assert submits(emulator) == 4 and fresh["completed"] == 4
    assert manifest_on_disk(tmp_path / "out")["completed"] == 4  # written whole again


@pytest.mark.parametrize("store", [True, False], ids=["task_state_store", "manifest only (Airflow 3.2)"])
async def test_costs_stay_true_across_three_tries(
    emulator: SegmindEmulator,
    tmp_path: Path,
    make_context: Callable[..., dict[str, Any]],
    state_store: Any,
    store: bool,
) -> None:
    """Case 14: two tries killed while deferred, each after storing a wave; the third finishes. Every one
    of the twelve requests was paid by this task instance (one DAG run), and the manifest says so, with
    or without a task_state_store to keep when the first try started."""
    items = payloads(12)

    def context(try_number: int) -> dict[str, Any]:
        return make_context(state_store if store else None, try_number=try_number, run_id="scheduled__1")

    for try_number in (1, 2):  # a try stores a wave, submits the next, and its worker dies while deferred
        run = Run(batch(tmp_path, items, max_in_flight=4), context(try_number))
        await next_wave(run, await run.deferred_once())
    last = await Run(batch(tmp_path, items, max_in_flight=4), context(3)).all()
    assert len(emulator.requests()) == 12 and submits(emulator) == 12
    assert last["completed"] == 12
    assert all(e["cost"] == pytest.approx(PRICE) for e in last["items"].values()), last["items"]
    assert last["cost"] == pytest.approx(12 * PRICE)
    assert all(e["submitted_at"] for e in last["items"].values())
    emulator.clear_calls()
    rerun = await Run(batch(tmp_path, items, max_in_flight=4), make_context(run_id="scheduled__2")).all()
    assert submits(emulator) == 0 and rerun["cost"] == 0.0  # the next DAG run paid nothing


async def test_a_cost_that_cannot_be_known_is_reported_as_unknown_not_zero(
    emulator: SegmindEmulator,
    tmp_path: Path,
    make_context: Callable[..., dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Case 14: the request history cannot be read, so no cost is known: None, and "unknown" in the log."""
    emulator.add_fault("history", status=500)
    manifest = await Run(batch(tmp_path, payloads(3)), make_context()).all()
    assert manifest["completed"] == 3
    assert manifest["cost"] is None and all(e["cost"] is None for e in manifest["items"].values())
    assert manifest_on_disk(tmp_path / "out")["cost"] is None
    assert "cost unknown" in "".join(capsys.readouterr())
