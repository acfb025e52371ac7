"""Output storage: real downloads over loopback, local and memory:// destinations, and every refusal.

Downloads go through the real hook's ``download`` (the one download policy), as the operator's do.
"""

from __future__ import annotations

import base64
import io
import socket
import threading
import uuid
from pathlib import Path
from typing import IO, Any

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from PIL import Image
from pytest_httpserver import HTTPServer

from segmind_provider.exceptions import SegmindOutputError, SegmindValidationError
from segmind_provider.hooks.segmind import SegmindHook
from segmind_provider.media import normalize_format, sniff_format
from segmind_provider.outputs import (
    DEFAULT_MAX_BYTES,
    DownloadFn,
    check_path_format,
    store_bytes,
    store_output,
)
from segmind_provider.runtime import reset_process_state


def image_bytes(fmt: str, size: tuple[int, int] = (16, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, fmt)
    return buf.getvalue()


PNG = image_bytes("PNG")
JPEG = image_bytes("JPEG")
WEBP = image_bytes("WEBP")
GIF = image_bytes("GIF")


@pytest.fixture(autouse=True)
def _no_backoff_sleeps() -> None:
    """The hook's download retries back off; here they need not wait."""
    reset_process_state(sleep=lambda seconds: None)


def capped(max_bytes: int) -> DownloadFn:
    """The real hook's download (no connection: downloads send no key), with a size cap."""
    hook = SegmindHook("segmind_outputs_test")
    return lambda url, fileobj: hook.download(url, fileobj, max_bytes=max_bytes)


def requests_download(url: str, fileobj: IO[bytes]) -> str:
    return capped(DEFAULT_MAX_BYTES)(url, fileobj)


class ScriptedServer:
    """Answers connection N with ``script[N]`` (raw HTTP bytes), then refuses; counts connections."""

    def __init__(self, script: list[bytes]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.script = list(script)
        self.served = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}{path}"

    def _serve(self) -> None:
        for answer in self.script:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(answer)
                self.served += 1
        self.sock.close()

    def close(self) -> None:
        self.thread.join(5)
        self.sock.close()


def http_answer(body: bytes, *, length: int | None = None) -> bytes:
    head = f"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {length or len(body)}\r\n"
    return head.encode() + b"Connection: close\r\n\r\n" + body


def corrupted(png: bytes) -> bytes:
    """Valid signature and full length, broken data: what a bad cache or proxy can serve."""
    return png[:16] + bytes(b ^ 0x5A for b in png[16:])


def serve(httpserver: HTTPServer, path: str, body: bytes, content_type: str = "image/png") -> str:
    httpserver.expect_request(path).respond_with_data(body, content_type=content_type)
    return httpserver.url_for(path)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".part"))


def memory_root() -> str:
    return f"memory://bucket-{uuid.uuid4().hex[:8]}"


# --- sniffing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (PNG, "png"),
        (JPEG, "jpeg"),
        (WEBP, "webp"),
        (GIF, "gif"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", "wav"),
        (b"\x00\x00\x00\x18ftypmp42", "mp4"),
        (b"\x1a\x45\xdf\xa3\x00", "webm"),
        (b"ID3\x04\x00", "mp3"),
        (b"<html>nope</html>", None),
        (b"", None),
    ],
)
def test_sniff_format(data: bytes, kind: str | None) -> None:
    assert sniff_format(data[:16]) == kind


def test_normalize_format_treats_jpg_as_jpeg() -> None:
    assert [normalize_format(x) for x in ("jpg", "JPEG", ".jpg", "png", None)] == [
        "jpeg",
        "jpeg",
        "jpeg",
        "png",
        None,
    ]


# --- local destinations over real HTTP -------------------------------------------------------


def test_download_to_exact_local_path(httpserver: HTTPServer, tmp_path: Path) -> None:
    url = serve(httpserver, "/out/abc.png", PNG)
    target = tmp_path / "images" / "cat.png"
    uris = store_output(url, str(target), download=requests_download, expected_format="png")
    assert uris == [str(target)]
    assert target.read_bytes() == PNG
    with Image.open(target) as img:
        assert (img.format, img.size) == ("PNG", (16, 8))
    assert leftovers(target.parent) == []


