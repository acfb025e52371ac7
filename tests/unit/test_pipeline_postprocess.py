"""The content pipeline's building blocks: catalog, prompts, Pillow formats, manifest and gallery.

Airflow puts the dags folder on ``sys.path`` when it parses DAGs; these tests do the same so they
import ``segmind_pipeline`` exactly the way the DAG file does.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image, ImageChops

DAGS = Path(__file__).resolve().parents[2] / "dags"
if str(DAGS) not in sys.path:
    sys.path.insert(0, str(DAGS))

from segmind_pipeline import catalog, imaging, publishing, settings  # noqa: E402

DAY = dt.date(2026, 11, 24)


def _png(width: int, height: int, colour: tuple[int, int, int] = (40, 120, 200)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, "PNG")
    return buffer.getvalue()


def _brightest(image: Image.Image) -> float:
    low_high = image.convert("L").getextrema()
    return float(low_high[1])  # type: ignore[arg-type]  # one band: (min, max) of numbers


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img" and values.get("src"):
            self.srcs.append(str(values["src"]))
        if tag == "a" and values.get("href"):
            self.hrefs.append(str(values["href"]))


# ------------------------------------------------------------------ catalog


def test_shipped_catalog_has_a_dozen_valid_products() -> None:
    shipped = catalog.load_catalog()
    assert len(shipped.products) == 12
    assert len({p.id for p in shipped.products}) == 12
    assert shipped.model == "flux-1.1-pro"
    assert len({p.aspect_ratio for p in shipped.products}) >= 5


def test_prompts_carry_the_run_date() -> None:
    assert catalog.season_of(dt.date(2026, 1, 5)) == "winter"
    assert catalog.season_of(dt.date(2026, 4, 5)) == "spring"
    assert catalog.season_of(dt.date(2026, 7, 5)) == "summer"
    assert catalog.season_of(dt.date(2026, 11, 24)) == "autumn"
    text = catalog.render_prompt("{name} in {season}, {month} {year}, {weekday} {date}", DAY, name="Boot")
    assert text == "Boot in autumn, November 2026, Tuesday 2026-11-24"


def test_unknown_placeholder_is_a_catalog_error() -> None:
    with pytest.raises(catalog.CatalogError, match="colour"):
        catalog.render_prompt("a shoe in {colour}", DAY)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda raw: raw["products"].append(dict(raw["products"][0])), "duplicate"),
        (lambda raw: raw["products"][0].update(aspect_ratio="7:3"), "aspect ratio"),
        (lambda raw: raw["products"][0].update(id="Bad Id"), "slug"),
        (lambda raw: raw["products"][0].pop("seed"), "malformed"),
        (lambda raw: raw["products"][0].update(prompt_template="x {nope}"), "nope"),
        (lambda raw: raw.update(products=[]), "no products"),
    ],
)
def test_bad_catalogs_are_refused(tmp_path: Path, mutate, message: str) -> None:
    raw = json.loads(catalog.DEFAULT_CATALOG_PATH.read_text())
    mutate(raw)
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(catalog.CatalogError, match=message):
        catalog.load_catalog(path)


def test_build_jobs_gives_payload_and_output_path_per_product() -> None:
    shipped = catalog.load_catalog()
    jobs = catalog.build_jobs(shipped, DAY, "/out/raw/2026-11-24/")
    assert [j["product_id"] for j in jobs] == [p.id for p in shipped.products]
    first, product = jobs[0], shipped.products[0]
    assert first["payload"]["seed"] == product.seed
    assert first["payload"]["aspect_ratio"] == product.aspect_ratio
    assert first["payload"]["output_format"] == "png"
    assert "{" not in first["payload"]["prompt"] and "autumn" in first["payload"]["prompt"]
    assert first["prompt"] == first["payload"]["prompt"]
    assert first["output_path"] == f"/out/raw/2026-11-24/{product.id}.png"
    json.dumps(jobs)  # XCom-serialisable as plain JSON


# ------------------------------------------------------------------ settings


def test_settings_precedence() -> None:
    env = {"AIRFLOW_HOME": "/home/af"}
    assert settings.output_root(None, env) == "/home/af/segmind-output"
    assert settings.publish_uri(None, None, env) == "/home/af/segmind-output/published"
    env["SEGMIND_OUTPUT_DIR"] = "/data/seg"
    assert settings.publish_uri(None, None, env) == "/data/seg/published"
    env["SEGMIND_PUBLISH_URI"] = "s3://bucket/marketing"
    assert settings.publish_uri(None, None, env) == "s3://bucket/marketing"
    assert settings.publish_uri("file:///var/www", None, env) == "file:///var/www"
    assert settings.output_root("/from/variable", env) == "/from/variable"
    assert settings.publish_conn_id(None, {"SEGMIND_PUBLISH_CONN_ID": "aws_default"}) == "aws_default"
    assert settings.publish_conn_id(None, {}) is None


# ------------------------------------------------------------------ imaging


@pytest.mark.parametrize(("width", "height"), [(1024, 1024), (1360, 768), (768, 1360), (896, 1152)])
def test_every_format_has_its_exact_size(width: int, height: int) -> None:
    formats = imaging.make_formats(
        _png(width, height), title="Trail Runner", subtitle="Grip", brand="Northwind"
    )
    assert set(formats) == {"square", "story", "link_card", "thumbnail"}
    expected = {f.name: (f.width, f.height) for f in imaging.FORMATS}
    assert expected == {
        "square": (1080, 1080),
        "story": (1080, 1920),
        "link_card": (1200, 628),
        "thumbnail": (360, 360),
    }
    for name, data in formats.items():
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "JPEG"
            assert image.size == expected[name]


def test_caption_and_watermark_are_drawn() -> None:
    plain = Image.new("RGB", (1024, 1024), (40, 120, 200))
    bare = imaging.render_format(plain, imaging.LINK_CARD, title="", subtitle="", brand="")
    captioned = imaging.render_format(
        plain, imaging.LINK_CARD, title="Summit Shell", subtitle="Light", brand="NW"
    )
    # The caption is white text over a darkened band: the band gets bright pixels it did not have.
    band = (0, 500, 1200, 628)
    assert _brightest(captioned.crop(band)) > _brightest(bare.crop(band))
    watermark = (1000, 0, 1200, 60)
    assert ImageChops.difference(captioned.crop(watermark), bare.crop(watermark)).getbbox() is not None


def test_long_titles_are_shrunk_to_fit() -> None:
    plain = Image.new("RGB", (1024, 1024), (0, 0, 0))
    card = imaging.render_format(plain, imaging.LINK_CARD, title="W" * 80, subtitle="", brand="")
    left_margin = card.crop((0, 400, 30, 628)).convert("L")
    right_margin = card.crop((1170, 400, 1200, 628)).convert("L")
    assert _brightest(left_margin) < 80 and _brightest(right_margin) < 80


def test_unreadable_bytes_raise_value_error() -> None:
    with pytest.raises(ValueError, match="not a readable image"):
        imaging.make_formats(b"<html>not an image</html>", title="x")


# ------------------------------------------------------------------ manifest and gallery


def _publish_run(tmp_path: Path) -> tuple[Path, dict]:
    shipped = catalog.load_catalog()
    jobs = catalog.build_jobs(shipped, DAY, str(tmp_path / "raw"))[:3]
    for job in jobs:
        job["brand"] = shipped.brand
    jobs[1]["name"] = "<script>alert(1)</script> & co"
    root = tmp_path / "published" / DAY.isoformat()
    records = [
        publishing.publish_product(
            root, jobs[0], _png(1024, 1024), suffix=".png", request_id="req-0", inference_time=13.06
        ),
        publishing.product_record(
            jobs[1], status="failed", request_id="req-1", error="Content moderation: blocked <b>"
        ),
        publishing.publish_product(
            root, jobs[2], _png(1360, 768), suffix=".png", request_id="req-2", inference_time=None
        ),
    ]
    manifest = publishing.build_manifest(
        records,
        dag_id="segmind_content_pipeline",
        run_id="manual__2026-11-24",
        run_date=DAY,
        campaign=shipped.campaign,
        brand=shipped.brand,
        publish_uri=str(root),
    )
    publishing.write_manifest_and_gallery(root, manifest)
    return root, manifest


def test_manifest_lists_published_and_failed_products(tmp_path: Path) -> None:
    root, _ = _publish_run(tmp_path)
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["counts"] == {"total": 3, "published": 2, "failed": 1}
    assert manifest["date"] == "2026-11-24"
    ok, failed, _ = manifest["products"]
    assert ok["status"] == "published" and ok["request_id"] == "req-0" and ok["inference_time"] == 13.06
    assert set(ok["files"]) == {"original", "square", "story", "link_card", "thumbnail"}
    for relative in ok["files"].values():
        assert (root / relative).is_file()
    assert failed["status"] == "failed" and failed["files"] == {}
    assert failed["error"].startswith("Content moderation")
    assert failed["request_id"] == "req-1"
    for key in ("product_id", "prompt", "seed", "request_id", "inference_time", "files"):
        assert key in ok and key in failed


def test_gallery_is_self_contained_with_relative_images(tmp_path: Path) -> None:
    root, _ = _publish_run(tmp_path)
    page = (root / "index.html").read_text()
    parser = _Images()
    parser.feed(page)
    assert len(parser.srcs) == 2  # the failed product has a placeholder, not a broken image
    for src in parser.srcs + parser.hrefs:
        assert "://" not in src and not src.startswith("/"), src
        assert (root / src).is_file(), src
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "Content moderation: blocked &lt;b&gt;" in page
    assert "2 of 3 products published, 1 failed" in page
