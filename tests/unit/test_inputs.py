"""Input files through SegmindOperator: read, checked, uploaded or inlined, against the emulator on loopback.

What the emulator logged is the evidence: its call log lists each upload with the sha256 of every
file stored and whether an API key came with each call (``key_present``); ``requests()`` lists
every accepted request with its body exactly as submitted.
"""

from __future__ import annotations

import base64
import hashlib
import io
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import ObjectStoragePath
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred
from PIL import Image

from segmind_provider.exceptions import SegmindValidationError
from segmind_provider.hooks.segmind import SegmindHook
from segmind_provider.inputs import DEFAULT_MAX_INPUT_BYTES, read_input_files
from segmind_provider.operators.segmind import SegmindOperator
from segmind_provider.testing.emulator.runner import SegmindEmulator


def png(colour: tuple[int, int, int] = (200, 60, 40), size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", size, (245, 245, 240))
    image.paste(colour, (size[0] // 4, size[1] // 4, 3 * size[0] // 4, 3 * size[1] // 4))
    image.save(buffer, "PNG")
    return buffer.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run(model: str, payload: dict[str, Any], make_context: Any, **kw: Any) -> dict[str, Any]:
    """One operator try in the worker (no deferral), the result returned."""
    op = SegmindOperator(
        task_id="t", model=model, payload=payload, deferrable=False, poll_interval=0.2, timeout=60, **kw
    )
    return op.execute(make_context())


def uploads(emulator: SegmindEmulator) -> list[dict[str, Any]]:
    """Every file stored, in order: ``{"sha256", "size", "content_type", "url"}``."""
    return [f for call in emulator.calls(endpoint="upload") for f in call["files"]]


def bodies(emulator: SegmindEmulator, model: str) -> list[dict[str, Any]]:
    return [r["body"] for r in emulator.requests(model=model)]


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    path.write_bytes(png())
    return path


# ---------------------------------------------------------------- files filled in as the model takes them


def test_a_local_file_is_uploaded_once_and_the_payload_carries_its_url(
    emulator: SegmindEmulator, make_context: Any, photo: Path, tmp_path: Path
) -> None:
    result = run(
        "flux-1.1-pro",
        {"prompt": "a bottle in a forest", "output_format": "png"},
        make_context,
        input_files={"image_prompt": str(photo)},
        output_path=str(tmp_path / "out.png"),
    )
    (stored,) = uploads(emulator)
    assert stored["sha256"] == sha(photo.read_bytes()) and stored["content_type"] == "image/png"
    (body,) = bodies(emulator, "flux-1.1-pro")
    assert body["image_prompt"] == stored["url"]
    assert result["output_uris"] == [str(tmp_path / "out.png")]
    # The key went to the storage and API hosts, never to the media address (output download).
    (upload_call,) = emulator.calls(endpoint="upload")
    assert upload_call["key_present"] and upload_call["path"] == "/storage/upload-asset"
    media = emulator.calls(endpoint="media")
    assert media and not any(call["key_present"] for call in media)


def test_an_object_storage_path_is_read_through_its_filesystem(
    emulator: SegmindEmulator, make_context: Any
) -> None:
    data = png((30, 90, 200))
    ObjectStoragePath("memory://segmind-inputs/mug.png").write_bytes(data)
    run(
        "flux-kontext-pro",
        {"prompt": "put the mug on a kitchen table"},
        make_context,
        input_files={"input_image": "memory://segmind-inputs/mug.png"},
    )
    (stored,) = uploads(emulator)
    assert stored["sha256"] == sha(data)
    assert bodies(emulator, "flux-kontext-pro")[0]["input_image"] == stored["url"]


def test_file_uris_and_path_objects_work_like_paths(
    emulator: SegmindEmulator, make_context: Any, photo: Path
) -> None:
    run("bg-removal-v2", {}, make_context, input_files={"image": photo.as_uri()})
    run("bg-removal-v2", {}, make_context, input_files={"image": photo})
    assert [f["sha256"] for f in uploads(emulator)] == [sha(photo.read_bytes())] * 2


def test_one_try_never_uploads_the_same_bytes_twice(
    emulator: SegmindEmulator, make_context: Any, photo: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "same-bytes-other-name.png"
    copy.write_bytes(photo.read_bytes())
    run(
        "kling-o1-image-to-video",
        {"prompt": "the product turns slowly"},
        make_context,
        input_files={"start_image_url": str(photo), "end_image_url": str(copy)},
    )
    (stored,) = uploads(emulator)
    (body,) = bodies(emulator, "kling-o1-image-to-video")
    assert body["start_image_url"] == body["end_image_url"] == stored["url"]


def test_a_list_fills_a_multi_value_field_in_order(
    emulator: SegmindEmulator, make_context: Any, tmp_path: Path
) -> None:
    """A model the catalog does not know: a list goes as a list of URLs, repeated content uploaded once."""
    emulator.register_model("my-collage-model", 5.0)
    first, second = tmp_path / "a.png", tmp_path / "b.jpg"
    first.write_bytes(png((10, 10, 10)))
    Image.new("RGB", (20, 20), (90, 90, 10)).save(second, "JPEG")
    run(
        "my-collage-model",
        {"prompt": "a collage"},
        make_context,
        input_files={"images": [str(first), str(second), str(first)]},
    )
    stored = uploads(emulator)
    assert [f["content_type"] for f in stored] == ["image/png", "image/jpeg"]
    (body,) = bodies(emulator, "my-collage-model")
    assert body["images"] == [stored[0]["url"], stored[1]["url"], stored[0]["url"]]


def test_a_base64_field_gets_the_file_inline_and_nothing_is_uploaded(
    emulator: SegmindEmulator, make_context: Any, photo: Path
) -> None:
    run(
        "clarity-upscaler",
        {"scale_factor": 2, "output_format": "png"},
        make_context,
        input_files={"image": str(photo)},
    )
    assert uploads(emulator) == []
    (body,) = bodies(emulator, "clarity-upscaler")
    assert base64.b64decode(body["image"]) == photo.read_bytes()


def test_http_values_pass_through_untouched(
    emulator: SegmindEmulator, make_context: Any, photo: Path
) -> None:
    url = SegmindHook().upload(photo.read_bytes(), "image/png")
    emulator.clear_calls()
    run("bg-removal-v2", {}, make_context, input_files={"image": url})
    assert uploads(emulator) == []
    assert bodies(emulator, "bg-removal-v2")[-1]["image"] == url


def test_input_files_and_their_connection_are_templated(make_context: Any) -> None:
    op = SegmindOperator(
        task_id="t",
        model="bg-removal-v2",
        payload={},
        input_files={"image": "/photos/{{ ds }}/shoe.png"},
        input_conn_id="{{ 'aws_' + 'default' }}",
    )
    assert {"input_files", "input_conn_id"} <= set(op.template_fields)
    op.render_template_fields({"ds": "2026-01-01"})
    assert op.input_files == {"image": "/photos/2026-01-01/shoe.png"}
    assert op.input_conn_id == "aws_default"


# ---------------------------------------------------------------- retries: the content decides, not the URL


@pytest.mark.segmind_emulator(time_scale=1.0)
def test_a_retry_that_re_uploads_still_re_attaches(
    emulator: SegmindEmulator, make_context: Any, state_store: dict[str, Any], photo: Path
) -> None:
    def try_once(source: Path) -> str:
        op = SegmindOperator(
            task_id="t",
            model="flux-kontext-pro",
            payload={"prompt": "on a beach"},
            input_files={"input_image": str(source)},
            deferrable=True,
        )
        with pytest.raises(TaskDeferred) as info:
            op.execute(make_context(state_store))
        return str(info.value.trigger.request_id)  # type: ignore[attr-defined]

    first = try_once(photo)
    second = try_once(photo)  # the retry uploads again (a new URL) ...
    assert second == first  # ... and re-attaches to the job it paid for
    stored = uploads(emulator)
    assert len(stored) == 2 and stored[0]["url"] != stored[1]["url"]
    assert len(emulator.calls(endpoint="submit")) == 1

    photo.write_bytes(png((0, 200, 0)))  # other content: another request
    assert try_once(photo) != first
    assert len(emulator.calls(endpoint="submit")) == 2


# ---------------------------------------------------------------- refused before any request, naming the field


def refused(emulator: SegmindEmulator, make_context: Any, model: str, **kw: Any) -> str:
    payload = kw.pop("payload", {"prompt": "x"})
    with pytest.raises(SegmindValidationError) as info:
        run(model, payload, make_context, **kw)
    assert isinstance(info.value, AirflowFailException)  # no retry pays for a bad file either
    assert emulator.calls() == []
    return str(info.value)


def test_a_missing_file_fails_before_any_request(
    emulator: SegmindEmulator, make_context: Any, tmp_path: Path
) -> None:
    missing = tmp_path / "nope.png"
    text = refused(emulator, make_context, "flux-kontext-pro", input_files={"input_image": str(missing)})
    assert "input_files['input_image']" in text and str(missing) in text and "does not exist" in text
    text = refused(
        emulator, make_context, "flux-kontext-pro", input_files={"input_image": "memory://nowhere/x.png"}
    )
    assert "input_image" in text and "memory://nowhere/x.png" in text and "does not exist" in text


def test_a_text_file_given_as_an_image_fails_before_any_request(
    emulator: SegmindEmulator, make_context: Any, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.png"
    notes.write_text("not a picture, whatever the name says\n")
    text = refused(emulator, make_context, "flux-1.1-pro", input_files={"image_prompt": str(notes)})
    assert "input_files['image_prompt']" in text and str(notes) in text and "is not an image" in text


def test_a_file_over_the_cap_fails_before_any_request(
    emulator: SegmindEmulator, make_context: Any, tmp_path: Path
) -> None:
    big = tmp_path / "huge.png"
    with open(big, "wb") as handle:  # sparse: over the default cap without writing 25 MiB
        handle.write(png())
        handle.truncate(DEFAULT_MAX_INPUT_BYTES + 1)
    text = refused(emulator, make_context, "bg-removal-v2", payload={}, input_files={"image": str(big)})
    assert "input_files['image']" in text and str(big) in text and str(DEFAULT_MAX_INPUT_BYTES) in text
    small = tmp_path / "small.png"
    small.write_bytes(png())
    text = refused(
        emulator,
        make_context,
        "bg-removal-v2",
        payload={},
        input_files={"image": str(small)},
        max_input_bytes=100,
    )
    assert "larger than the input cap of 100 bytes" in text


def test_every_bad_file_is_listed_at_once(
    emulator: SegmindEmulator, make_context: Any, tmp_path: Path
) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    broken = tmp_path / "broken.png"
    broken.write_bytes(png()[:60])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = refused(
        emulator,
        make_context,
        "kling-o1-image-to-video",
        input_files={"start_image_url": str(clip), "end_image_url": str(broken)},
    )
    assert "input_files['start_image_url']" in text and "video/mp4, but the field takes image" in text
    assert "input_files['end_image_url']" in text and "damaged png image" in text
    text = refused(emulator, make_context, "bg-removal-v2", payload={}, input_files={"image": str(tmp_path)})
    assert "is a directory" in text
    text = refused(emulator, make_context, "bg-removal-v2", payload={}, input_files={"image": str(empty)})
    assert "is empty" in text


def test_a_field_in_both_payload_and_input_files_is_an_error(
    emulator: SegmindEmulator, make_context: Any, photo: Path
) -> None:
    url = "https://example.com/bottle.png"
    text = refused(
        emulator,
        make_context,
        "flux-1.1-pro",
        payload={"prompt": "x", "image_prompt": url},
        input_files={"image_prompt": str(photo)},
    )
    assert "image_prompt" in text and "both" in text
    emulator.register_model("my-model", 1.0)
    text = refused(
        emulator,
        make_context,
        "my-model",
        payload={"prompt": "x", "image": url},
        input_files={"image": str(photo)},
    )
    assert "input_files['image']" in text and "also given in the payload" in text


def test_fields_that_take_no_file_or_one_file_are_checked(
    emulator: SegmindEmulator, make_context: Any, photo: Path
) -> None:
    text = refused(emulator, make_context, "flux-1.1-pro", input_files={"prompt": str(photo)})
    assert "prompt" in text and "takes no file" in text
    text = refused(
        emulator,
        make_context,
        "flux-kontext-pro",
        input_files={"input_image": [str(photo), str(photo)]},
    )
    assert "input_files['input_image']" in text and "must be one file" in text


def test_a_one_item_list_fills_a_single_file_field(
    emulator: SegmindEmulator, make_context: Any, photo: Path
) -> None:
    """An upstream task's ``output_uris`` is a list: one item is taken as the file."""
    run("bg-removal-v2", {}, make_context, input_files={"image": [str(photo)]})
    (stored,) = uploads(emulator)
    assert bodies(emulator, "bg-removal-v2")[0]["image"] == stored["url"]


def test_credentials_and_tokens_in_uris_stay_out_of_logs_and_errors() -> None:
    """A signed URL passes through to Segmind as given, but the log line and errors show neither
    its query (the signature) nor a user:password."""
    signed = "https://photos.example.com/shoe.png?X-Amz-Signature=s3cr3t&X-Amz-Credential=AKIA"
    inputs = read_input_files("bg-removal-v2", {"image": signed}, payload={})
    assert inputs.fill({}, lambda data, content_type: "unused") == {"image": signed}
    (line,) = inputs.describe()
    assert "https://photos.example.com/shoe.png" in line and "s3cr3t" not in line and "AKIA" not in line
    with pytest.raises(SegmindValidationError) as info:
        read_input_files("bg-removal-v2", {"image": "memory://user:hunter2@bucket/missing.png"}, payload={})
    assert "memory://bucket/missing.png does not exist" in str(info.value) and "hunter2" not in str(
        info.value
    )
