"""Turn one generated image into the usual social formats with Pillow.

Every format is built from the same source so a product's assets stay consistent: a square post
(cover crop), a 9:16 story (the whole image over a blurred fill of itself, with a caption band), a
1.91:1 link card (cover crop with a caption over a gradient) and a small thumbnail for the gallery.
All carry the brand as a watermark.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

from segmind_provider import media


@dataclass(frozen=True)
class Format:
    """A named output size; ``kind`` picks the layout."""

    name: str
    width: int
    height: int
    kind: str


SQUARE = Format("square", 1080, 1080, "cover")
STORY = Format("story", 1080, 1920, "story")
LINK_CARD = Format("link_card", 1200, 628, "card")
THUMBNAIL = Format("thumbnail", 360, 360, "cover")
FORMATS: tuple[Format, ...] = (SQUARE, STORY, LINK_CARD, THUMBNAIL)

JPEG_QUALITY = 88
_WHITE = (255, 255, 255)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled scalable font: no system font needed, same look everywhere."""
    return ImageFont.load_default(size=size)


def _fit_text(draw: ImageDraw.ImageDraw, text: str, max_width: int, size: int) -> ImageFont.ImageFont:
    """Shrink the font until the text fits on one line, so long product names never overflow."""
    while size > 12:
        font = _font(size)
        left, _, right, _ = draw.textbbox((0, 0), text, font=font)
        if right - left <= max_width:
            return font  # type: ignore[return-value]
        size -= 2
    return _font(size)  # type: ignore[return-value]


def _watermark(image: Image.Image, brand: str) -> None:
    if not brand:
        return
    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    font = _font(max(14, image.width // 40))
    left, top, right, bottom = draw.textbbox((0, 0), brand, font=font)
    margin = max(8, image.width // 60)
    x = image.width - (right - left) - margin
    y = margin
    draw.rectangle(
        (x - margin // 2, y - margin // 3, x + (right - left) + margin // 2, y + (bottom - top) + margin),
        fill=(0, 0, 0, 90),
    )
    draw.text((x - left, y - top + margin // 3), brand, font=font, fill=(255, 255, 255, 220))
    image.paste(overlay, (0, 0), overlay)


def _caption(image: Image.Image, title: str, subtitle: str, band_top: int) -> None:
    """Darken the area below ``band_top`` with a gradient and write the title and subtitle on it."""
    width, height = image.size
    band = max(1, height - band_top)
    gradient = Image.new("L", (1, band))
    for row in range(band):
        gradient.putpixel((0, row), int(215 * min(1.0, 1.6 * row / band) ** 1.5))
    shade = Image.new("RGB", (width, band), (0, 0, 0))
    image.paste(shade, (0, band_top), gradient.resize((width, band)))
    draw = ImageDraw.Draw(image)
    margin = width // 20
    title_font = _fit_text(draw, title, width - 2 * margin, max(24, width // 16))
    sub_font = _fit_text(draw, subtitle, width - 2 * margin, max(16, width // 30))
    _, t_top, _, t_bottom = draw.textbbox((0, 0), title, font=title_font)
    _, s_top, _, s_bottom = draw.textbbox((0, 0), subtitle, font=sub_font) if subtitle else (0, 0, 0, 0)
    gap = margin // 3
    y = height - margin - (s_bottom - s_top) - (gap if subtitle else 0) - (t_bottom - t_top)
    draw.text((margin, y - t_top), title, font=title_font, fill=_WHITE)
    if subtitle:
        draw.text((margin, y + (t_bottom - t_top) + gap - s_top), subtitle, font=sub_font, fill=_WHITE)


def render_format(source: Image.Image, fmt: Format, *, title: str, subtitle: str, brand: str) -> Image.Image:
    """Build one format from the source image; the result is always exactly ``fmt``'s size."""
    size = (fmt.width, fmt.height)
    if fmt.kind == "story":
        canvas = ImageOps.fit(source, size, Image.Resampling.LANCZOS).filter(ImageFilter.GaussianBlur(40))
        canvas = Image.blend(canvas, Image.new("RGB", size, (0, 0, 0)), 0.35)
        inner = ImageOps.contain(source, (fmt.width, int(fmt.height * 0.72)), Image.Resampling.LANCZOS)
        canvas.paste(inner, ((fmt.width - inner.width) // 2, (int(fmt.height * 0.78) - inner.height) // 2))
        _caption(canvas, title, subtitle, band_top=int(fmt.height * 0.78))
    elif fmt.kind == "card":
        canvas = ImageOps.fit(source, size, Image.Resampling.LANCZOS)
        _caption(canvas, title, subtitle, band_top=int(fmt.height * 0.45))
    else:
        canvas = ImageOps.fit(source, size, Image.Resampling.LANCZOS)
    if fmt is not THUMBNAIL:
        _watermark(canvas, brand)
    return canvas


def make_formats(image_bytes: bytes, *, title: str, subtitle: str = "", brand: str = "") -> dict[str, bytes]:
    """All formats of one image as JPEG bytes, keyed by format name.

    Raises ``ValueError`` when the bytes are not an image Pillow can read, so a corrupt download is
    reported for that product instead of crashing the run.
    """
    source = media.open_image(image_bytes).convert("RGB")
    result: dict[str, bytes] = {}
    for fmt in FORMATS:
        image = render_format(source, fmt, title=title, subtitle=subtitle, brand=brand)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True, progressive=True)
        result[fmt.name] = buffer.getvalue()
    return result


# ------------------------------------------------------------------ stage previews (gallery, review)

STAGE_SIDE = 240


def stage_preview(data: bytes, side: int = STAGE_SIDE) -> bytes:
    """A small JPEG of one stage's image (the whole image, fitted in ``side``), for the gallery."""
    return media.thumbnail(data, side)


def stage_strip(stages: list[tuple[str, bytes | None]], *, title: str, side: int = STAGE_SIDE) -> bytes:
    """One JPEG with every stage of a product side by side, labelled (a missing stage is a grey tile).

    What a reviewer looks at: the photo the brand gave, the cut-out, the scene, in one glance.
    """
    margin, band = side // 16, side // 5
    width = margin + len(stages) * (side + margin)
    sheet = Image.new("RGB", (width, band + side + band), (248, 247, 244))
    draw = ImageDraw.Draw(sheet)
    draw.text(
        (margin, band // 5),
        title,
        font=_fit_text(draw, title, width - 2 * margin, band * 3 // 5),
        fill=(30, 36, 33),
    )
    label_font = _font(max(12, band // 2))
    for index, (label, data) in enumerate(stages):
        x, y = margin + index * (side + margin), band
        tile = Image.new("RGB", (side, side), (222, 222, 218))
        if data is not None:
            image = media.preview_image(data, side)
            tile.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
        else:
            ImageDraw.Draw(tile).text(
                (side // 10, side // 2), "not generated", font=label_font, fill=(120, 60, 50)
            )
        sheet.paste(tile, (x, y))
        draw.text((x, y + side + band // 5), label, font=label_font, fill=(80, 90, 86))
    buffer = io.BytesIO()
    sheet.save(buffer, format="JPEG", quality=85, optimize=True)
    return buffer.getvalue()