def test_extension_appended_from_content(httpserver: HTTPServer, tmp_path: Path) -> None:
    url = serve(httpserver, "/x", JPEG, "application/octet-stream")
    uris = store_output(url, str(tmp_path / "cat"), download=requests_download, expected_format="jpg")
    assert uris == [str(tmp_path / "cat.jpg")]
    assert (tmp_path / "cat.jpg").read_bytes() == JPEG


def test_unknown_suffix_is_not_an_extension(tmp_path: Path) -> None:
    uris = store_bytes(WEBP, "image/webp", tmp_path / "run.2024-01-01")
    assert uris == [str(tmp_path / "run.2024-01-01.webp")]


def test_jpeg_extension_accepts_jpg_request(tmp_path: Path) -> None:
    uris = store_bytes(JPEG, "image/jpeg", str(tmp_path / "a.JPEG"), expected_format="jpg")
    assert uris == [str(tmp_path / "a.JPEG")]


def test_several_outputs_are_numbered(httpserver: HTTPServer, tmp_path: Path) -> None:
    urls = [serve(httpserver, "/1", PNG), serve(httpserver, "/2", PNG)]
    uris = store_output(urls, str(tmp_path / "cat.png"), download=requests_download, expected_format="png")
    assert uris == [str(tmp_path / "cat-1.png"), str(tmp_path / "cat-2.png")]
    assert not (tmp_path / "cat.png").exists()


def test_several_outputs_without_extension_get_their_own(httpserver: HTTPServer, tmp_path: Path) -> None:
    output = {"images": [serve(httpserver, "/a", PNG), serve(httpserver, "/b", GIF, "image/gif")]}
    uris = store_output(output, str(tmp_path / "mix"), download=requests_download)
    assert uris == [str(tmp_path / "mix-1.png"), str(tmp_path / "mix-2.gif")]


def test_file_uri_destination(tmp_path: Path) -> None:
    uris = store_bytes(PNG, "image/png", f"file://{tmp_path}/f.png")
    assert uris == [f"file://{tmp_path}/f.png"]
    assert (tmp_path / "f.png").read_bytes() == PNG


def test_relative_path_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert store_bytes(PNG, "image/png", "rel/out.png") == [str(tmp_path / "rel" / "out.png")]


def test_existing_file_is_replaced_on_success(tmp_path: Path) -> None:
    target = tmp_path / "cat.png"
    target.write_bytes(b"old")
    store_bytes(PNG, "image/png", target)
    assert target.read_bytes() == PNG


# --- inline outputs ------------------------------------------------------------------------------


def test_data_uri(tmp_path: Path) -> None:
    uri = "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert store_output(uri, str(tmp_path / "d"), download=None) == [str(tmp_path / "d.png")]
    assert (tmp_path / "d.png").read_bytes() == PNG


def test_raw_base64_with_line_breaks_and_no_padding(tmp_path: Path) -> None:
    encoded = base64.b64encode(JPEG).decode().rstrip("=")
    wrapped = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    uris = store_output({"image": wrapped}, str(tmp_path / "b"), download=None, expected_format="jpg")
    assert Path(uris[0]).read_bytes() == JPEG


def test_urlsafe_base64(tmp_path: Path) -> None:
    data = PNG + b"\xfb\xff\xfe" * 10  # bytes that produce '-' and '_' in urlsafe base64
    encoded = base64.urlsafe_b64encode(data).decode()
    assert "-" in encoded or "_" in encoded
    uris = store_output(encoded, str(tmp_path / "u"), download=None)
    assert Path(uris[0]).read_bytes() == data


@pytest.mark.parametrize("text", ["a photo of a cat", "Zm9vYmFy"])
def test_text_that_is_no_media_is_refused(text: str, tmp_path: Path) -> None:
    with pytest.raises(SegmindOutputError):
        store_output(text, str(tmp_path / "t"), download=None)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("output", [None, [], {}, {"other": "x"}, 42, ""])
def test_no_output_is_an_error(output: Any, tmp_path: Path) -> None:
    with pytest.raises(SegmindOutputError):
        store_output(output, str(tmp_path / "n.png"), download=requests_download)


