"""Is a media file whole? Each format checked by its own structure, read as a stream in bounded memory.

What each format carries decides what can be caught:

* PNG: every chunk's CRC, the zlib stream inflated to its end (its Adler-32 checked) and to exactly
  the size the header promises, every row's filter byte; never a bitmap, so a 16384x16384 upscale
  costs a few hundred kilobytes of memory;
* JPEG: the marker structure through the last scan to EOI (a byte in the scan that no encoder
  writes is caught), then a decode, at a reduced scale for a large image (JPEG can decode at 1/8);
* WebP: the RIFF size against the file, every chunk inside it, then a decode when small enough;
* GIF: every block and sub-block through the trailer, then a decode when small enough;
* MP4 / MOV: every box's size inside the file, ``ftyp`` first, ``moov`` present;
* WebM: the EBML header and the top-level elements' sizes inside the file.

Lossy payloads (JPEG scans, VP8, H.264) have no checksum: bytes flipped inside one are caught only
when they break the structure or the decoder.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

__all__ = ["DECODE_PIXELS", "MAX_IMAGE_PIXELS", "problem"]

MAX_IMAGE_PIXELS = 1 << 30
"""Largest image accepted (32768x32768): four times the largest upscaler output (16384x16384)."""
DECODE_PIXELS = 4096 * 4096
"""Largest bitmap a check decodes (64 MiB as RGBA); a larger JPEG decodes at a reduced scale."""
READ = 64 * 1024
INFLATE = 256 * 1024


class Broken(Exception):
    """What is wrong with the file, in words."""


class _Stream:
    """A file read forward in pieces, knowing its position and its size."""

    def __init__(self, fileobj: IO[bytes], size: int) -> None:
        self.file = fileobj
        self.size = size
        self.pos = 0

    def read(self, n: int, what: str) -> bytes:
        data = self.file.read(n)
        self.pos += len(data)
        if len(data) < n:
            raise Broken(f"the file ends inside {what} (at byte {self.pos} of {self.size}): truncated")
        return data

    def iter(self, n: int, what: str) -> Iterator[bytes]:
        """The next ``n`` bytes in pieces of at most READ bytes; truncation raises before any is read."""
        if self.pos + n > self.size:
            raise Broken(
                f"{what} at byte {self.pos} runs {self.pos + n - self.size} bytes past the end: truncated"
            )
        while n > 0:
            piece = self.read(min(n, READ), what)
            n -= len(piece)
            yield piece

    def seek(self, pos: int) -> None:
        self.file.seek(pos)
        self.pos = pos

    def skip(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise Broken(f"{what} at byte {self.pos} runs past the end of the file: truncated")
        self.file.seek(n, io.SEEK_CUR)
        self.pos += n

    @property
    def left(self) -> int:
        return self.size - self.pos


# ---------------------------------------------------------------- PNG

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _png_rows(width: int, height: int, bits: int, interlaced: bool) -> list[tuple[int, int]]:
    """(rows, bytes per row including its filter byte) of each pass of the image data."""
    if not interlaced:
        return [(height, 1 + (width * bits + 7) // 8)]
    passes = []
    for x0, y0, dx, dy in _ADAM7:
        w, h = (width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy
        if w > 0 and h > 0:
            passes.append((h, 1 + (w * bits + 7) // 8))
    return passes


class _Rows:
    """Follows the inflated image data row by row: each row's filter byte must be 0-4."""

    def __init__(self, passes: list[tuple[int, int]]) -> None:
        self.passes = passes
        self.index = 0
        self.offset = 0  # bytes into the current pass
        self.total = sum(rows * stride for rows, stride in passes)
        self.seen = 0

    def feed(self, data: bytes) -> None:
        self.seen += len(data)
        if self.seen > self.total:
            raise Broken(f"the image data inflates to more than the {self.total} bytes its header gives")
        view = memoryview(data)
        while view:
            rows, stride = self.passes[self.index]
            take = min(len(view), rows * stride - self.offset)
            filters = view[(-self.offset) % stride : take : stride]
            if filters and max(filters) > 4:
                raise Broken(f"a row of the image data has filter type {max(filters)} (0-4 exist)")
            self.offset += take
            view = view[take:]
            if self.offset == rows * stride:
                self.index += 1
                self.offset = 0


