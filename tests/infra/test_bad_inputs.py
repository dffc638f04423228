"""The bad-input corpus: each input is handled correctly or refused with a clear reason,
and a run over all of them at once goes on for everything else."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from conftest import REPO, run_recipe, small_recipe
from gen4gen.infra.config import ConfigError, load_config
from gen4gen.infra.errors import BadInput
from gen4gen.infra.storage import decode_image, to_rgb_alpha
from gen4gen.infra.records import Concept, DatasetConfig, LayoutPlan
from gen4gen.tasks.segment import segment_concept

BAD = REPO / "tests" / "data" / "bad"
_spec = importlib.util.spec_from_file_location("make_bad", REPO / "tests" / "data" / "make_bad.py")
make_bad = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_bad)
EXPECTED = make_bad.EXPECTED


def verdict(data: bytes, name: str) -> str:
    try:
        rgb, _ = to_rgb_alpha(decode_image(data, name))
        return "ok" if rgb.ndim == 3 and rgb.dtype == np.uint8 else "broken"
    except BadInput as err:
        assert err.name == name  # the error names the input
        return "error: " + err.reason


def test_the_script_rebuilds_the_corpus_with_the_same_verdicts():
    built = make_bad.build()
    assert sorted(built) == sorted(p.name for p in BAD.iterdir()) == sorted(EXPECTED)
    for name, data in built.items():
        assert verdict(data, name).split(":")[0] == verdict((BAD / name).read_bytes(), name).split(":")[0]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_input_is_used_or_refused_with_its_reason(name):
    kind, words = EXPECTED[name]
    got = verdict((BAD / name).read_bytes(), str(BAD / name))
    if kind == "ok":
        assert got == "ok", got
    else:
        assert got.startswith("error") and words in got, got


def test_the_special_cases_are_handled_right():
    upright = decode_image((BAD / "exif_rotated.jpg").read_bytes(), "exif")
    assert upright.size == (400, 600)  # the 600x400 photo, turned as its EXIF says
    rgb, alpha = to_rgb_alpha(decode_image((BAD / "rgba_cutout.png").read_bytes(), "rgba"))
    assert alpha is not None and alpha.mean() == pytest.approx(math.pi * 70**2 / (200 * 300), rel=0.05)
    deep, _ = to_rgb_alpha(decode_image((BAD / "deep16.png").read_bytes(), "deep"))
    assert deep.max() > 200  # scaled into 8 bits, not clipped to white or black
    gif = decode_image((BAD / "animated.gif").read_bytes(), "gif")
    assert gif.size == (150, 100)


def test_a_transparent_background_becomes_the_mask(tmp_path):
    concept = Concept(id="disc", category="ball", token="<disc>", photos=[str(BAD / "rgba_cutout.png")])
    cut = segment_concept(concept, str(tmp_path), DatasetConfig.model_validate(small_recipe(tmp_path)).stages.segment)[0]
    assert cut.usable and cut.bbox == pytest.approx((80, 30, 141, 141), abs=3)


def test_a_missing_photo_and_an_unreachable_bucket(tmp_path, monkeypatch):
    monkeypatch.setenv("GEN4GEN_IO_RETRIES", "1")
    monkeypatch.setenv("GEN4GEN_IO_BACKOFF", "0.01")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    concept = Concept(
        id="ghost", category="cat", token="<ghost>", photos=[str(tmp_path / "missing.png"), "s3://no-such-bucket/cat.png"]
    )
    stage = DatasetConfig.model_validate(small_recipe(tmp_path)).stages.segment
    missing, unreachable = segment_concept(concept, str(tmp_path / "out"), stage)
    s3fs.S3FileSystem.clear_instance_cache()
    assert missing.error.code == "bad_input" and "missing.png: not found" in missing.error.detail
    assert unreachable.error.code in ("unreachable", "bad_input")
    assert "s3://no-such-bucket/cat.png" in unreachable.error.detail


@pytest.mark.parametrize("bad_id", ["../up", "a/b", "nul\x00", "x" * 300, "ünïcode", "with space"])
def test_recipes_with_unsafe_concept_ids_name_the_field(tmp_path, bad_id):
    raw = small_recipe(tmp_path)
    raw["concepts"][0]["id"] = bad_id
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert "concepts.0.id" in str(err.value) and "not a safe path segment" in str(err.value)


def test_duplicate_tokens_in_a_recipe(tmp_path):
    raw = small_recipe(tmp_path)
    raw["concepts"][1]["token"] = raw["concepts"][0]["token"]
    with pytest.raises(ValidationError, match="token '<chelsea>' is already used by 'chelsea'"):
        DatasetConfig.model_validate(raw)


@pytest.mark.parametrize(
    "box, words",
    [
        ({"x": float("nan")}, "x"),
        ({"w": float("inf")}, "w"),
        ({"x": -5}, "off the 256x256 canvas"),
        ({"y": 250}, "off the 256x256 canvas"),
        ({"w": 0}, "zero or negative area"),
    ],
)
def test_layout_boxes_with_nan_negative_or_off_canvas_values(box, words):
    b = {"concept": "cat", "x": 10, "y": 10, "w": 50, "h": 50} | box
    raw = dict(composition="c", index=0, canvas=256, boxes=[b], scene="s", seed=0, photos={"cat": "p.png"})
    with pytest.raises(ValidationError) as err:
        LayoutPlan.model_validate(raw)
    assert words in str(err.value)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_a_run_over_the_whole_corpus_goes_on_for_everything_else(tmp_path):
    names = sorted(EXPECTED)
    concepts = [
        {"id": f"bad{i}", "category": "mug", "token": f"<bad{i}>", "photos": [str(BAD / name)]}
        for i, name in enumerate(names)
    ]
    comps = [{"id": f"with-bad{i}", "concepts": ["chelsea", f"bad{i}"], "samples": 1} for i in range(len(names))]
    raw = small_recipe(tmp_path, samples=1, extra_concepts=concepts, extra_compositions=comps)
    manifest = run_recipe(raw)
    stats = {st.composition: st for st in manifest.compositions}
    assert stats["cat-mug"].failed == 0 and stats["cat-mug-rocket"].failed == 0
    for i, name in enumerate(names):
        st = stats[f"with-bad{i}"]
        if EXPECTED[name][0] == "error":
            assert st.failed == 1, name
            assert any(name in why for why in manifest.unusable_photos.values()), name
        else:
            assert st.failed == 0, (name, st.reasons)
