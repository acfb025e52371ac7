"""Outputs stored whole or refused, and no HTTP call outliving its deadline (issue 21, cases 9-11).

Through the real operator and hook over real HTTP against the emulator, which serves the faults:
`flip` (64 bytes inverted in the middle of a body of the right length), `drip` (a body sent a few
bytes a second), and a real 16384x16384 PNG from its upscaler.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import struct
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred
from PIL import Image

from segmind_provider.exceptions import (
    SegmindBatchItemsFailedError,
    SegmindOutputError,
    SegmindTransportError,
)
from segmind_provider.hooks.segmind import SegmindHook
from segmind_provider.operators.segmind import SegmindBatchOperator, SegmindOperator
from segmind_provider.testing.emulator.runner import SegmindEmulator
from segmind_provider.triggers.segmind import SegmindRequestTrigger

FLUX = "flux-1.1-pro"
SQUARE_256 = {"aspect_ratio": "custom", "width": 256, "height": 256}
SQUARE_512 = {"aspect_ratio": "custom", "width": 512, "height": 512}
#: Seeds whose 512x512 image, with the emulator's 64 bytes flipped, still passes Pillow's load()
#: (checked once by hand): the PNG fails an IDAT CRC, the JPEG puts a marker inside its scan.
LENIENT_SEEDS = {"png": 11, "jpg": 3}


def flux(
    tmp_path: Path, fmt: str = "png", seed: int = 3, size: dict[str, Any] = SQUARE_256, **kw: Any
) -> SegmindOperator:
    """A non-deferrable flux-1.1-pro task storing ``<tmp>/out.<fmt>``."""
    args: dict[str, Any] = {
        "task_id": "generate",
        "model": FLUX,
        "payload": {"prompt": "a lighthouse at dawn", "output_format": fmt, "seed": seed, **size},
        "output_path": str(tmp_path / f"out.{fmt}"),
        "deferrable": False,
        "poll_interval": 0.2,
        "expected_duration": 0.14,
    }
    args.update(kw)
    return SegmindOperator(**args)


def media_gets(emulator: SegmindEmulator) -> int:
    return len(emulator.calls(endpoint="media"))


# ---------------------------------------------------------------- case 9: 64 flipped bytes


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_an_image_with_flipped_bytes_is_fetched_again_and_never_stored_broken(
    emulator: SegmindEmulator, make_context: Any, tmp_path: Path, fmt: str
) -> None:
    """A flipped body, then a good one: the good one is stored (the broken one never was)."""
    emulator.add_fault("media", kind="flip", count=1)
    result = flux(tmp_path, fmt, LENIENT_SEEDS[fmt], SQUARE_512).execute(make_context())
    stored = Path(result["output_uris"][0])
    assert media_gets(emulator) == 2
    with Image.open(stored) as image:
        image.load()
        assert image.size == (512, 512)
    assert sorted(p.name for p in tmp_path.iterdir()) == [stored.name]


def test_a_png_with_flipped_bytes_every_time_is_refused_naming_the_bad_chunk(
    emulator: SegmindEmulator, make_context: Any, tmp_path: Path
) -> None:
    """The case as filed: Pillow's load() accepts this body; its IDAT CRC does not match."""
    emulator.add_fault("media", kind="flip")
    target = tmp_path / "out.png"
    target.write_bytes(b"an earlier file")
    with pytest.raises(SegmindOutputError, match=r"broken png file \(2 downloads\).*IDAT.*CRC"):
        flux(tmp_path, "png", LENIENT_SEEDS["png"], SQUARE_512).execute(make_context())
    assert target.read_bytes() == b"an earlier file"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


# ---------------------------------------------------------------- case 10: a 16384x16384 upscale


def flat_png(side: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (side, side), (40, 90, 160)).save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def process_emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[SegmindEmulator]:
    """An emulator in its own process, so this process's memory is the client's alone."""
    with SegmindEmulator(process=True, time_scale=0.01) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_SEGMIND_DEFAULT", emu.connection_json())
        yield emu


@pytest.mark.timeout(300)
def test_a_16384_square_png_from_the_upscaler_is_stored_in_bounded_memory(
    process_emulator: SegmindEmulator, make_context: Any, tmp_path: Path
) -> None:
    """~820 KB on the wire, 805 MB of pixels: verified as a stream, never decoded into a bitmap."""
    source = tmp_path / "in.png"
    source.write_bytes(flat_png(4096))
    op = SegmindOperator(
        task_id="upscale",
        model="clarity-upscaler",
        payload={"scale_factor": 4, "output_format": "png"},
        input_files={"image": str(source)},
        output_path=str(tmp_path / "big.png"),
        deferrable=False,
        poll_interval=0.5,
        expected_duration=0.2,
        timeout=280,
    )
    tracemalloc.start()
    try:
        result = op.execute(make_context())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    stored = Path(result["output_uris"][0])
    assert stored.stat().st_size < 4 << 20
    assert struct.unpack(">II", stored.read_bytes()[16:24]) == (16384, 16384)  # IHDR's width, height
    assert len(process_emulator.calls(endpoint="media")) == 1
    print(f"peak traced memory while storing: {peak / 2**20:.1f} MiB")
    assert peak < 64 << 20, f"peak {peak / 2**20:.1f} MiB traced while storing"


# ---------------------------------------------------------------- case 11: slow drips


def slow_connection(emulator: SegmindEmulator, monkeypatch: pytest.MonkeyPatch, **extra: Any) -> None:
    """``segmind_default`` with a 2 s read timeout (each read) and no retries."""
    conn = json.loads(emulator.connection_json())
    conn["extra"].update({"timeout": 2, "max_retries": 0, **extra})
    monkeypatch.setenv("AIRFLOW_CONN_SEGMIND_DEFAULT", json.dumps(conn))


