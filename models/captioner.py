"""The template captioner: names every concept by its token and states the scene.

The paper captioned part of MyCanvas as "c1 and c2 and ... {scene}"; this backend writes
that kind of caption with a little more shape: each token is followed by its category
word ("a <chelsea> cat"), the way Custom Diffusion and DreamBooth prompts are written,
objects are named left to right, and two objects get a spatial relation.
"""

from __future__ import annotations

import numpy as np

OPENINGS = ("a photo of", "a picture of", "a realistic photo of")


class TemplateCaptioner:
    name = "template"

    def __init__(self, openings: tuple[str, ...] | list[str] = OPENINGS):
        if not openings:
            raise ValueError("openings: need at least one caption opening")
        self.openings = tuple(openings)

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