def _png(stream: _Stream) -> None:
    if stream.read(8, "the signature") != _PNG_SIGNATURE:
        raise Broken("no PNG signature")
    rows: _Rows | None = None
    inflater = zlib.decompressobj()
    seen_idat = ended_idat = False
    first = True
    while True:
        start = stream.pos
        length, kind = struct.unpack(">I4s", stream.read(8, "a chunk header"))
        name = kind.decode("latin-1")
        if length > 0x7FFFFFFF or not kind.isalpha():
            raise Broken(f"a malformed chunk header at byte {start} ({name!r}, {length} bytes)")
        if first and kind != b"IHDR":
            raise Broken(f"the first chunk is {name!r}, not IHDR")
        first = False
        crc = zlib.crc32(kind)
        if kind == b"IDAT":
            if rows is None or ended_idat:
                raise Broken(f"an IDAT chunk at byte {start} out of place")
            seen_idat = True
            for piece in stream.iter(length, "an IDAT chunk"):
                crc = zlib.crc32(piece, crc)
                _inflate(inflater, piece, rows)
        else:
            if seen_idat:
                ended_idat = True
            for piece in stream.iter(length, f"the {name} chunk"):
                crc = zlib.crc32(piece, crc)
                if kind == b"IHDR":
                    rows = _png_header(piece)
        stored = struct.unpack(">I", stream.read(4, f"the CRC of the {name} chunk"))[0]
        if stored != crc:
            raise Broken(
                f"the {name} chunk at byte {start} fails its CRC (stored {stored:08x}, computed {crc:08x})"
            )
        if kind == b"IEND":
            break
    if rows is None or not seen_idat:
        raise Broken("no image data (IDAT)")
    if not inflater.eof:
        raise Broken("the image data's zlib stream does not end (its checksum was never reached)")
    if rows.seen != rows.total:
        raise Broken(f"the image data inflates to {rows.seen} bytes; its header gives {rows.total}")


def _png_header(data: bytes) -> _Rows:
    if len(data) != 13:
        raise Broken(f"IHDR is {len(data)} bytes, not 13")
    width, height, depth, colour, method, filtering, interlace = struct.unpack(">IIBBBBB", data)
    if width == 0 or height == 0 or depth not in _DEPTHS.get(colour, ()) or method or filtering:
        raise Broken(f"an invalid IHDR ({width}x{height}, depth {depth}, colour type {colour})")
    if interlace not in (0, 1):
        raise Broken(f"an unknown interlace method {interlace}")
    _check_pixels(width, height)
    return _Rows(_png_rows(width, height, depth * _CHANNELS[colour], interlace == 1))


def _inflate(inflater: zlib._Decompress, data: bytes, rows: _Rows) -> None:
    """Inflate ``data`` in pieces of at most INFLATE bytes: the output is never held whole."""
    try:
        while data:
            if inflater.eof:
                raise Broken("bytes follow the end of the image data's zlib stream")
            rows.feed(inflater.decompress(data, INFLATE))
            data = inflater.unconsumed_tail
    except zlib.error as exc:
        raise Broken(f"the image data does not inflate: {exc}") from None


def _check_pixels(width: int, height: int) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise Broken(f"{width}x{height} is over the {MAX_IMAGE_PIXELS} pixels any model returns")


# ---------------------------------------------------------------- JPEG

_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


def _jpeg(stream: _Stream) -> tuple[int, int]:
    if stream.read(2, "the SOI marker") != b"\xff\xd8":
        raise Broken("no JPEG start-of-image marker")
    size: tuple[int, int] | None = None
    scans = 0
    marker = _next_marker(stream)
    while True:
        if marker == 0xD9:
            break
        if marker in _STANDALONE:
            marker = _next_marker(stream)
            continue
        if marker == 0xD8 or marker < 0xC0:
            raise Broken(f"an invalid marker 0xFF{marker:02X} at byte {stream.pos - 2}")
        (length,) = struct.unpack(">H", stream.read(2, "a segment length"))
        if length < 2:
            raise Broken(f"a segment of length {length} at byte {stream.pos - 4}")
        body = b"".join(stream.iter(length - 2, f"the 0xFF{marker:02X} segment"))
        if marker in _SOF:
            if len(body) < 6:
                raise Broken("a short frame header")
            height, width = struct.unpack(">HH", body[1:5])
            if width == 0 or height == 0:
                raise Broken(f"an invalid frame size {width}x{height}")
            _check_pixels(width, height)
            size = (width, height)
        if marker == 0xDA:
            if size is None:
                raise Broken("a scan before any frame header")
            scans += 1
            marker = _scan(stream)
        else:
            marker = _next_marker(stream)
    if size is None or not scans:
        raise Broken("no frame or no scan before the end-of-image marker")
    return size


