"""The template captioner: names every concept by its token and states the scene.

The paper captioned part of MyCanvas as "c1 and c2 and ... {scene}"; this backend writes
that kind of caption with a little more shape: each token is followed by its category
word ("a <chelsea> cat"), the way Custom Diffusion and DreamBooth prompts are written,
objects are named left to right, and two objects get a spatial relation.
"""

from __future__ import annotations

import numpy as np

from gen4gen.models.contracts import Caption, Obj

OPENINGS = ("a photo of", "a picture of", "a realistic photo of")


class TemplateCaptioner:
    """The caption from the plan alone: objects left to right, the scene last."""

    name = "template"
    batch_size = 256
    needs_image = False

    def __init__(self, openings: tuple[str, ...] | list[str] = OPENINGS):
        if not openings:
            raise ValueError("openings: need at least one caption opening")
        self.openings = tuple(openings)

    def caption_batch(self, images, objects: list[list[Obj]], scenes: list[str], seeds: list[int]) -> list[Caption]:
        return [Caption(self.caption(o, scene, seed)) for o, scene, seed in zip(objects, scenes, seeds)]

    def caption(self, objects: list[tuple[str, str, tuple[int, int, int, int]]], scene: str, seed: int) -> str:
        """objects: (token, category, box) per concept. Every token appears exactly once."""
        if not objects:
            raise ValueError("objects: a caption needs at least one object")
        rng = np.random.default_rng(seed)
        left_to_right = sorted(objects, key=lambda o: o[2][0] + o[2][2] / 2)
        named = [f"{_article(cat)} {token} {cat}" for token, cat, _ in left_to_right]
        if len(named) == 2:
            relation = ("next to", "to the left of", "beside")[int(rng.integers(3))]
            body = f"{named[0]} {relation} {named[1]}"
        else:
            body = ", ".join(named[:-1]) + f" and {named[-1]}"
        opening = self.openings[int(rng.integers(len(self.openings)))]
        return f"{opening} {body} {scene}".strip()


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


# --------------------------------------------------------------------------- recaptioning
#
# A describing model (LLaVA) writes "a cat sitting next to a mug"; a training caption needs
# "a <chelsea> cat sitting next to a <coffee> mug". The functions below do that rewrite and
# everything around it; they are pure so that they are tested on hand-written captions
# (a tiny random LLaVA only writes gibberish).
#
# Choices (the paper does not say how its object words became tokens):
# - A concept is found by its category word, a synonym of it (DEFAULT_SYNONYMS, extended by
#   the backend's `synonyms` option) or their plurals ('s', 'es', a few irregular ones),
#   whole words, any case. A word that is a synonym of two categories in the sample goes to
#   the category it names exactly, else to the first such category left to right.
# - Several concepts of one category (two persons) are matched in reading order: the k-th
#   mention of "person" is the k-th person from the left, the order the template captioner
#   uses too (LLaVA cannot say which person it meant; descriptions mostly go left to right).
# - Each concept is named once, at its first mention: "a <chelsea> cat" (the word kept as
#   written; `form: token` writes the token alone). Later mentions ("the cat looks up")
#   stay plain text.
# - A plural mention ("two cats") names every concept of that category not named yet:
#   "<chelsea> cat and <tom> cat"; a number word before it is dropped. With one left, it
#   becomes that one ("<chelsea> cat").
# - Concepts the description never mentions are appended as one sentence, "Also in the
#   image: a <coffee> mug." (`unnamed: append`), or the template caption replaces it
#   (`unnamed: template`). A description that names no concept at all always gets the
#   template caption. Either way the sample keeps going, with a note saying what happened.
# - CLIP reads 77 tokens (start and end included); a learnt concept token is one of them.
#   A longer caption is cut at the last word boundary that fits, when every concept token
#   is still in it; otherwise the template caption is used.

import re  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from functools import lru_cache  # noqa: E402

DEFAULT_SYNONYMS: dict[str, list[str]] = {
    "person": ["man", "woman", "boy", "girl", "child", "kid", "lady", "guy", "individual"],
    "astronaut": ["spaceman", "person", "man", "woman"],
    "cat": ["kitten", "kitty"],
    "dog": ["puppy", "pup"],
    "mug": ["cup", "coffee cup", "coffee mug"],
    "cup": ["mug", "teacup"],
    "motorcycle": ["motorbike", "bike", "scooter"],
    "bicycle": ["bike", "cycle"],
    "rocket": ["spaceship", "spacecraft"],
    "plant": ["houseplant", "potted plant", "flowerpot"],
    "houseplant": ["plant", "potted plant", "flowerpot"],
    "teddybear": ["teddy bear", "teddy", "stuffed animal", "bear"],
    "backpack": ["bag", "rucksack"],
    "sunglasses": ["glasses", "shades"],
    "chair": ["armchair", "seat"],
    "vase": ["pot"],
}
IRREGULAR_PLURALS = {"person": "people", "man": "men", "woman": "women", "child": "children", "mouse": "mice"}
NUMBER_WORDS = {"two": 2, "three": 3, "four": 4, "five": 5, "both": 2, "2": 2, "3": 3, "4": 4, "5": 5}
CLIP_MAX_TOKENS = 77  # CLIP's context, start and end tokens included
_CONCEPT_TOKEN = re.compile(r"<[A-Za-z0-9][A-Za-z0-9_-]{0,62}>")

