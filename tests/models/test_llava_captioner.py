"""LLaVA recaptioning: token placement on hand-written descriptions, and the real backend
(LlavaForConditionalGeneration + LlavaProcessor, tiny random weights) end to end."""

from __future__ import annotations

import numpy as np
import pytest

from gen4gen.models.caption.captioner import (
    CLIP_MAX_TOKENS,
    TemplateCaptioner,
    clip_tokens,
    finish_caption,
    name_concepts,
)

CAT = ("<chelsea>", "cat", (10, 0, 100, 100))
MUG = ("<coffee>", "mug", (300, 0, 50, 50))
LEFT = ("<ada>", "person", (0, 0, 100, 300))
RIGHT = ("<grace>", "person", (600, 0, 100, 300))
TOM = ("<tom>", "cat", (700, 0, 100, 100))


def test_each_concept_named_once_at_its_first_mention():
    named = name_concepts("A cat sits next to a mug on a table. The cat looks at the mug.", [MUG, CAT])
    assert named.text == "A <chelsea> cat sits next to a <coffee> mug on a table. The cat looks at the mug."
    assert named.named == ["<chelsea>", "<coffee>"] and named.unnamed == []


def test_same_category_goes_left_to_right_in_reading_order():
    named = name_concepts("A woman talks to a man.", [RIGHT, LEFT])
    # "woman" is the first person mentioned: the leftmost person.
    assert named.text == "A <ada> woman talks to a <grace> man."


def test_plurals_name_every_waiting_concept_of_the_category():
    assert name_concepts("Two cats sleep on a mug.", [TOM, CAT, MUG]).text == (
        "<chelsea> cat and <tom> cat sleep on a <coffee> mug."
    )
    assert name_concepts("Two people stand in a garden.", [LEFT, RIGHT]).text == (
        "<ada> person and <grace> person stand in a garden."
    )
    # One cat left: a plural mention becomes that cat; "Cats" matches any case.
    named = name_concepts("A cat and more Cats.", [CAT, TOM])
    assert named.text == "A <chelsea> cat and more <tom> Cat." and named.unnamed == []


def test_synonyms_builtin_and_from_options_and_whole_words_only():
    assert name_concepts("A kitten beside a coffee cup.", [CAT, MUG]).text == "A <chelsea> kitten beside a <coffee> coffee cup."
    own = {"mug": ["tankard"], "cat": []}
    assert name_concepts("A tankard and a kitten.", [CAT, MUG], own).text == "A <coffee> tankard and a kitten."
    none = name_concepts("A category of catalogues near smugglers.", [CAT, MUG])
    assert none.named == [] and none.unnamed == ["<chelsea>", "<coffee>"]


def test_token_form():
    assert name_concepts("a cat and a mug", [CAT, MUG], form="token").text == "a <chelsea> and a <coffee>"
    with pytest.raises(ValueError, match="form"):
        name_concepts("a cat", [CAT], form="word")


def test_a_description_naming_no_concept_gets_the_template_and_a_note():
    template = TemplateCaptioner().caption([CAT, MUG], "in a garden", 1)
    result = finish_caption("A blurry picture of a table.", [CAT, MUG], template)
    assert result.text == template and result.raw == "A blurry picture of a table."
    assert [code for code, _ in result.notes] == ["caption_fallback"]
    assert "names none of ['cat', 'mug']" in result.notes[0][1]


def test_unmentioned_concepts_are_appended_or_the_template_is_used():
    result = finish_caption("A cat on a sofa", [CAT, MUG], "TEMPLATE")
    assert result.text == "A <chelsea> cat on a sofa. Also in the image: a <coffee> mug."
    assert [c for c, _ in result.notes] == ["caption_completed"]
    strict = finish_caption("A cat on a sofa", [CAT, MUG], "TEMPLATE", unnamed="template")
    assert strict.text == "TEMPLATE" and strict.notes[0][0] == "caption_fallback"


def test_token_shaped_text_from_the_model_is_removed():
    result = finish_caption("<image> A cat <coffee> and a mug.", [CAT, MUG], "T")
    assert result.text == "A <chelsea> cat and a <coffee> mug." and result.notes == []


def test_clip_length_cut_at_a_word_boundary_or_template():
    long = "A cat sits next to a mug. " + " ".join(f"word{i}" for i in range(120))
    result = finish_caption(long, [CAT, MUG], "T")
    assert clip_tokens(result.text) <= CLIP_MAX_TOKENS < clip_tokens(long)
    assert result.text.startswith("A <chelsea> cat sits next to a <coffee> mug.")
    assert long.replace("cat", "<chelsea> cat").replace("mug", "<coffee> mug").startswith(result.text)
    assert [c for c, _ in result.notes] == ["caption_truncated"]
    # The mug comes after the cut: no cut keeps both tokens, so the template is used.
    late = "A cat. " + " ".join(f"word{i}" for i in range(120)) + " and a mug."
    result = finish_caption(late, [CAT, MUG], "a <chelsea> cat and a <coffee> mug")
    assert result.text == "a <chelsea> cat and a <coffee> mug" and result.notes[0][0] == "caption_too_long"


def test_clip_tokens_counts_a_concept_token_as_one():
    assert clip_tokens("a cat") == 4  # start, a, cat, end
    assert clip_tokens("a <chelsea> cat") == 5