@pytest.mark.parametrize(
    ("endpoint", "rate", "error"),
    [("media", 64, SegmindOutputError), ("result", 1, SegmindTransportError)],
    ids=["media at 64 B/s", "result at 1 B/s"],
)
def test_a_dripped_body_is_abandoned_at_the_call_deadline(
    emulator: SegmindEmulator,
    make_context: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    endpoint: str,
    rate: float,
    error: type[Exception],
) -> None:
    """Each read gets bytes within the 2 s timeout; the 256x256 PNG (~50 KB) or the result (~300
    bytes) would need minutes at these rates. A 5 s task timeout: the task ends well before."""
    slow_connection(emulator, monkeypatch)
    emulator.add_fault(endpoint, kind="drip", rate=rate)
    started = time.monotonic()
    with pytest.raises(error, match="deadline"):
        flux(tmp_path, timeout=5).execute(make_context())
    assert time.monotonic() - started < 40
    assert list(tmp_path.iterdir()) == []


def test_a_download_ends_with_the_tasks_execution_timeout(
    emulator: SegmindEmulator, make_context: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 60 s timeout lets the size alone allow ~60 s; the task's 6 s execution_timeout ends it first."""
    slow_connection(emulator, monkeypatch, timeout=60)
    emulator.add_fault("media", kind="drip", rate=64)
    context = make_context()
    context["ti"].start_date = dt.datetime.now(dt.timezone.utc)
    started = time.monotonic()
    with pytest.raises(SegmindOutputError, match="deadline"):
        flux(tmp_path, execution_timeout=dt.timedelta(seconds=6)).execute(context)
    assert time.monotonic() - started < 40
    assert list(tmp_path.iterdir()) == []


@pytest.mark.asyncio
async def test_the_triggers_result_read_dripped_at_1_byte_a_second_ends_at_the_call_deadline(
    emulator: SegmindEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_connection(emulator, monkeypatch)
    hook = SegmindHook()
    answer = hook.submit(FLUX, {"prompt": "a lighthouse at dawn", **SQUARE_256})
    emulator.add_fault("result", kind="drip", rate=1)
    started = time.monotonic()
    with pytest.raises(SegmindTransportError, match="deadline"):
        await hook.apoll_result(answer["request_id"])
    assert time.monotonic() - started < 40


def test_a_deferred_task_fetches_its_result_within_the_deadline_too(
    emulator: SegmindEmulator, make_context: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's half after the trigger (execute_complete): result body dripped."""
    slow_connection(emulator, monkeypatch)
    op = flux(tmp_path, deferrable=True, timeout=5)
    context = make_context()
    with pytest.raises(TaskDeferred) as info:
        op.execute(context)
    assert isinstance(info.value.trigger, SegmindRequestTrigger)
    emulator.add_fault("result", kind="drip", rate=1)
    started = time.monotonic()
    event = {"status": "success", "request_id": context["ti"].xcoms["request_id"], "message": "done"}
    with pytest.raises(SegmindTransportError, match="deadline"):
        op.execute_complete(context, event)
    assert time.monotonic() - started < 40


# ---------------------------------------------------------------- text outputs (issue 19, part 3)


@pytest.mark.parametrize(("output_path", "name"), [("caption", "caption.txt"), ("caption.md", "caption.md")])
def test_a_text_output_with_an_output_path_is_written_as_utf8(
    emulator: SegmindEmulator, make_context: Any, tmp_path: Path, output_path: str, name: str
) -> None:
    """llava-v1.6 answers text: written as a UTF-8 file (``.txt`` appended when no extension is given)."""
    source = tmp_path / "in.png"
    source.write_bytes(flat_png(64))
    out = tmp_path / "out"
    result = SegmindOperator(
        task_id="caption",
        model="llava-v1.6",
        payload={"prompt": "Describe the “lighthouse” — in one line"},
        input_files={"images": str(source)},
        output_path=str(out / output_path),
        deferrable=False,
        poll_interval=0.2,
        expected_duration=0.05,
    ).execute(make_context())
    assert result["output_uris"] == [str(out / name)]
    text = (out / name).read_text(encoding="utf-8")
    assert text == result["output"]
    assert "“lighthouse”" in text
    assert [p.name for p in out.iterdir()] == [name]


def test_a_batch_download_ends_with_the_tasks_execution_timeout(
    emulator: SegmindEmulator, make_context: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch stores its items under the same deadline as the single operator: a dripped download
    ends at the task's 6 s ``execution_timeout`` (the size alone would allow ~60 s), the item failed
    and not stored, the task's error naming the deadline."""
    slow_connection(emulator, monkeypatch, timeout=60)
    emulator.add_fault("media", kind="drip", rate=64)
    context = make_context()
    context["ti"].start_date = dt.datetime.now(dt.timezone.utc)
    op = SegmindBatchOperator(
        task_id="campaign",
        model=FLUX,
        payloads=[{"prompt": "a lighthouse at dawn", "output_format": "png", **SQUARE_256}],
        output_dir=str(tmp_path / "out"),
        deferrable=False,
        poll_interval=0.2,
        expected_duration=0.14,
        execution_timeout=dt.timedelta(seconds=6),
    )
    started = time.monotonic()
    with pytest.raises(SegmindBatchItemsFailedError, match="deadline"):
        op.execute(context)
    assert time.monotonic() - started < 40
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["manifest.json"]