@dataclass
class Named:
    """A description with concept tokens put in."""

    text: str
    named: list[str]  # tokens put in, in the order they appear
    unnamed: list[str]  # tokens the description gave no place for, left to right



def left_to_right(objects: list[Obj]) -> list[Obj]:
    return sorted(objects, key=lambda o: o[2][0] + o[2][2] / 2)


def _surfaces(objects: list[Obj], synonyms: dict[str, list[str]]) -> dict[str, str]:
    """Lower-case word -> the category it stands for in this sample."""
    cats = list(dict.fromkeys(o[1].lower() for o in left_to_right(objects)))
    words: dict[str, str] = {c: c for c in cats}  # a category's own word wins
    for c in cats:
        for w in synonyms.get(c, []):
            words.setdefault(w.lower().strip(), c)
    return {w: c for w, c in words.items() if w}


def _pattern(words: list[str]) -> re.Pattern:
    alts = []
    for w in sorted(words, key=len, reverse=True):  # "coffee cup" before "cup"
        body = r"\s+".join(re.escape(p) for p in w.split())
        irregular = IRREGULAR_PLURALS.get(w)
        alts.append(f"(?:{body})(?:e?s)?" + (f"|{re.escape(irregular)}" if irregular else ""))
    numbers = "|".join(sorted(NUMBER_WORDS, key=len, reverse=True))
    return re.compile(rf"\b(?:(?P<num>{numbers})\s+)?(?P<word>{'|'.join(alts)})\b", re.IGNORECASE)


def _split_plural(found: str, words: dict[str, str]) -> tuple[str, bool] | None:
    """(the singular word as written, plural?) for a match, or None if no known word."""
    low = " ".join(found.lower().split())
    if low in words:
        return found, False
    for singular, plural in IRREGULAR_PLURALS.items():
        if low == plural and singular in words:
            return singular, True
    for suffix in ("es", "s"):
        if low.endswith(suffix) and low[: -len(suffix)] in words:
            return found[: -len(suffix)], True
    return None


def name_concepts(
    description: str,
    objects: list[Obj],
    synonyms: dict[str, list[str]] | None = None,
    form: str = "token_word",
) -> Named:
    """Put each object's token at its first mention in `description` (see the notes above)."""
    if form not in ("token_word", "token"):
        raise ValueError(f"form {form!r}: expected 'token_word' or 'token'")
    synonyms = DEFAULT_SYNONYMS if synonyms is None else synonyms
    ordered = left_to_right(objects)
    waiting: dict[str, list[str]] = {}
    for token, cat, _ in ordered:
        waiting.setdefault(cat.lower(), []).append(token)
    words = _surfaces(objects, synonyms)
    named: list[str] = []

    def put(token: str, word: str) -> str:
        named.append(token)
        return token if form == "token" else f"{token} {word}"

    def replace(m: re.Match) -> str:
        split = _split_plural(m.group("word"), words)
        if split is None:
            return m.group(0)
        word, plural = split
        queue = waiting[words[" ".join(word.lower().split())]]
        if not queue:  # a later mention of objects already named
            return m.group(0)
        num = m.group("num")
        if not plural:
            return (f"{num} " if num else "") + put(queue.pop(0), word)
        take = min(len(queue), NUMBER_WORDS.get((num or "").lower(), len(queue)))
        parts = [put(queue.pop(0), word) for _ in range(take)]
        return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + f" and {parts[-1]}"

    text = _pattern(list(words)).sub(replace, description) if words else description
    unnamed = [t for t, _, _ in ordered if t not in named]
    return Named(text=text, named=named, unnamed=unnamed)


def clean_description(text: str) -> str:
    """One line of plain text: whitespace collapsed, and anything token-shaped removed so
    that only the tokens we put in are in the caption."""
    text = re.sub(r"<[^<>\s]{1,64}>", " ", text)
    return " ".join(text.split())


@lru_cache(maxsize=1)
def _clip_bpe():
    # open_clip ships CLIP's BPE (the same as SD 1.5's CLIPTokenizer) and needs no download.
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


