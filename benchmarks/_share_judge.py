"""The judge benchmarks/rounds.py uses: the rules, then a known share of samples dropped."""

from __future__ import annotations

from gen4gen.infra.records import Reason
from gen4gen.models.score.judge import RulesJudge

GOLDEN = 0.6180339887  # spreads the dropped indices evenly: index * GOLDEN mod 1 < share


class ShareJudge(RulesJudge):
    """The rules, then the samples whose index falls in the share dropped (`benchmark_drop`)."""

    def __init__(self, share: float = 0.5, detect_threshold=None, min_similarity=None, vision=None,
                 **thresholds):
        super().__init__(**thresholds)
        self.share = share

    def judge_batch(self, items):
        verdicts = super().judge_batch(items)
        for item, verdict in zip(items, verdicts):
            index = int(item.image_uri.rsplit("/", 1)[1][:5])  # stage files: {index:05d}-...
            if (index * GOLDEN) % 1 < self.share:
                verdict.reasons.append(
                    Reason(code="benchmark_drop", stage="filter", detail=f"share {self.share}"))
        return verdicts


def share_judge(share: float):
    """A backend factory for the registry (defined here: its module is the backend's code)."""

    def build(**options) -> ShareJudge:
        return ShareJudge(share=share, **options)

    return build
