"""Paired significance test between two methods over per-image scores (PixelCAM Table 2)."""

from __future__ import annotations

import numpy as np
from scipy import stats

from histocam.core.results import PairedTest


def paired_ttest(scores_a, scores_b) -> PairedTest:
    """Two-sided paired Student t-test (``scipy.stats.ttest_rel``) of b − a over shared images.

    Pairs where either score is NaN (e.g. AP of an image without foreground) are dropped.
    """
    a = np.asarray(scores_a, dtype=float)
    b = np.asarray(scores_b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired scores need equal lengths, got {a.shape} and {b.shape}")
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    if a.size < 2:
        raise ValueError("a paired t-test needs at least two paired scores")
    result = stats.ttest_rel(b, a)
    return PairedTest(test="paired two-sided Student t-test (scipy.stats.ttest_rel), b - a",
                      t=float(result.statistic), p=float(result.pvalue), n=int(a.size),
                      mean_difference=float((b - a).mean()))
