"""The background scene library: what the planner picks from and the offline repainter draws.

Each scene is the text that goes into captions and repaint prompts ("on a kitchen table")
plus what the offline repainter needs to paint it: where the horizon sits, the colours
of the upper part (wall or sky) and of the ground, and which texture the ground has.
Scenes are keyed by category so a cat lands in a living room and a motorcycle on a street.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Scene:
    text: str
    horizon: float  # share of the canvas height above the ground line
    upper: tuple[tuple[int, int, int], tuple[int, int, int]]  # top and bottom colour
    ground: tuple[tuple[int, int, int], tuple[int, int, int]]  # far and near colour
    ground_texture: str  # a skimage texture: grass, gravel, brick, or "wood" / "plain"
    upper_texture: str = "plain"  # "plain", "brick" (a wall), "sky" (clouds)
    # What the offline repainter draws at the horizon so the scene reads at a glance:
    # "skirting" (a room's baseboard), "table_edge", "sidewalk" (pavement and kerb in front
    # of a building), "hedge", "hills", "dunes", "sea" (water between sky and sand), "none".
    detail: str = "none"


SCENES: dict[str, Scene] = {
    s.text: s
    for s in [
        Scene("in a living room", 0.55, ((214, 200, 178), (190, 172, 148)), ((120, 84, 56), (92, 62, 40)), "wood", detail="skirting"),
        Scene("on a kitchen table", 0.45, ((226, 222, 210), (200, 194, 180)), ((150, 108, 70), (118, 82, 52)), "wood", detail="table_edge"),
        Scene("in a garden", 0.45, ((150, 196, 236), (210, 228, 240)), ((92, 140, 60), (60, 104, 40)), "grass", "sky", detail="hedge"),
        Scene("on the grass", 0.35, ((160, 200, 238), (220, 232, 242)), ((100, 150, 64), (64, 112, 42)), "grass", "sky", detail="hills"),
        Scene("on a city street", 0.5, ((176, 150, 130), (150, 130, 116)), ((112, 112, 116), (84, 84, 88)), "gravel", "brick", detail="sidewalk"),
        Scene("in a desert", 0.5, ((120, 170, 226), (230, 216, 190)), ((214, 178, 128), (190, 150, 100)), "gravel", "sky", detail="dunes"),
        Scene("on a beach", 0.5, ((110, 170, 230), (200, 224, 240)), ((226, 206, 160), (206, 184, 136)), "gravel", "sky", detail="sea"),
        Scene("in an office", 0.55, ((208, 212, 214), (186, 190, 194)), ((110, 110, 120), (88, 88, 98)), "plain", detail="skirting"),
        Scene("in a museum hall", 0.6, ((232, 226, 214), (210, 202, 188)), ((170, 160, 146), (140, 130, 118)), "plain", "brick", detail="skirting"),
        Scene("at a launch site", 0.55, ((96, 150, 214), (190, 210, 230)), ((140, 136, 128), (110, 106, 100)), "gravel", "sky", detail="hills"),
    ]
}

# Category word -> scenes it plausibly appears in, best first.
SCENES_BY_CATEGORY: dict[str, list[str]] = {
    "cat": ["in a living room", "in a garden", "on the grass", "on a kitchen table"],
    "dog": ["in a garden", "on the grass", "in a living room", "on a beach"],
    "mug": ["on a kitchen table", "in an office", "in a living room"],
    "cup": ["on a kitchen table", "in an office", "in a living room"],
    "person": ["in a garden", "on a city street", "in an office", "in a museum hall", "on a beach"],
    "astronaut": ["at a launch site", "in a museum hall", "in a desert"],
    "rocket": ["at a launch site", "in a desert", "in a museum hall"],
    "motorcycle": ["on a city street", "in a desert", "in a museum hall", "on a beach"],
    "plant": ["in a living room", "in a garden", "in an office"],
    "houseplant": ["in a living room", "in a garden", "in an office"],
}
DEFAULT_SCENES = ["in a garden", "in a living room", "on a city street", "in a museum hall"]


def scenes_for(categories: list[str]) -> list[str]:
    """Scenes ranked by how many of the categories list them (ties: earlier first)."""
    score: dict[str, float] = {}
    for cat in categories:
        for rank, text in enumerate(SCENES_BY_CATEGORY.get(cat.lower(), DEFAULT_SCENES)):
            score[text] = score.get(text, 0.0) + 1.0 - 0.1 * rank
    return sorted(score, key=lambda t: -score[t])


def scene(text: str) -> Scene:
    """The scene for a text; a text outside the library gets a stable generic look."""
    if text in SCENES:
        return SCENES[text]
    names = sorted(SCENES)
    pick = int(hashlib.sha256(text.encode()).hexdigest(), 16) % len(names)
    base = SCENES[names[pick]]
    return replace(base, text=text)
