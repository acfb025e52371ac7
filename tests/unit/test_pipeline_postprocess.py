"""The content pipeline's building blocks: catalog, prompts, Pillow formats, manifest and gallery.

Airflow puts the dags folder on ``sys.path`` when it parses DAGs; these tests do the same so they
import ``segmind_pipeline`` exactly the way the DAG file does.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import io
import json
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image, ImageChops

DAGS = Path(__file__).resolve().parents[2] / "dags"
SCRIPTS = DAGS.parent / "scripts"
if str(DAGS) not in sys.path:
    sys.path.insert(0, str(DAGS))

from segmind_pipeline import catalog, imaging, publishing, review, settings, stages  # noqa: E402

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
        self.videos: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img" and values.get("src"):
            self.srcs.append(str(values["src"]))
        if tag == "a" and values.get("href"):
            self.hrefs.append(str(values["href"]))
        if tag == "video" and values.get("src"):
            self.videos.append(str(values["src"]))


# ------------------------------------------------------------------ catalog and photos


def test_shipped_catalog_has_products_with_photos_and_one_hero() -> None:
    shipped = catalog.load_catalog()
    assert len(shipped.products) == 6 and len({p.id for p in shipped.products}) == 6
    assert shipped.hero in {p.id for p in shipped.products}
    for product in shipped.products:
        photo = Path(product.photo)
        assert photo.is_absolute() and photo.parent == catalog.DATA_DIR / "products"
        assert photo.stat().st_size < 64 * 1024  # small files in the repository
        with Image.open(photo) as image:
            image.load()
            assert image.format == "JPEG" and image.size == (640, 640)


def test_the_photo_script_renders_every_catalog_product(tmp_path: Path) -> None:
    """The shipped photos come from scripts/make_product_photos.py: it knows every product."""
    spec = importlib.util.spec_from_file_location("make_product_photos", SCRIPTS / "make_product_photos.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert set(script.PRODUCTS) == {p.id for p in catalog.load_catalog().products}
    assert script.main(["--out", str(tmp_path), "--size", "96"]) == 0
    for product in script.PRODUCTS:
        with Image.open(tmp_path / f"{product}.jpg") as image:
            assert image.size == (96, 96)
            corner, centre = image.getpixel((2, 2)), image.getpixel((48, 60))
            assert min(corner) > 200 and corner != centre  # a light studio backdrop, a product on it


def test_templates_carry_the_run_date_and_the_product() -> None:
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
        (lambda raw: raw["products"][0].pop("photo"), "malformed"),
        (lambda raw: raw["products"][0].update(scene="x {nope}"), "nope"),
        (lambda raw: raw.update(caption_prompt="{brand} {colour}"), "colour"),
        (lambda raw: raw.update(hero="no-such-product"), "hero"),
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


def test_photo_locations_relative_to_the_catalog_or_as_given(tmp_path: Path) -> None:
    raw = json.loads(catalog.DEFAULT_CATALOG_PATH.read_text())
    raw["products"][0]["photo"] = "s3://brand-photos/shoe.jpg"
    raw["products"][1]["photo"] = "shots/bottle.jpg"
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(raw))
    loaded = catalog.load_catalog(path)
    assert loaded.products[0].photo == "s3://brand-photos/shoe.jpg"
    assert loaded.products[1].photo == str(tmp_path / "shots" / "bottle.jpg")


def test_build_jobs_gives_every_stage_its_payload_and_path() -> None:
    shipped = catalog.load_catalog()
    jobs = catalog.build_jobs(shipped, DAY, "/out/raw/2026-11-24/")
    assert [j["product_id"] for j in jobs] == [p.id for p in shipped.products]
    first, product = jobs[0], shipped.products[0]
    assert first["photo"] == product.photo
    assert first["cutout_path"] == f"/out/raw/2026-11-24/{product.id}/cutout"
    assert first["scene"]["seed"] == product.seed and first["scene"]["aspect_ratio"] == product.aspect_ratio
    assert "{" not in first["scene"]["prompt"] and "autumn" in first["scene"]["prompt"]
    assert first["scene"]["safety_tolerance"] == 2  # flux-kontext-pro's limit with an input image
    assert product.name in first["caption"]["prompt"] and shipped.brand in first["caption"]["prompt"]
    heroes = [j for j in jobs if j["hero"]]
    assert [h["product_id"] for h in heroes] == [shipped.hero]
    assert heroes[0]["clip"]["duration"] == 5 and heroes[0]["upscale"]["scale_factor"] == 2
    assert all("clip" not in j for j in jobs if not j["hero"])
    json.dumps(jobs)  # XCom-serialisable as plain JSON


def test_stage_payloads_pass_the_catalog_models_checks() -> None:
    """What plan builds is valid for each stage's model, with the file fields filled from input files."""
    from segmind_provider.catalog import validate_payload

    for job in catalog.build_jobs(catalog.load_catalog(), DAY, "/out"):
        validate_payload(catalog.CUTOUT_MODEL, {}, filled_later=["image"])
        validate_payload(catalog.SCENE_MODEL, job["scene"], filled_later=["input_image"])
        validate_payload(catalog.CAPTION_MODEL, job["caption"], filled_later=["images"])
        if job["hero"]:
            validate_payload(catalog.UPSCALE_MODEL, job["upscale"], filled_later=["image"])
            validate_payload(catalog.CLIP_MODEL, job["clip"], filled_later=["start_image_url"])


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
    assert settings.auto_approve(None, {}) is False
    assert settings.auto_approve(None, {"SEGMIND_AUTO_APPROVE": "1"}) is True
    assert settings.auto_approve("false", {"SEGMIND_AUTO_APPROVE": "1"}) is False


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