# --- refusals leave nothing behind ---------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["ftp://example.com/a.png", "file:///etc/passwd", "s3://bucket/key.png", "gopher://x/y"]
)
def test_non_http_urls_are_refused(url: str, tmp_path: Path) -> None:
    calls: list[str] = []

    def spy(u: str, f: IO[bytes]) -> str:
        calls.append(u)
        return ""

    with pytest.raises(SegmindOutputError, match="only http and https"):
        store_output(url, str(tmp_path / "x.png"), download=spy)
    assert calls == []
    assert list(tmp_path.iterdir()) == []


def test_magic_byte_mismatch_with_requested_format(httpserver: HTTPServer, tmp_path: Path) -> None:
    url = serve(httpserver, "/lie.png", JPEG, "image/png")
    with pytest.raises(SegmindOutputError, match="is a jpeg file, but png was requested"):
        store_output(url, str(tmp_path / "cat"), download=requests_download, expected_format="png")
    assert list(tmp_path.iterdir()) == []


def test_magic_byte_mismatch_with_path_extension(tmp_path: Path) -> None:
    with pytest.raises(SegmindOutputError, match=r"output_path ends in '\.png'"):
        store_bytes(WEBP, "image/webp", tmp_path / "cat.png")
    assert list(tmp_path.iterdir()) == []


def test_html_error_page_is_not_stored_as_an_image(httpserver: HTTPServer, tmp_path: Path) -> None:
    url = serve(httpserver, "/img", b"<html>Access denied</html>", "text/html")
    with pytest.raises(SegmindOutputError, match="in no recognised format, but webp was requested"):
        store_output(url, str(tmp_path / "x"), download=requests_download, expected_format="webp")


def test_existing_destination_untouched_when_download_fails(httpserver: HTTPServer, tmp_path: Path) -> None:
    httpserver.expect_request("/gone").respond_with_data("nope", status=404)
    target = tmp_path / "cat.png"
    target.write_bytes(b"precious")
    with pytest.raises(SegmindOutputError, match="404"):
        store_output(httpserver.url_for("/gone"), str(target), download=requests_download)
    assert target.read_bytes() == b"precious"
    assert leftovers(tmp_path) == []


def test_download_streams_beside_the_destination_not_into_it(tmp_path: Path) -> None:
    """While bytes arrive the old file is intact, and the partial file is a hidden temp in the same directory."""
    target = tmp_path / "cat.png"
    target.write_bytes(b"precious")
    seen: dict[str, Any] = {}

    def observe(url: str, fileobj: IO[bytes]) -> str:
        fileobj.write(PNG[:20])
        fileobj.flush()
        seen["during"] = target.read_bytes()
        seen["parts"] = leftovers(tmp_path)
        fileobj.write(PNG[20:])
        return "image/png"

    store_output("https://media.example/c.png", str(target), download=observe)
    assert seen["during"] == b"precious"
    assert len(seen["parts"]) == 1
    assert seen["parts"][0].startswith(".cat.")
    assert target.read_bytes() == PNG
    assert leftovers(tmp_path) == []


def test_existing_destination_untouched_on_mismatch(httpserver: HTTPServer, tmp_path: Path) -> None:
    url = serve(httpserver, "/j", JPEG, "image/jpeg")
    target = tmp_path / "cat.png"
    target.write_bytes(b"precious")
    with pytest.raises(SegmindOutputError):
        store_output(url, str(target), download=requests_download, expected_format="png")
    assert target.read_bytes() == b"precious"
    assert leftovers(tmp_path) == []


def test_one_bad_output_publishes_none(httpserver: HTTPServer, tmp_path: Path) -> None:
    urls = [serve(httpserver, "/ok", PNG), serve(httpserver, "/bad", JPEG, "image/jpeg")]
    with pytest.raises(SegmindOutputError):
        store_output(urls, str(tmp_path / "cat.png"), download=requests_download)
    assert list(tmp_path.iterdir()) == []


def test_size_cap(httpserver: HTTPServer, tmp_path: Path) -> None:
    big = PNG + b"\0" * 5000
    url = serve(httpserver, "/big.png", big)
    target = tmp_path / "big.png"
    target.write_bytes(b"old")
    with pytest.raises(SegmindOutputError, match="over the limit of 1000"):
        store_output(url, str(target), download=capped(1000))
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path) == []
    assert store_output(url, str(target), download=capped(len(big))) == [str(target)]


