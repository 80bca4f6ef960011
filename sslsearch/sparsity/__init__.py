"""Structured Sparsity Learning (Wen et al. 2016): group-Lasso penalties and group criteria."""

from __future__ import annotations

from sslsearch.sparsity._criteria import (
    CRITERIA,
    criterion_scores,
    list_criteria,
    moments,
    scores_from_moments,
)
from sslsearch.sparsity._penalty import (
    SSL_TYPES,
    SSLPenalty,
    group_norms,
    group_sparsity,
    parse_lambda,
    ssl_penalty,
)

__all__ = [
    "CRITERIA",
    "SSL_TYPES",
    "SSLPenalty",
    "criterion_scores",
    "group_norms",
    "group_sparsity",
    "list_criteria",
    "moments",
    "parse_lambda",
    "scores_from_moments",
    "ssl_penalty",
]