CLIP_MERGES = 49152 - 256 - 2  # CLIP's vocabulary: 49,408 tokens, 256 bytes x 2 and 2 specials


@lru_cache(maxsize=1)
def clip_merges() -> tuple[str, ...]:
    """CLIP's BPE merges ('a b' lines), read from open_clip's BPE file without importing
    open_clip, whose import loads its models (seconds)."""
    import gzip
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("open_clip")
    bpe = Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(bpe, "rt", encoding="utf-8").read().split("\n")[1 : CLIP_MERGES + 1]
    return tuple(line for line in lines if line)


@lru_cache(maxsize=1)
def clip_words() -> frozenset[str]:
    """Every word (letters only, lower case) CLIP's BPE encodes as one token: the merges that end
    a word; for every letters-only merge the BPE gives that one token (checked)."""
    words = {"".join(m.split())[: -len("</w>")] for m in clip_merges() if m.endswith("</w>")}
    return frozenset(w for w in words if re.fullmatch(r"[a-z]+", w)) | set("abcdefghijklmnopqrstuvwxyz")


def clip_tokens(text: str) -> int:
    """CLIP tokens of a caption, start and end included; a concept token counts as one,
    as it will once it is learnt."""
    tokens = _CONCEPT_TOKEN.findall(text)
    rest = _CONCEPT_TOKEN.sub(" ", text)
    return len(_clip_bpe().encode(rest)) + len(tokens) + 2


def fit_clip(text: str, tokens: list[str], limit: int = CLIP_MAX_TOKENS) -> str | None:
    """`text` if it fits in `limit` CLIP tokens, else its longest word-boundary prefix that
    fits and still holds every token; None when no such prefix exists."""
    if clip_tokens(text) <= limit:
        return text
    words = text.split(" ")
    lo, hi = 0, len(words)  # binary search: the longest prefix that fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if clip_tokens(" ".join(words[:mid])) <= limit:
            lo = mid
        else:
            hi = mid - 1
    cut = " ".join(words[:lo]).rstrip(" ,;:-")
    if not cut or any(t not in cut for t in tokens):
        return None
    return cut


def finish_caption(
    description: str,
    objects: list[Obj],
    fallback: str,
    synonyms: dict[str, list[str]] | None = None,
    form: str = "token_word",
    unnamed: str = "append",
    limit: int = CLIP_MAX_TOKENS,
) -> Caption:
    """A model's description -> a training caption naming every object by its token.

    `fallback` is the template caption used when the description cannot be made into one;
    the notes say why ("caption_fallback", "caption_completed", "caption_truncated",
    "caption_too_long"), for the sample's record.
    """
    if unnamed not in ("append", "template"):
        raise ValueError(f"unnamed {unnamed!r}: expected 'append' or 'template'")
    raw = description
    tokens = [o[0] for o in objects]
    text = clean_description(description)
    named = name_concepts(text, objects, synonyms, form)
    notes: list[tuple[str, str]] = []
    quoted = repr(text[:160])
    if not named.named:
        cats = sorted({o[1] for o in objects})
        notes.append(("caption_fallback", f"the description names none of {cats}: {quoted}; template caption used"))
        return _checked(fallback, tokens, limit, notes, raw)
    text = named.text
    if named.unnamed:
        missing = [next(o for o in left_to_right(objects) if o[0] == t) for t in named.unnamed]
        if unnamed == "template":
            notes.append(("caption_fallback", f"the description does not mention {named.unnamed}: {quoted}; template caption used"))
            return _checked(fallback, tokens, limit, notes, raw)
        things = [f"{_article(c)} {t} {c}" if form == "token_word" else t for t, c, _ in missing]
        listed = things[0] if len(things) == 1 else ", ".join(things[:-1]) + f" and {things[-1]}"
        text = f"{text.rstrip()}{'' if text.rstrip().endswith(('.', '!', '?')) else '.'} Also in the image: {listed}."
        notes.append(("caption_completed", f"the description does not mention {named.unnamed}; appended to it"))
    fitted = fit_clip(text, tokens, limit)
    if fitted is None:
        notes.append(("caption_too_long", f"{clip_tokens(text)} CLIP tokens > {limit} and no shorter cut keeps every token; template caption used"))
        return _checked(fallback, tokens, limit, notes, raw)
    if fitted != text:
        notes.append(("caption_truncated", f"{clip_tokens(text)} CLIP tokens > {limit}; cut at a word boundary"))
    return Caption(fitted, notes, raw)


def _checked(fallback: str, tokens: list[str], limit: int, notes: list, raw: str) -> Caption:
    if clip_tokens(fallback) > limit:  # kept whole: cutting a template would drop a token
        notes.append(("caption_too_long", f"the template caption has {clip_tokens(fallback)} CLIP tokens > {limit}"))
    return Caption(fallback, notes, raw)