def _next_marker(stream: _Stream) -> int:
    """The next marker outside a scan: 0xFF (fill bytes allowed) and its code."""
    if stream.read(1, "a marker") != b"\xff":
        raise Broken(f"no marker where one must be (byte {stream.pos - 1})")
    while True:
        code = stream.read(1, "a marker")[0]
        if code != 0xFF:
            return code


def _scan(stream: _Stream) -> int:
    """Walk entropy-coded data to the marker that ends it; RSTn markers must count 0-7 in turn."""
    expected_rst = 0
    while True:
        if not stream.left:
            raise Broken("the file ends inside a scan: truncated (no end-of-image marker)")
        base = stream.pos
        chunk = stream.file.read(min(READ, stream.left))
        at = 0
        while (index := chunk.find(b"\xff", at)) >= 0:
            follow = index + 1
            while follow < len(chunk) and chunk[follow] == 0xFF:  # fill bytes
                follow += 1
            if follow == len(chunk):
                break
            code, at = chunk[follow], follow + 1
            if code == 0x00:  # a stuffed 0xFF
                continue
            if 0xD0 <= code <= 0xD7:
                if code - 0xD0 != expected_rst:
                    raise Broken(f"restart marker RST{code - 0xD0} out of order at byte {base + follow}")
                expected_rst = (expected_rst + 1) % 8
                continue
            if code < 0xC0 or code == 0xD8:
                raise Broken(
                    f"the pair 0xFF{code:02X} at byte {base + follow}, inside a scan, is one no encoder writes"
                )
            stream.seek(base + at)
            return code
        end = len(chunk)
        if chunk.endswith(b"\xff"):  # read the 0xFF again with what follows it
            if base + end >= stream.size:
                raise Broken("the file ends inside a scan: truncated (no end-of-image marker)")
            end -= 1
        stream.seek(base + end)


# ---------------------------------------------------------------- WebP, GIF

_WEBP_FIRST = (b"VP8 ", b"VP8L", b"VP8X")


def _webp(stream: _Stream) -> tuple[int, int] | None:
    riff, declared, webp = struct.unpack("<4sI4s", stream.read(12, "the RIFF header"))
    if riff != b"RIFF" or webp != b"WEBP":
        raise Broken("no RIFF/WEBP header")
    if declared + 8 != stream.size:
        raise Broken(
            f"the RIFF header gives {declared + 8} bytes; the file has {stream.size}: truncated or padded"
        )
    size: tuple[int, int] | None = None
    first = True
    while stream.left:
        kind, length = struct.unpack("<4sI", stream.read(8, "a chunk header"))
        if first and kind not in _WEBP_FIRST:
            raise Broken(f"the first chunk is {kind!r}, not VP8/VP8L/VP8X")
        first = False
        head = stream.read(min(length, 10), f"the {kind!r} chunk")
        stream.skip(length - len(head) + (length & 1), f"the {kind!r} chunk")
        if kind == b"VP8X" and len(head) >= 10:
            size = (1 + int.from_bytes(head[4:7], "little"), 1 + int.from_bytes(head[7:10], "little"))
        elif kind == b"VP8L" and size is None and len(head) >= 5:
            if head[0] != 0x2F:
                raise Broken("a VP8L chunk without its signature")
            bits = int.from_bytes(head[1:5], "little")
            size = (1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF))
        elif kind == b"VP8 " and size is None and len(head) >= 10:
            if head[3:6] != b"\x9d\x01\x2a":
                raise Broken("a VP8 chunk without its start code")
            size = (
                int.from_bytes(head[6:8], "little") & 0x3FFF,
                int.from_bytes(head[8:10], "little") & 0x3FFF,
            )
    if first:
        raise Broken("no image chunk")
    return size


def _gif(stream: _Stream) -> tuple[int, int]:
    header = stream.read(13, "the header")
    width, height, flags = struct.unpack("<HHB", header[6:11])
    if flags & 0x80:
        stream.skip(3 << ((flags & 7) + 1), "the global colour table")
    frames = 0
    while True:
        block = stream.read(1, "a block")[0]
        if block == 0x3B:
            break
        if block == 0x21:
            stream.read(1, "an extension label")
        elif block == 0x2C:
            flags = stream.read(9, "an image descriptor")[8]
            if flags & 0x80:
                stream.skip(3 << ((flags & 7) + 1), "a local colour table")
            stream.read(1, "the LZW code size")
            frames += 1
        else:
            raise Broken(f"an unknown block 0x{block:02X} at byte {stream.pos - 1}")
        while True:
            n = stream.read(1, "a sub-block")[0]
            if n == 0:
                break
            stream.skip(n, "a sub-block")
    if not frames:
        raise Broken("no image in the GIF")
    _check_pixels(width, height)
    return width, height