def test_size_cap_for_inline_outputs(tmp_path: Path) -> None:
    encoded = base64.b64encode(PNG).decode()
    with pytest.raises(SegmindOutputError, match="cap"):
        store_output(encoded, str(tmp_path / "x"), download=None, max_bytes=10)
    with pytest.raises(SegmindOutputError, match="cap"):
        store_bytes(PNG, "image/png", tmp_path / "y", max_bytes=10)
    assert list(tmp_path.iterdir()) == []
    assert store_output(encoded, str(tmp_path / "z"), download=None, max_bytes=len(PNG)) == [
        str(tmp_path / "z.png")
    ]


def test_long_file_names_keep_the_temporary_name_short(tmp_path: Path) -> None:
    name = "n" * 240
    assert store_bytes(PNG, "image/png", tmp_path / f"{name}.png") == [str(tmp_path / f"{name}.png")]


def test_connection_closed_mid_body_leaves_destination_untouched(tmp_path: Path) -> None:
    """A real server announces 100 bytes, sends 40 and hangs up, every time: nothing is published."""
    server = ScriptedServer([http_answer(PNG[:40], length=100)] * 6)
    target = tmp_path / "cut.png"
    target.write_bytes(b"precious")
    try:
        with pytest.raises(SegmindOutputError, match=r"download of .*cut.png failed"):
            store_output(server.url("/cut.png"), str(target), download=requests_download)
    finally:
        server.close()
    assert server.served == 6  # the first try and the hook's 5 retries
    assert target.read_bytes() == b"precious"
    assert leftovers(tmp_path) == []


def test_a_cut_download_is_retried_from_the_start(tmp_path: Path) -> None:
    server = ScriptedServer([http_answer(PNG[:30], length=len(PNG)), http_answer(PNG)])
    try:
        uris = store_output(server.url("/x.png"), str(tmp_path / "r"), download=requests_download)
    finally:
        server.close()
    assert server.served == 2
    assert Path(uris[0]).read_bytes() == PNG


def test_a_corrupted_image_is_downloaded_again_then_refused(tmp_path: Path) -> None:
    big = image_bytes("PNG", (64, 64))
    server = ScriptedServer([http_answer(corrupted(big))] * 2)
    target = tmp_path / "hero.png"
    target.write_bytes(b"precious")
    try:
        with pytest.raises(SegmindOutputError, match=r"broken png file .2 downloads., not stored"):
            store_output(
                server.url("/hero.png"), str(target), download=requests_download, expected_format="png"
            )
    finally:
        server.close()
    assert server.served == 2
    assert target.read_bytes() == b"precious"
    assert leftovers(tmp_path) == []


def test_a_corrupted_image_then_a_good_one_is_stored(tmp_path: Path) -> None:
    big = image_bytes("PNG", (64, 64))
    server = ScriptedServer([http_answer(corrupted(big)), http_answer(big)])
    try:
        uris = store_output(server.url("/hero.png"), str(tmp_path / "hero.png"), download=requests_download)
    finally:
        server.close()
    assert Path(uris[0]).read_bytes() == big


def test_an_inline_image_that_does_not_decode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SegmindOutputError, match="broken png file, not stored"):
        store_bytes(corrupted(image_bytes("PNG", (64, 64))), "image/png", tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_empty_download_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SegmindOutputError, match="is empty"):
        store_output("https://media.example/e", str(tmp_path / "e"), download=lambda u, f: "image/png")


def test_query_string_not_in_error_messages(tmp_path: Path) -> None:
    def boom(url: str, fileobj: IO[bytes]) -> str:
        raise ConnectionError("reset")

    with pytest.raises(SegmindOutputError) as info:
        store_output("https://media.example/a.png?X-Amz-Signature=SECRET", str(tmp_path / "a"), download=boom)
    assert "SECRET" not in str(info.value)
    assert "https://media.example/a.png" in str(info.value)


def test_directory_destination_refused(tmp_path: Path) -> None:
    with pytest.raises(SegmindOutputError, match="directory"):
        store_bytes(PNG, "image/png", tmp_path)
    with pytest.raises(SegmindOutputError, match="directory"):
        store_bytes(PNG, "image/png", f"{memory_root()}/dir/")


# --- object storage (memory://) -------------------------------------------------------------------


