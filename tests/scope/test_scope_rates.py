"""The flagship's scope on real shared photos: accepted and rejected at the rates its card states.

The card's figures (``scope_report.json``, fp32) are on the whole test split and on out-of-scope
sources held out (leave-one-source-out when the method trained on out-of-scope photos). Here a
deterministic sample is run through the serving Predictor; rates must match within 3 binomial
standard deviations + 3 points. Out-of-scope photos the shipped head trained on can only be
rejected more often than on held-out sources, so for outlier-exposure methods that side is
one-sided.
"""

from __future__ import annotations

import csv
import math

import pytest

from skyclass.core.predictor import Predictor
from tests.conftest import BUNDLED_MODEL, DATA_ROOT, REPO_ROOT
from tests.scope.support import out_of_scope_photos, scope_report

TEST_SPLIT = REPO_ROOT / "docs" / "data" / "splits-reviewed" / "test.csv"
GROUPS = {"aircraft": ["aircraft"], "scenes": ["scene"], "everyday": ["everyday", "insect"]}


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(BUNDLED_MODEL, threads=1)


@pytest.fixture(scope="module")
def figures() -> dict:
    report = scope_report()
    (chosen,) = [f for f in report["figures"]["fp32"] if f["method"] == report["method"]]
    return chosen


def _tolerance(p: float, n: int) -> float:
    return 3 * math.sqrt(max(p * (1 - p), 0.01) / n) + 0.03


def test_in_scope_test_photos_kept_at_the_stated_rate(predictor: Predictor, figures: dict) -> None:
    with TEST_SPLIT.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))[::4]
    kept = [predictor.predict((DATA_ROOT / r["path"]).read_bytes()).in_scope for r in rows]
    rate = sum(kept) / len(kept)
    assert abs(rate - figures["test_kept"]) <= _tolerance(figures["test_kept"], len(kept)), rate


@pytest.mark.parametrize("category", ["aircraft", "scenes", "everyday"])
def test_out_of_scope_photos_accepted_at_most_the_stated_rate(
    predictor: Predictor, figures: dict, category: str
) -> None:
    photos = [p for g in GROUPS[category] for p in out_of_scope_photos(g, step=6)]
    accepted = [predictor.predict(p.read_bytes()).in_scope for p in photos]
    rate = sum(accepted) / len(accepted)
    stated = figures["fpr"][category]
    assert rate <= stated + _tolerance(stated, len(accepted)), rate
    if not figures["outlier_exposure"]:
        assert rate >= stated - _tolerance(stated, len(accepted)), rate
