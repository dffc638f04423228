"""Real background photos: the ground found on photos drawn with a known ground line, objects
placed on it by depth, shadows cast away from the light, and the identity and failure rules
(a changed photo re-plans only its samples; a bad photo fails only them, named)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import small_recipe
from gen4gen.infra import progress
from gen4gen.infra.config import ConfigError, load_config
from gen4gen.infra.records import DatasetConfig
from gen4gen.models.backgrounds import (
    Ground, cover_crop, estimate_ground, ground_from_hint, light_side, scene_words, soften,
)
from gen4gen.models.contracts import Backdrop, PlannedObject
from gen4gen.models.plan.planner import OfflinePlanner
from gen4gen.models.repaint.repainter import OfflineRepainter
from gen4gen.tasks.pipeline import run_local


def drawn_place(side: int, ground_row: int, kind: str = "lawn", seed: int = 0) -> np.ndarray:
    """A photo-like place with its ground starting at `ground_row`: a sky over a textured lawn,
    or a white wall over a pale floor with a skirting line (colour alone cannot tell them)."""
    rng = np.random.default_rng(seed)
    img = np.zeros((side, side, 3), np.float32)
    rows = np.arange(side, dtype=np.float32)[:, None, None]
    if kind == "lawn":
        img[:] = np.array([150, 190, 235]) + (rows / side) * np.array([50, 30, 10])  # sky
        lawn = np.array([70, 130, 50]) + rng.normal(0, 12, (side, side, 1))
        img[ground_row:] = lawn[ground_row:]
    else:
        img[:] = 238 + rng.normal(0, 2, (side, side, 1))
        img[ground_row:] = 244 + rng.normal(0, 2, (side - ground_row, side, 1))
        img[ground_row - 3 : ground_row] = 150  # the skirting's shadow line
    return np.clip(cv2.GaussianBlur(img, (0, 0), 1.0), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("kind, share", [("lawn", 0.55), ("lawn", 0.7), ("room", 0.72)])
def test_the_ground_is_found_on_a_photo_with_a_known_ground_line(kind, share):
    side = 512
    g = estimate_ground(drawn_place(side, int(share * side), kind))
    tops = np.array(g.tops) / side
    assert abs(np.median(tops) - share) < 0.04, (kind, share, tops)
    assert abs(g.horizon / side - share) < 0.05
    assert all(t >= g.horizon for t in g.tops)


def test_a_hint_is_the_ground_line_of_the_photo_moved_into_the_cover_crop():
    # A 2:1 photo cover-cropped to a square: its height maps to the whole canvas.
    g = ground_from_hint(0.6, 400, (300, 600))
    assert g.tops == tuple([240] * len(g.tops)) and g.horizon == 240
    tall = ground_from_hint(0.6, 400, (800, 400))  # 1:2: the crop drops 200 px of the photo at top
    assert tall.tops[0] == round(0.6 * 800 - 200)


def test_cover_crop_keeps_the_aspect_and_soften_is_the_papers_radius_1():
    photo = np.zeros((100, 300, 3), np.uint8)
    photo[:, 140:160] = 255  # a centred stripe stays centred and as wide as it was, scaled
    view = cover_crop(photo, 200)
    assert view.shape == (200, 200, 3)
    stripe = np.nonzero(view[100, :, 0] > 128)[0]
    assert abs(stripe.mean() - 99.5) < 2 and 36 <= stripe.size <= 44
    step = np.zeros((1024, 1024, 3), np.uint8)
    step[:, 512:] = 255  # at 1024 px a Gaussian of sigma 1 softens a hard edge over a few pixels
    soft = soften(step)[100, 508:516, 0].astype(int)
    assert soft[0] == 0 and soft[-1] == 255 and 40 < soft[3] < 128 < soft[4] < 215


def test_the_light_side_is_the_brighter_side():
    img = np.zeros((100, 100, 3), np.uint8)
    img[:, 50:] = 200
    assert light_side(img, 60) == 1.0 and light_side(img[:, ::-1], 60) == -1.0


def test_scene_words_from_folder_names():
    assert scene_words("garden") == "in a garden"
    assert scene_words("living-room") == "in the living room"
    assert scene_words("office_desk") == "on an office desk"
    assert scene_words("on_the_grass") == "on the grass"


def test_objects_stand_on_the_ground_and_farther_ones_are_smaller():
    side = 512
    tops = tuple([300] * 16 + [420] * 16)  # the right half's ground starts lower (a bush)
    ground = Ground(side, tops, 300)
    objects = [PlannedObject("a", "dog", 1.2), PlannedObject("b", "mug", 0.8), PlannedObject("c", "cat", 1.0)]
    planner = OfflinePlanner()
    seen = []
    for seed in range(12):
        boxes = planner.layout(objects, side, "in a garden", 0.05, seed, ground=ground)
        for (x, y, w, h), o in zip(boxes, objects):
            bottom = y + h
            assert ground.top_at(x, x + w) <= bottom <= side  # the whole base on ground
            seen.append((o.concept, bottom, h))
    # The same object is smaller the higher (farther) it stands: height over depth scale is
    # the object's size at the front, the same whatever its place.
    for concept in ("a", "b", "c"):
        near_size = [h / ground.depth_scale(b) for c, b, h in seen if c == concept]
        assert max(near_size) / min(near_size) < 1.35  # the planner's size jitter, no more
        bottoms = [b for c, b, _ in seen if c == concept]
        assert max(bottoms) - min(bottoms) > 40  # depth really varies


def test_a_cut_off_object_enters_from_the_edge_its_photo_cut():
    ground = Ground(512, tuple([280] * 32), 280)
    objects = [PlannedObject("dog", "dog", 1.0, cut=("bottom",)), PlannedObject("cat", "cat", 1.0, cut=("left",))]
    for seed in range(5):
        dog, cat = OfflinePlanner().layout(objects, 512, "in a garden", 0.1, seed, ground=ground)
        assert dog[1] + dog[3] == 512
        assert cat[0] == 0


def test_shadows_fall_on_the_ground_away_from_the_light():
    side = 256
    photo = np.full((side, side, 3), 180, np.uint8)
    composite = np.zeros((side, side, 3), np.uint8)
    mask = np.zeros((side, side), np.float32)
    mask[100:180, 110:150] = 1.0  # an upright object standing at row 180
    composite[mask > 0] = 90
    box = (100, 100, 60, 80)
    out = OfflineRepainter().repaint(composite, mask, "in a garden", 0, [box], backdrop=Backdrop(photo, 1.0))
    grey = out.astype(np.float32).mean(axis=2)
    assert grey[182, 130] < 120  # the contact shadow right under the base
    assert grey[20, 20] == pytest.approx(180, abs=1)  # the photo untouched far away
    below = grey[185:215]
    # Light from the right: the cast shadow leans left, so left of the object is darker.
    assert below[:, 60:110].mean() < below[:, 150:200].mean() - 3
    np.testing.assert_array_equal(out[mask >= 1], composite[mask >= 1])  # objects exact


def _photo(path: Path, ground_row: int, seed: int) -> str:
    Image.fromarray(drawn_place(200, ground_row, seed=seed)).save(path)
    return str(path)


def _recipe(tmp_path: Path, photos: list[str]) -> dict:
    raw = small_recipe(tmp_path, samples=4, canvas=128)
    raw["compositions"] = raw["compositions"][:1]
    raw["backgrounds"] = [{"scene": "in a garden", "photos": photos}]
    raw["stages"] = {"filter": {"drop_flagged_cutouts": False}}
    return raw


def _run(raw: dict) -> tuple[list, Counter]:
    counts: Counter = Counter()
    stop = progress.listen_computed(lambda comp, stage, n: counts.update({stage: n}))
    try:
        _, samples, _ = run_local(DatasetConfig.model_validate(raw))
    finally:
        stop()
    return samples["cat-mug"], counts


def test_samples_stand_on_their_photo_and_a_changed_photo_replans_only_its_samples(tmp_path):
    photos = [_photo(tmp_path / "a.png", 120, 1), _photo(tmp_path / "b.png", 130, 2)]
    raw = _recipe(tmp_path, photos)
    first, _ = _run(raw)
    used = Counter(s.plan.background.photo for s in first)
    assert used == {photos[0]: 2, photos[1]: 2}  # spread evenly over the photos
    for s in first:
        bg = s.plan.background
        assert s.plan.scene == "in a garden" and bg.sha256 and bg.source == "estimated"
        for b in s.plan.boxes:
            assert b.y + b.h >= min(bg.ground)
    _photo(tmp_path / "b.png", 110, 3)  # b's bytes change
    second, counts = _run(raw)
    same = [s.id for s in first if s.plan.background.photo == photos[0]]
    assert [s.id for s in second if s.plan.background.photo == photos[0]] == same
    assert not {s.id for s in second if s.plan.background.photo == photos[1]} & {s.id for s in first}
    assert counts["plan"] == 2 and counts["repaint"] == 2  # b's two samples, nothing else


def test_a_bad_background_photo_fails_only_the_samples_that_use_it(tmp_path):
    good = _photo(tmp_path / "good.png", 120, 1)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    samples, _ = _run(_recipe(tmp_path, [good, str(bad)]))
    by_photo = {s.plan.background.photo: s for s in samples}
    failed = [s for s in samples if s.status == "failed"]
    assert len(failed) == 2 and all(s.plan.background.photo == str(bad) for s in failed)
    assert all(r.code == "bad_background" and "bad.jpg" in r.detail for s in failed for r in s.reasons)
    assert by_photo[good].status == "kept"


def test_a_pattern_is_expanded_when_the_recipe_is_read_and_one_that_matches_nothing_refused(tmp_path):
    folder = tmp_path / "backgrounds" / "garden"
    folder.mkdir(parents=True)
    for name in ("b.jpg", "a.jpg"):
        Image.fromarray(drawn_place(64, 40)).save(folder / name)
    (folder / "LICENSE.txt").write_text("not a photo")
    raw = _recipe(tmp_path, ["backgrounds/garden/*"])
    import yaml

    (tmp_path / "r.yaml").write_text(yaml.safe_dump(raw))
    config = load_config(str(tmp_path / "r.yaml"))
    assert [p.rsplit("/", 1)[1] for p in config.backgrounds[0].photos] == ["a.jpg", "b.jpg"]
    raw["backgrounds"][0]["photos"] = ["backgrounds/forest/*.jpg"]
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="matches no image file"):
        load_config(str(tmp_path / "r.yaml"))


def test_a_straight_base_just_above_the_frame_is_a_cut_like_the_frames_own():
    from gen4gen.infra.records import Cutout
    from gen4gen.tasks.cutouts import cut_edges, measure, placeable

    mask = np.zeros((200, 200), np.float32)
    mask[60:185, 40:160] = 1.0  # a body ending in a straight line 15 px above the frame (a blanket's edge)
    m = measure(mask, np.zeros((200, 200, 3), np.uint8))
    assert cut_edges(Cutout(photo="p", measures=m)) == ("bottom",)
    round_base = np.zeros((200, 200), np.float32)
    cv2.ellipse(round_base, (100, 120), (60, 60), 0, 0, 360, 1.0, -1)  # a round base: stands as it is
    assert cut_edges(Cutout(photo="p", measures=measure(round_base, np.zeros((200, 200, 3), np.uint8)))) == ()
    assert placeable(("bottom", "left")) and not placeable(("top",)) and not placeable(("left", "right"))


DEMO_DOG = Path(__file__).resolve().parents[2] / "configs" / "demo-photos" / "photos" / "dog" / "01.jpg"


def test_a_background_photo_with_a_dog_in_it_is_never_used(tmp_path, monkeypatch):
    """The real NanoDet (where `gen4gen weights fetch nanodet` stored it) vets the photos:
    a lawn with the demo's corgi photo in it (an oval of it, as a dog lying on the lawn) is
    left out, the plain lawn is used."""
    from conftest import REAL_CACHE
    from gen4gen.models.detect import weights as detect_weights

    if not detect_weights.weights_path(env={"GEN4GEN_CACHE": REAL_CACHE}).is_file():
        pytest.skip("no NanoDet weights (gen4gen weights fetch nanodet)")
    monkeypatch.setenv("GEN4GEN_CACHE", REAL_CACHE)  # read only: where the fetched detector is
    clean = _photo(tmp_path / "lawn.png", 100, 1)
    lawn = drawn_place(400, 200, seed=2).astype(np.float32)
    dog = np.asarray(Image.open(DEMO_DOG).convert("RGB").resize((160, 160))).astype(np.float32)
    oval = np.zeros((160, 160), np.float32)
    cv2.ellipse(oval, (80, 80), (58, 75), 0, 0, 360, 1.0, -1)
    oval = cv2.GaussianBlur(oval, (0, 0), 3)[..., None]
    lawn[220:380, 100:260] = dog * oval + lawn[220:380, 100:260] * (1 - oval)
    Image.fromarray(lawn.astype(np.uint8)).save(tmp_path / "lawn-dog.png")
    raw = _recipe(tmp_path, [clean, str(tmp_path / "lawn-dog.png")])
    raw["stages"]["segment"] = {"backend": "offline"}
    manifest, samples, _ = run_local(DatasetConfig.model_validate(raw))
    assert {s.plan.background.photo for s in samples["cat-mug"]} == {clean}
    # Listed where people look: the manifest's flagged photos, which the report shows.
    why = manifest.flagged_photos[str(tmp_path / "lawn-dog.png")]
    assert why.startswith("background_flagged: it holds dog") and clean not in manifest.flagged_photos