# ---------------------------------------------------------------- video


def _mp4(stream: _Stream) -> None:
    seen: list[bytes] = []
    while stream.left:
        start = stream.pos
        size, kind = struct.unpack(">I4s", stream.read(8, "a box header"))
        if size == 1:
            (size,) = struct.unpack(">Q", stream.read(8, "a box's 64-bit size"))
        elif size == 0:
            size = stream.size - start
        header = stream.pos - start
        if size < header or not all(32 <= b < 127 for b in kind):
            raise Broken(f"a malformed box header at byte {start}")
        stream.skip(size - header, f"the {kind.decode('latin-1')!r} box")
        seen.append(kind)
    if not seen or seen[0] != b"ftyp":
        raise Broken("the first box is not 'ftyp'")
    if b"moov" not in seen:
        raise Broken("no 'moov' box (the index of the media): truncated or unfinished")


def _ebml_number(stream: _Stream, what: str, *, size: bool) -> int:
    first = stream.read(1, what)[0]
    if first == 0:
        raise Broken(f"an invalid EBML {what} at byte {stream.pos - 1}")
    width = 8 - first.bit_length() + 1
    rest = stream.read(width - 1, what)
    value = int.from_bytes(bytes([first & (0xFF >> width) if size else first]) + rest, "big")
    if size and value == (1 << (7 * width)) - 1:
        return -1  # unknown size: runs to the end
    return value


def _webm(stream: _Stream) -> None:
    ids = []
    while stream.left:
        element = _ebml_number(stream, "element id", size=False)
        length = _ebml_number(stream, "element size", size=True)
        stream.skip(stream.left if length < 0 else length, f"element 0x{element:X}")
        ids.append(element)
    if not ids or ids[0] != 0x1A45DFA3 or 0x18538067 not in ids:
        raise Broken("no EBML header followed by a Segment")


# ---------------------------------------------------------------- audio


def _crc_table(width: int, poly: int) -> tuple[int, ...]:
    top, mask, table = 1 << (width - 1), (1 << width) - 1, []
    for byte in range(256):
        crc = byte << (width - 8)
        for _ in range(8):
            crc = ((crc << 1) ^ poly) & mask if crc & top else (crc << 1) & mask
        table.append(crc)
    return tuple(table)


_CRC8, _CRC16, _OGG_CRC = _crc_table(8, 0x07), _crc_table(16, 0x8005), _crc_table(32, 0x04C11DB7)


