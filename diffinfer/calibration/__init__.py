"""Calibration of posteriors: metrics over many test maps, references, studies and
recalibration."""

from diffinfer.calibration.metrics import (
    contraction,
    ecdf,
    ecdf_band,
    hpd_credibility,
    normalised_ranks,
    rank_uniformity,
    sbc_ranks,
    tarp_bootstrap,
    tarp_statistics,
    thin_to_independent,
    uniformity_check,
    z_score_summary,
    z_scores,
)

__all__ = [
    "contraction",
    "ecdf",
    "ecdf_band",
    "hpd_credibility",
    "normalised_ranks",
    "rank_uniformity",
    "sbc_ranks",
    "tarp_bootstrap",
    "tarp_statistics",
    "thin_to_independent",
    "uniformity_check",
    "z_score_summary",
    "z_scores",
]
