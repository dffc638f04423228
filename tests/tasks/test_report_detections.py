"""The report's rows carry the class checks' detections for dropped samples (drawn as boxes
over the final by tasks/views/report.js), and nothing for kept ones."""

from __future__ import annotations

from gen4gen.infra.records import Box, ClassCheckConfig, LayoutPlan, Reason, Sample
from gen4gen.models.detect import checks
from gen4gen.models.detect.nanodet import Detection
from gen4gen.tasks.views.report import STAGES, Thumb, _row


def sample(status: str) -> Sample:
    plan = LayoutPlan(composition="dog-mug", index=0, canvas=512, scene="a lawn", seed=0,
                      boxes=[Box(concept="dog", x=0, y=0, w=200, h=200)], photos={"dog": "file:///dog.png"})
    found = [Detection("dog", 0.71, (0.0, 0.0, 200.0, 200.0)), Detection("person", 0.55, (300.0, 100.0, 500.0, 500.0))]
    measures = checks.detections_measures(found, (512, 512), ClassCheckConfig())
    reasons = [Reason(code="extra_object", stage="filter", detail="person 0.55")] if status == "dropped" else []
    return Sample(id="00000-abc", composition="dog-mug", concepts=["dog"], tokens=["<dog>"], plan=plan,
                  status=status, reasons=reasons, measures=measures)


def test_a_dropped_samples_row_holds_its_detections_and_a_kept_ones_none():
    thumbs = {k: Thumb("data:image/jpeg;base64,") for k in STAGES}
    photo = {"file:///dog.png": Thumb(None, "not found")}
    row = _row(sample("dropped"), thumbs, photo, {"file:///dog.png": "p0"}, ["dog-mug"], False)
    dog, person = row[9]
    assert dog[:2] == ["dog", 0.71] and dog[2:] == [0.0, 0.0, 0.3906, 0.3906]
    assert person[0] == "person" and person[2:] == [0.5859, 0.1953, 0.9766, 0.9766]
    assert _row(sample("kept"), thumbs, photo, {"file:///dog.png": "p0"}, ["dog-mug"], False)[9] == []