# Bitrates (kbit/s) by (MPEG-1?, layer) and index; sample rates by version and index.
_MP3_BITRATES = {
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
_MP3_TAILS = (b"TAG", b"APETAGEX", b"LYRICS")


def _mp3(stream: _Stream) -> None:
    """ID3v2 tag, then MPEG audio frames back to back to the end (an ID3v1/APE tag may close it)."""
    head = stream.read(10, "the first frame")
    if head[:3] == b"ID3":
        size = int.from_bytes(bytes(b & 0x7F for b in head[6:10]), "big") + (10 if head[5] & 0x10 else 0)
        stream.skip(size, "the ID3v2 tag")
        header = stream.read(4, "the first frame")
    else:
        header = head[:4]
        stream.seek(4)
    frames = 0
    while True:
        start = stream.pos - 4
        if header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
            if frames and any(header.startswith(t[:4]) for t in _MP3_TAILS):
                return
            raise Broken(f"no MPEG audio frame where one must be (byte {start})")
        version, layer_bits = (header[1] >> 3) & 3, (header[1] >> 1) & 3
        rate_index, bitrate_index = (header[2] >> 2) & 3, header[2] >> 4
        if version == 1 or layer_bits == 0 or rate_index == 3 or bitrate_index in (0, 15):
            raise Broken(f"an invalid MPEG audio frame header at byte {start}")
        layer, mpeg1 = 4 - layer_bits, version == 3
        bitrate = _MP3_BITRATES[(mpeg1, layer)][bitrate_index] * 1000
        rate, padding = _MP3_RATES[version][rate_index], (header[2] >> 1) & 1
        if layer == 1:
            length = (12 * bitrate // rate + padding) * 4
        else:
            length = (144 if mpeg1 or layer == 2 else 72) * bitrate // rate + padding
        stream.skip(length - 4, f"MPEG audio frame {frames + 1}")
        frames += 1
        if stream.left < 4:
            if stream.left:
                raise Broken(f"{stream.left} stray bytes after the last MPEG audio frame: truncated")
            return
        header = stream.read(4, "a frame header")


_UNKNOWN_LENGTHS = (0, 0xFFFFFFFF)
"""What a streamed WAV writes for a length it did not know yet: runs to the end of the file."""


def _riff_wave(stream: _Stream) -> None:
    riff, declared, wave = struct.unpack("<4sI4s", stream.read(12, "the RIFF header"))
    if riff != b"RIFF" or wave != b"WAVE":
        raise Broken("no RIFF/WAVE header")
    end = stream.size if declared in _UNKNOWN_LENGTHS else declared + 8
    if end > stream.size:
        raise Broken(f"the RIFF header gives {end} bytes; the file has {stream.size}: truncated")
    seen = set()
    while stream.pos < end:
        kind, length = struct.unpack("<4sI", stream.read(8, "a chunk header"))
        if kind == b"data" and b"fmt " not in seen:
            raise Broken("audio data before its format chunk")
        if kind == b"data" and length in _UNKNOWN_LENGTHS:
            length = stream.left
        stream.skip(min(length + (length & 1), max(length, stream.left)), f"the {kind!r} chunk")
        seen.add(kind)
    if b"data" not in seen:
        raise Broken("no audio data chunk")


def _ogg_crc(data: bytes) -> int:
    crc, table = 0, _OGG_CRC
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[(crc >> 24) ^ byte]
    return crc


def _ogg(stream: _Stream) -> None:
    """Ogg pages back to back, each with its CRC, the last one marked end-of-stream."""
    last_flags = 0
    pages = 0
    while stream.left:
        start = stream.pos
        header = stream.read(27, "a page header")
        if header[:4] != b"OggS" or header[4] != 0:
            raise Broken(f"no Ogg page where one must be (byte {start})")
        table = stream.read(header[26], "a page's segment table")
        body = b"".join(stream.iter(sum(table), "a page"))
        stored = int.from_bytes(header[22:26], "little")
        if _ogg_crc(header[:22] + b"\0\0\0\0" + header[26:] + table + body) != stored:
            raise Broken(f"the Ogg page at byte {start} fails its CRC")
        last_flags = header[5]
        pages += 1
    if not pages or not last_flags & 4:
        raise Broken("the last Ogg page does not end the stream: truncated")


def _crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = _CRC8[crc ^ byte]
    return crc


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[(crc >> 8) ^ byte]
    return crc


FLAC_TAIL = 1 << 18
"""The last frame is looked for in the file's last 256 KiB (a frame of 4096 stereo samples is ~16 KiB)."""


def _flac(stream: _Stream) -> None:
    """Metadata blocks (STREAMINFO first), a valid frame header after them, the last frame's CRC-16."""
    if stream.read(4, "the signature") != b"fLaC":
        raise Broken("no fLaC signature")
    first = True
    while True:
        flags, length = struct.unpack(">B3s", stream.read(4, "a metadata block header"))
        if first and flags & 0x7F != 0:
            raise Broken("the first metadata block is not STREAMINFO")
        first = False
        stream.skip(int.from_bytes(length, "big"), "a metadata block")
        if flags & 0x80:
            break
    audio = stream.pos
    if _flac_header_length(stream.read(min(16, stream.left), "the first frame")) is None:
        raise Broken(f"no valid FLAC frame after the metadata (byte {audio})")
    stream.seek(max(audio, stream.size - FLAC_TAIL))
    tail = stream.read(stream.left, "the last frames")
    end = len(tail)
    while (at := max(tail.rfind(b"\xff\xf8", 0, end), tail.rfind(b"\xff\xf9", 0, end))) >= 0:
        frame = tail[at:]
        # A sync code inside the last frame's data can pass the header CRC-8 (1 in 256): try on.
        if _flac_header_length(frame) is not None and _crc16(frame[:-2]) == int.from_bytes(frame[-2:], "big"):
            return
        end = at + 1
    raise Broken("no whole FLAC frame ends the file (the last frame fails its CRC-16): truncated or damaged")


def _flac_header_length(frame: bytes) -> int | None:
    """The length of the frame header ``frame`` starts with, when it is one (its CRC-8 matches)."""
    if len(frame) < 6 or frame[0] != 0xFF or frame[1] not in (0xF8, 0xF9):
        return None
    size_code, rate_code = frame[2] >> 4, frame[2] & 0x0F
    lead = frame[4]
    extra = 0 if lead < 0x80 else 8 - (~lead & 0xFF).bit_length() - 1
    length = 5 + extra
    length += {6: 1, 7: 2}.get(size_code, 0) + {12: 1, 13: 2, 14: 2}.get(rate_code, 0)
    if size_code == 0 or rate_code == 15 or extra < 0 or len(frame) <= length:
        return None
    return length if _crc8(frame[:length]) == frame[length] else None


# ---------------------------------------------------------------- 3D


def _glb(stream: _Stream) -> None:
    """Binary glTF: its header's length is the file's, a JSON chunk that parses, then chunks to the end."""
    import json

    magic, version, length = struct.unpack("<4sII", stream.read(12, "the header"))
    if magic != b"glTF" or version != 2:
        raise Broken(f"not a glTF 2 binary (magic {magic!r}, version {version})")
    if length != stream.size:
        raise Broken(f"the header gives {length} bytes; the file has {stream.size}: truncated or padded")
    chunk_length, chunk_type = struct.unpack("<II", stream.read(8, "the JSON chunk header"))
    if chunk_type != 0x4E4F534A:
        raise Broken("the first chunk is not JSON")
    try:
        document = json.loads(b"".join(stream.iter(chunk_length, "the JSON chunk")))
    except ValueError as exc:
        raise Broken(f"the JSON chunk does not parse: {exc}") from None
    if not isinstance(document, dict) or "asset" not in document:
        raise Broken("the JSON chunk has no 'asset'")
    while stream.left:
        chunk_length, _ = struct.unpack("<II", stream.read(8, "a chunk header"))
        stream.skip(chunk_length, "a chunk")


# ---------------------------------------------------------------- entry point


def _decode(path: Path | bytes, kind: str, size: tuple[int, int] | None) -> None:
    """Decode with Pillow when the bitmap is small enough (a large JPEG at a reduced scale)."""
    from PIL import GifImagePlugin, ImageFile, JpegImagePlugin, WebPImagePlugin

    if size is None:
        return
    pixels = size[0] * size[1]
    opener: Callable[..., ImageFile.ImageFile] = {
        "jpeg": JpegImagePlugin.JpegImageFile,
        "webp": WebPImagePlugin.WebPImageFile,
        "gif": GifImagePlugin.GifImageFile,
    }[kind]
    scale = 1
    while kind == "jpeg" and pixels // (scale * scale) > DECODE_PIXELS and scale < 8:
        scale *= 2
    if pixels // (scale * scale) > DECODE_PIXELS:
        return
    # The plugin classes directly: Image.open's decompression-bomb guard counts the full size
    # even when the decode is scaled, and the limit here is our own.
    source = io.BytesIO(path) if isinstance(path, bytes) else str(path)
    with opener(source) as image:
        if scale > 1:
            image.draft(image.mode, ((size[0] + scale - 1) // scale, (size[1] + scale - 1) // scale))
        try:
            image.load()
        except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError... for broken data
            raise Broken(f"it does not decode: {type(exc).__name__}: {exc}") from None


_CHECKS: dict[str, Callable[[_Stream], object]] = {
    "png": _png,
    "jpeg": _jpeg,
    "webp": _webp,
    "gif": _gif,
    "mp4": _mp4,
    "webm": _webm,
    "mp3": _mp3,
    "wav": _riff_wave,
    "ogg": _ogg,
    "flac": _flac,
    "glb": _glb,
}


def problem(source: Path | bytes, kind: str | None) -> str | None:
    """Why the file (a path, or its bytes) of ``kind`` is not whole, or None when it is (or is not checked)."""
    check = _CHECKS.get(kind or "")
    if check is None:
        return None
    opened: IO[bytes] = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
    try:
        with opened:
            opened.seek(0, io.SEEK_END)
            stream = _Stream(opened, opened.tell())
            opened.seek(0)
            size = check(stream)
        if kind in ("jpeg", "webp", "gif"):
            _decode(source, kind, size if isinstance(size, tuple) else None)
    except Broken as exc:
        return str(exc)
    except (struct.error, ValueError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None