# --------------------------------------------------------------------------- backend

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import torch

    from tests.tiny.llava import tiny_llava

    # A 32-wide model gains nothing from threads, and on a busy machine their spin-waiting
    # makes each tiny matrix product ~100x slower (measured: 23 ms vs 0.2 ms).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield str(tiny_llava(tmp_path_factory.mktemp("llava")))
    torch.set_num_threads(threads)


ZEBRA = ("<zed>", "zebra", (10, 10, 20, 20))
HARP = ("<harpo>", "xylophone", (40, 10, 20, 20))


def test_backend_loads_offline_through_the_registry_and_describes_in_batches(tiny):
    from gen4gen.models import registry

    model = registry.load("caption", "llava", {"model": tiny, "batch_size": 2, "max_new_tokens": 6})
    assert model is registry.load("caption", "llava", {"model": tiny, "batch_size": 2, "max_new_tokens": 6})
    assert model.device == "cpu" and str(model.dtype) == "torch.float32"
    assert model.text.startswith("USER: <image>\n") and model.text.endswith("ASSISTANT:")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(3)]
    first = model.describe(images, seed=1)
    assert len(first) == 3 and all(isinstance(t, str) for t in first)
    assert first == model.describe(images, seed=1)  # greedy: the same images, the same words
    # Random weights write gibberish with no zebra or xylophone in it: template + note.
    results = model.caption_batch(images[:2], [[ZEBRA, HARP]] * 2, ["in a garden"] * 2, [5, 6])
    for r, seed in zip(results, (5, 6)):
        assert r.text == model.caption([ZEBRA, HARP], "in a garden", seed)
        assert r.notes[0][0] == "caption_fallback" and "<zed>" in r.text and "<harpo>" in r.text


def test_bad_options_are_refused_by_name(tiny, tmp_path):
    from gen4gen.models.caption.llava import LlavaCaptioner

    with pytest.raises(ValueError, match="batch_size"):
        LlavaCaptioner(model=tiny, batch_size=0)
    with pytest.raises(ValueError, match="unnamed"):
        LlavaCaptioner(model=tiny, unnamed="drop")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LlavaCaptioner(model=str(tmp_path / "nowhere"))


def test_caption_stage_records_notes_and_fails_only_a_bad_image(tiny, tmp_path):
    from gen4gen.infra.records import Box, DatasetConfig, LayoutPlan, Sample
    from gen4gen.infra.storage import write_bytes, write_png
    from gen4gen.models.score.judge import missing_tokens
    from gen4gen.tasks.caption import CAPTION
    from gen4gen.tasks.stage import Job, run_samples

    out = str(tmp_path / "out")
    config = DatasetConfig.model_validate({
        "name": "zoo",
        "canvas": 64,
        "concepts": [
            {"id": "zed", "category": "zebra", "token": "<zed>", "photos": ["unused.png"]},
            {"id": "harpo", "category": "xylophone", "token": "<harpo>", "photos": ["unused.png"]},
        ],
        "compositions": [{"id": "band", "concepts": ["zed", "harpo"]}],
        "stages": {"caption": {"backend": "llava", "options": {"model": tiny, "batch_size": 2, "max_new_tokens": 6}}},
    })
    samples = []
    for i in range(3):
        plan = LayoutPlan(
            composition="band", index=i, canvas=64, scene="in a garden", seed=i,
            boxes=[Box(concept="zed", x=2, y=2, w=20, h=20), Box(concept="harpo", x=30, y=2, w=20, h=20)],
            photos={"zed": "unused.png", "harpo": "unused.png"},
        )
        path = f"band/repaint/s{i}.png"
        if i == 1:
            write_bytes(f"{out}/{path}", b"not a png")
        else:
            write_png(f"{out}/{path}", np.full((64, 64, 3), 40 * i, np.uint8))
        samples.append(Sample(id=f"s{i}", composition="band", concepts=["zed", "harpo"], tokens=["<zed>", "<harpo>"],
                              plan=plan, paths={"repaint": path}, stage_keys={"repaint": f"k{i}"}))
    done = run_samples(CAPTION, samples, Job(out, config, config.compositions[0]))
    assert [s.status for s in done] == ["planned", "failed", "planned"]
    assert done[1].reasons[0].stage == "caption" and "cannot decode image" in done[1].reasons[0].detail
    for s in (done[0], done[2]):
        assert not missing_tokens(s.caption, s.tokens)  # the filter will not drop it
        assert [n.code for n in s.notes] == ["caption_fallback"] and s.notes[0].stage == "caption"
        assert s.seconds["caption"] > 0
    assert samples[0].caption is None  # the inputs were not changed


def test_generate_flow_with_llava_captions_and_published_notes(tiny, tmp_path, prefect_harness):
    from conftest import run_recipe, small_recipe
    from gen4gen.tasks.publishing.publish import read_shard

    raw = small_recipe(tmp_path, samples=1, canvas=128)
    raw["stages"] = {"caption": {"backend": "llava", "options": {"model": tiny, "batch_size": 4, "max_new_tokens": 6}}}
    manifest = run_recipe(raw)
    samples = [s for st in manifest.compositions for s in read_shard(manifest.uri, st)]
    assert samples and all(s.caption for s in samples if s.status != "failed")
    for s in samples:
        assert all(t in s.caption for t in s.tokens)  # named, by LLaVA or by the template
        # Gibberish names no cat, mug or rocket: the template stood in, and the record says so.
        assert [n.code for n in s.notes] == ["caption_fallback"] and s.notes[0].stage == "caption"
    assert manifest.kept >= 1  # a fallback does not drop a sample