def test_memory_destination(httpserver: HTTPServer) -> None:
    from airflow.sdk import ObjectStoragePath

    root = memory_root()
    url = serve(httpserver, "/m.webp", WEBP, "image/webp")
    uris = store_output(url, f"{root}/runs/1/cat", download=requests_download, expected_format="webp")
    assert uris == [f"{root}/runs/1/cat.webp"]
    assert ObjectStoragePath(uris[0]).read_bytes() == WEBP
    fs = fsspec.filesystem("memory")
    assert not [p for p in fs.find(root.removeprefix("memory:/")) if p.endswith(".part")]


def test_memory_several_outputs_and_inline(tmp_path: Path) -> None:
    from airflow.sdk import ObjectStoragePath

    root = memory_root()
    output = [
        "data:image/png;base64," + base64.b64encode(PNG).decode(),
        base64.b64encode(PNG).decode(),
    ]
    uris = store_output(output, f"{root}/x.png", download=None, expected_format="png")
    assert uris == [f"{root}/x-1.png", f"{root}/x-2.png"]
    assert all(ObjectStoragePath(u).read_bytes() == PNG for u in uris)


def test_memory_existing_object_untouched_on_failure() -> None:
    from airflow.sdk import ObjectStoragePath

    root = memory_root()
    existing = ObjectStoragePath(f"{root}/keep.png")
    existing.write_bytes(b"precious")
    with pytest.raises(SegmindOutputError):
        store_bytes(JPEG, "image/jpeg", f"{root}/keep.png")
    assert existing.read_bytes() == b"precious"
    fs = fsspec.filesystem("memory")
    assert fs.find(root.removeprefix("memory:/")) == [f"/{root.removeprefix('memory://')}/keep.png"]


def test_output_conn_id_selects_the_attached_filesystem() -> None:
    """With output_conn_id the store comes from Airflow's attach(), i.e. that connection's filesystem."""
    from airflow.sdk import ObjectStoragePath
    from airflow.sdk.io.store import attach

    class Tracking(MemoryFileSystem):
        puts: list[str] = []  # noqa: RUF012

        def put_file(self, lpath: str, rpath: str, **kwargs: Any) -> None:
            type(self).puts.append(rpath)
            super().put_file(lpath, rpath, **kwargs)

    attach("memory", conn_id="segmind_test_mem", fs=Tracking(skip_instance_cache=True))
    root = memory_root()
    uris = store_bytes(PNG, "image/png", f"{root}/c", output_conn_id="segmind_test_mem")
    assert uris == [f"{root}/c.png"]
    assert len(Tracking.puts) == 1
    assert ObjectStoragePath(uris[0], conn_id="segmind_test_mem").read_bytes() == PNG


def test_store_without_move_writes_directly() -> None:
    from airflow.sdk import ObjectStoragePath
    from airflow.sdk.io.store import attach

    class NoMove(MemoryFileSystem):
        def mv(self, *args: Any, **kwargs: Any) -> None:
            raise NotImplementedError

    attach("memory", conn_id="segmind_test_nomove", fs=NoMove(skip_instance_cache=True))
    root = memory_root()
    uris = store_bytes(GIF, "image/gif", f"{root}/g", output_conn_id="segmind_test_nomove")
    assert uris == [f"{root}/g.gif"]
    assert ObjectStoragePath(uris[0]).read_bytes() == GIF
    fs = fsspec.filesystem("memory")
    assert not [p for p in fs.find(root.removeprefix("memory:/")) if p.endswith(".part")]


@pytest.mark.parametrize(
    ("path", "expected", "refused"),
    [
        ("/tmp/out/img.jpg", "png", True),
        ("s3://bucket/dir/img.PNG", "webp", True),
        ("/tmp/out/img.jpeg", "jpg", False),
        ("memory://b/img.png", "png", False),
        ("/tmp/out/img", "png", False),  # no extension: the right one is appended
        ("/tmp/out/img.v2", "png", False),  # not a media extension
        ("/tmp/out/img.jpg", None, False),  # the model does not say
    ],
)
def test_check_path_format_refuses_a_contradicting_extension_up_front(
    path: str, expected: str | None, refused: bool
) -> None:
    if refused:
        with pytest.raises(SegmindValidationError, match="drop it"):
            check_path_format(path, expected)
    else:
        check_path_format(path, expected)
