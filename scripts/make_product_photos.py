"""Render the content pipeline's product photos: studio-style shots drawn with Pillow.

The pipeline starts from photos a brand already owns; these stand in for them. Each is one product
on a seamless light backdrop with a soft floor shadow, lit from the upper left, drawn at twice the
size and scaled down for smooth edges. The output is deterministic for a given Pillow version.

    .venv/bin/python scripts/make_product_photos.py            # writes dags/data/products/*.jpg
    .venv/bin/python scripts/make_product_photos.py --out /tmp/photos --size 800
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "dags" / "data" / "products"
SCALE = 2  # drawn at twice the size, then downsampled: anti-aliased edges without extra work
JPEG_QUALITY = 86

Box = tuple[float, float, float, float]
Colour = tuple[int, int, int]


class Studio:
    """A canvas in unit coordinates (0..1 on both axes) with the studio's backdrop and light."""

    def __init__(self, size: int) -> None:
        self.side = size * SCALE
        top, bottom = (247, 246, 243), (226, 224, 219)
        column = Image.linear_gradient("L").resize((1, self.side))
        self.image = Image.composite(
            Image.new("RGB", (self.side, self.side), bottom),
            Image.new("RGB", (self.side, self.side), top),
            column.resize((self.side, self.side)),
        )

    def px(self, box: Box) -> tuple[int, int, int, int]:
        x0, y0, x1, y1 = box
        s = self.side
        return round(x0 * s), round(y0 * s), round(x1 * s), round(y1 * s)

    def shadow(self, box: Box, strength: int = 34) -> None:
        """A soft contact shadow on the floor (light enough for a background remover to drop)."""
        mask = Image.new("L", self.image.size, 0)
        ImageDraw.Draw(mask).ellipse(self.px(box), fill=strength)
        mask = mask.filter(ImageFilter.GaussianBlur(self.side // 40))
        self.image.paste((90, 88, 84), (0, 0), mask)

    def shape(
        self, draw: Callable[[ImageDraw.ImageDraw], None], colour: Colour, *, sheen: float = 0.35
    ) -> None:
        """Fill a shape (drawn in white on a mask) with ``colour``, lit from the upper left."""
        mask = Image.new("L", self.image.size, 0)
        draw(ImageDraw.Draw(mask))
        light = Image.linear_gradient("L").rotate(45, expand=False).resize(self.image.size)
        lit = Image.composite(
            Image.new("RGB", self.image.size, _shade(colour, 0.55)),
            Image.new("RGB", self.image.size, _shade(colour, 1.0 + sheen)),
            light,
        )
        self.image.paste(lit, (0, 0), mask)

    def flat(self, draw: Callable[[ImageDraw.ImageDraw], None], colour: Colour) -> None:
        mask = Image.new("L", self.image.size, 0)
        draw(ImageDraw.Draw(mask))
        self.image.paste(colour, (0, 0), mask)

    def highlight(self, box: Box, opacity: int = 90) -> None:
        """A blurred specular streak: what makes a drawn shape read as a lit object."""
        mask = Image.new("L", self.image.size, 0)
        ImageDraw.Draw(mask).rounded_rectangle(self.px(box), radius=self.side // 60, fill=opacity)
        self.image.paste((255, 255, 255), (0, 0), mask.filter(ImageFilter.GaussianBlur(self.side // 150)))

    def finish(self, size: int) -> Image.Image:
        return self.image.resize((size, size), Image.Resampling.LANCZOS)


def _shade(colour: Colour, factor: float) -> Colour:
    r, g, b = (max(0, min(255, round(c * factor))) for c in colour)
    return r, g, b


def bottle(s: Studio) -> None:
    s.shadow((0.3, 0.84, 0.7, 0.92))
    s.shape(
        lambda d: d.rounded_rectangle(s.px((0.36, 0.26, 0.64, 0.88)), radius=s.side // 14, fill=255),
        (28, 128, 124),
    )
    s.shape(
        lambda d: d.rounded_rectangle(s.px((0.41, 0.12, 0.59, 0.27)), radius=s.side // 40, fill=255),
        (52, 52, 56),
    )
    s.flat(lambda d: d.rectangle(s.px((0.36, 0.52, 0.64, 0.62)), fill=255), (54, 56, 60))
    s.flat(lambda d: d.rectangle(s.px((0.43, 0.555, 0.57, 0.585)), fill=255), (226, 170, 60))
    s.highlight((0.4, 0.3, 0.43, 0.84))


def mug(s: Studio) -> None:
    s.shadow((0.22, 0.74, 0.74, 0.84))
    s.shape(
        lambda d: d.ellipse(s.px((0.56, 0.38, 0.8, 0.66)), outline=255, width=s.side // 28), (52, 86, 140)
    )
    s.shape(
        lambda d: d.rounded_rectangle(s.px((0.26, 0.32, 0.64, 0.8)), radius=s.side // 30, fill=255),
        (52, 86, 140),
        sheen=0.5,
    )
    s.flat(lambda d: d.ellipse(s.px((0.26, 0.28, 0.64, 0.36)), fill=255), (220, 214, 196))
    s.flat(lambda d: d.ellipse(s.px((0.28, 0.29, 0.62, 0.35)), fill=255), (62, 44, 30))
    s.flat(
        lambda d: d.polygon(
            [
                s.px((0.38, 0.5, 0.45, 0.62))[:2],
                s.px((0.45, 0.62, 0.52, 0.5))[2:],
                s.px((0.45, 0.42, 0, 0))[:2],
            ],
            fill=255,
        ),
        (226, 170, 60),
    )
    s.highlight((0.3, 0.38, 0.33, 0.76), 70)


def daypack(s: Studio) -> None:
    s.shadow((0.22, 0.84, 0.78, 0.93))
    s.shape(
        lambda d: d.rounded_rectangle(s.px((0.26, 0.2, 0.74, 0.88)), radius=s.side // 8, fill=255),
        (196, 164, 116),
    )
    s.shape(
        lambda d: d.rounded_rectangle(s.px((0.33, 0.52, 0.67, 0.84)), radius=s.side // 16, fill=255),
        (170, 138, 94),
    )
    s.flat(
        lambda d: d.line(
            [s.px((0.35, 0.6, 0, 0))[:2], s.px((0.65, 0.6, 0, 0))[:2]], fill=255, width=s.side // 120
        ),
        (60, 56, 50),
    )
    s.flat(
        lambda d: d.arc(s.px((0.42, 0.1, 0.58, 0.28)), 180, 360, fill=255, width=s.side // 40), (60, 56, 50)
    )
    s.flat(lambda d: d.rectangle(s.px((0.47, 0.3, 0.53, 0.48)), fill=255), (60, 56, 50))
    s.highlight((0.3, 0.26, 0.33, 0.8), 60)


def headlamp(s: Studio) -> None:
    s.shadow((0.2, 0.74, 0.8, 0.84))
    s.shape(lambda d: d.ellipse(s.px((0.16, 0.3, 0.84, 0.78)), outline=255, width=s.side // 22), (40, 40, 46))
    s.shape(
        lambda d: d.rounded_rectangle(s.px((0.36, 0.5, 0.64, 0.76)), radius=s.side // 24, fill=255),
        (214, 86, 44),
    )
    s.flat(lambda d: d.ellipse(s.px((0.42, 0.55, 0.58, 0.71)), fill=255), (236, 200, 96))
    s.flat(lambda d: d.ellipse(s.px((0.46, 0.59, 0.54, 0.67)), fill=255), (252, 232, 150))
    s.highlight((0.39, 0.52, 0.41, 0.72), 80)


def lantern(s: Studio) -> None:
    s.shadow((0.28, 0.84, 0.72, 0.92))
    s.flat(
        lambda d: d.arc(s.px((0.38, 0.06, 0.62, 0.3)), 180, 360, fill=255, width=s.side // 60), (50, 50, 54)
    )
    s.shape(
        lambda d: d.rounded_rectangle(s.px((0.34, 0.16, 0.66, 0.26)), radius=s.side // 40, fill=255),
        (42, 92, 60),
    )
    s.shape(
        lambda d: d.rounded_rectangle(s.px((0.37, 0.26, 0.63, 0.74)), radius=s.side // 30, fill=255),
        (250, 214, 120),
        sheen=0.1,
    )
    s.flat(lambda d: d.ellipse(s.px((0.44, 0.38, 0.56, 0.6)), fill=255), (255, 246, 214))
    s.shape(
        lambda d: d.rounded_rectangle(s.px((0.32, 0.74, 0.68, 0.88)), radius=s.side // 40, fill=255),
        (42, 92, 60),
    )
    s.highlight((0.4, 0.3, 0.42, 0.7), 80)


def shoe(s: Studio) -> None:
    s.shadow((0.12, 0.72, 0.9, 0.82))
    sole = [(0.12, 0.7), (0.86, 0.7), (0.9, 0.64), (0.84, 0.6), (0.14, 0.62)]
    upper = [
        (0.14, 0.62),
        (0.16, 0.44),
        (0.3, 0.34),
        (0.42, 0.36),
        (0.52, 0.46),
        (0.72, 0.5),
        (0.86, 0.56),
        (0.84, 0.62),
    ]
    s.flat(lambda d: d.polygon([s.px((x, y, 0, 0))[:2] for x, y in sole], fill=255), (70, 68, 66))
    s.shape(lambda d: d.polygon([s.px((x, y, 0, 0))[:2] for x, y in upper], fill=255), (222, 96, 36))
    s.flat(
        lambda d: d.polygon(
            [s.px((x, y, 0, 0))[:2] for x, y in [(0.16, 0.44), (0.3, 0.34), (0.34, 0.42), (0.2, 0.5)]],
            fill=255,
        ),
        (60, 46, 40),
    )
    for i in range(4):
        x = 0.4 + i * 0.045
        s.flat(
            lambda d, x=x, i=i: d.line(
                [s.px((x, 0.4 + i * 0.02, 0, 0))[:2], s.px((x + 0.05, 0.45 + i * 0.02, 0, 0))[:2]],
                fill=255,
                width=s.side // 110,
            ),
            (250, 250, 250),
        )
    s.flat(
        lambda d: d.line(
            [s.px((0.14, 0.66, 0, 0))[:2], s.px((0.88, 0.66, 0, 0))[:2]], fill=255, width=s.side // 90
        ),
        (150, 200, 60),
    )


PRODUCTS: dict[str, Callable[[Studio], None]] = {
    "trail-runner-x2": shoe,
    "summit-bottle-750": bottle,
    "basecamp-enamel-mug": mug,
    "canyon-daypack-22": daypack,
    "aurora-headlamp": headlamp,
    "ember-camp-lantern": lantern,
}


def render(product: str, size: int) -> Image.Image:
    studio = Studio(size)
    PRODUCTS[product](studio)
    return studio.finish(size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--size", type=int, default=640)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for product in PRODUCTS:
        path = args.out / f"{product}.jpg"
        render(product, args.size).save(path, "JPEG", quality=JPEG_QUALITY, optimize=True, progressive=True)
        print(
            f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}  {path.stat().st_size // 1024} KiB"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