# ------------------------------------------------------------------ stages, review, manifest and gallery


def _rgba_png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    image.paste((200, 80, 30, 255), (width // 4, height // 4, 3 * width // 4, 3 * height // 4))
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_collect_reads_every_stage_and_names_what_is_missing(tmp_path: Path) -> None:
    jobs = catalog.build_jobs(catalog.load_catalog(), DAY, str(tmp_path / "raw"))
    hero = next(i for i, j in enumerate(jobs) if j["hero"])
    (tmp_path / "cut.png").write_bytes(_rgba_png(64, 64))
    (tmp_path / "scene.png").write_bytes(_png(96, 64))
    results = {
        ("product.cutout", hero): {"output_uris": [str(tmp_path / "cut.png")], "request_id": "r-cut"},
        ("product.scene", hero): {
            "output": "https://cdn.example/scene.png",
            "output_uris": [str(tmp_path / "scene.png")],
            "request_id": "r-scene",
        },
        ("product.caption", hero): {"output": "  Ready for the trail.  "},
        ("hero_upscale", None): {
            "output": "https://cdn.example/big.png",
            "output_uris": [str(tmp_path / "scene.png")],
        },
    }
    outputs = stages.collect(
        jobs[hero],
        hero,
        result_of=lambda task_id, index: results.get((task_id, index)),
        reason_of=lambda task_id, index: f"{task_id} failed",
    )
    assert list(outputs.stages) == ["photo", "cutout", "scene", "upscaled"]
    assert outputs.stages["photo"].data == Path(jobs[hero]["photo"]).read_bytes()
    assert outputs.stages["scene"].suffix == ".png" and outputs.stages["scene"].request_id == "r-scene"
    assert outputs.caption == "Ready for the trail."
    assert outputs.urls == {
        "scene": "https://cdn.example/scene.png",
        "upscaled": "https://cdn.example/big.png",
    }
    assert outputs.errors == {"clip": "hero_clip failed"}
    other = stages.collect(
        jobs[hero + 1], hero + 1, result_of=lambda *_: None, reason_of=lambda t, i: f"{t}#{i}"
    )
    assert other.errors == {
        "cutout": f"product.cutout#{hero + 1}",
        "scene": f"product.scene#{hero + 1}",
        "caption": f"product.caption#{hero + 1}",
    }  # not a hero: no upscale or clip expected


def test_stage_strip_shows_each_stage_and_a_tile_for_a_missing_one() -> None:
    strip = imaging.stage_strip(
        [("photo", _png(300, 200)), ("background removed", _rgba_png(80, 80)), ("scene", None)], title="Boot"
    )
    with Image.open(io.BytesIO(strip)) as image:
        assert image.format == "JPEG"
        side = imaging.STAGE_SIDE
        assert image.width > 3 * side and image.height > side
        # transparency shows as a checkerboard, not black
        tile_x = side // 16 * 2 + side + 3
        assert min(image.convert("RGB").getpixel((tile_x, side // 6 + 3))) > 180


def test_review_body_shows_each_candidate_and_keeps_model_text_inert() -> None:
    job = {"product_id": "boot", "name": "Boot [X]", "hero": True}
    ready = review.candidate(
        job,
        strip_url="https://images.example/strip.jpg",
        caption="**Buy** ![x](http://evil.example/a.png)",
        errors={},
        extras={"clip": "https://cdn.example/c.mp4"},
    )
    blocked = review.candidate(
        {"product_id": "lamp", "name": "Lamp", "hero": False},
        strip_url="https://images.example/lamp.jpg",
        caption=None,
        errors={"scene": "Content moderation: blocked"},
    )
    body = review.review_body([ready, blocked], brand="NW", campaign="Spot", run_date=DAY)
    assert "1 of 2 products ready, 1 not" in body
    assert (
        "[![Boot \\[X\\]: photo, background removed, scene](https://images.example/strip.jpg)](https://images.example/strip.jpg)"
        in body
    )
    assert "[clip](https://cdn.example/c.mp4)" in body
    assert "](http://evil.example" not in body and "\\*\\*Buy\\*\\*" in body  # the caption cannot add images
    assert "### Lamp: not ready" in body and "Content moderation: blocked" in body


def _publish_run(tmp_path: Path) -> tuple[Path, dict]:
    shipped = catalog.load_catalog()
    jobs = catalog.build_jobs(shipped, DAY, str(tmp_path / "raw"))[:3]
    jobs[1]["name"] = "<script>alert(1)</script> & co"
    root = tmp_path / "published" / DAY.isoformat()
    photo = publishing.StageFile(_png(200, 200, (230, 230, 225)), ".jpg")
    records = [
        publishing.publish_product(
            root,
            jobs[0],
            {
                "photo": photo,
                "cutout": publishing.StageFile(_rgba_png(200, 200), ".png", "req-cut"),
                "scene": publishing.StageFile(_png(1024, 1024), ".png", "req-0"),
                "upscaled": publishing.StageFile(_png(2048, 2048), ".png", "req-up"),
                "clip": publishing.StageFile(b"\x00\x00\x00\x18ftypmp42", ".mp4", "req-clip"),
            },
            caption="Grip for every switchback.",
        ),
        publishing.publish_product(
            root,
            jobs[1],
            {"photo": photo, "cutout": publishing.StageFile(_rgba_png(200, 200), ".png")},
            errors={"scene": "Content moderation: blocked <b>", "caption": "not run"},
        ),
        publishing.publish_product(
            root, jobs[2], {"photo": photo, "scene": publishing.StageFile(_png(1360, 768), ".png", "req-2")}
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
        approved_by="marketing reviewer",
    )
    publishing.write_manifest_and_gallery(root, manifest)
    return root, manifest


def test_manifest_lists_every_stage_of_published_and_failed_products(tmp_path: Path) -> None:
    root, _ = _publish_run(tmp_path)
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["counts"] == {"total": 3, "published": 2, "failed": 1}
    assert manifest["date"] == "2026-11-24" and manifest["approved_by"] == "marketing reviewer"
    hero, failed, plain = manifest["products"]
    assert hero["status"] == "published" and hero["hero"] and hero["caption"] == "Grip for every switchback."
    assert set(hero["files"]) == {
        "photo",
        "cutout",
        "scene",
        "upscaled",
        "clip",
        "square",
        "story",
        "link_card",
        "thumbnail",
    }
    assert set(hero["previews"]) == {"photo", "cutout", "scene", "upscaled"}
    assert hero["request_ids"] == {
        "cutout": "req-cut",
        "scene": "req-0",
        "upscaled": "req-up",
        "clip": "req-clip",
    }
    for relative in [*hero["files"].values(), *hero["previews"].values()]:
        assert (root / relative).is_file()
    with Image.open(root / hero["files"]["cutout"]) as cutout:
        assert cutout.mode == "RGBA"  # stored as made: the transparency is kept
    assert failed["status"] == "failed" and set(failed["files"]) == {"photo", "cutout"}
    assert failed["errors"]["scene"].startswith("Content moderation") and "scene:" in failed["error"]
    assert plain["status"] == "published" and plain["caption"] is None and "clip" not in plain["files"]


def test_gallery_is_self_contained_and_shows_every_stage(tmp_path: Path) -> None:
    root, _ = _publish_run(tmp_path)
    page = (root / "index.html").read_text()
    parser = _Images()
    parser.feed(page)
    # hero: photo, cutout, scene, upscaled + formats; failed: photo, cutout; plain: photo, scene + formats
    assert len(parser.srcs) == 5 + 2 + 3
    for src in parser.srcs + parser.hrefs + parser.videos:
        assert "://" not in src and not src.startswith("/"), src
        assert (root / src).is_file(), src
    assert parser.videos == ["trail-runner-x2/clip.mp4"]
    assert page.count("not generated") == 1  # the failed product's scene
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "Content moderation: blocked &lt;b&gt;" in page
    assert "2 of 3 products published, 1 failed" in page
