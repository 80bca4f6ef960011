"""Structured Sparsity Learning (Wen et al. 2016) over dependency groups: penalties, criteria."""

from __future__ import annotations

from sslsearch.sparsity._criteria import (
    CRITERIA,
    NORMALIZERS,
    Criterion,
    criterion_scores,
    describe_criteria,
    list_criteria,
    moments,
    normalize,
    scores_from_moments,
)
from sslsearch.sparsity._groups import (
    COLS,
    CONV_IN,
    ROWS,
    Axis,
    Group,
    GroupSet,
    Slice,
    build_groups,
    default_example,
    final_layer,
    model_groups,
)
from sslsearch.sparsity._penalty import (
    SSLPenalty,
    group_norms,
    ssl_penalty,
    unit_norms,
)
from sslsearch.sparsity._terms import SSL_TYPE_GROUPS, SSL_TYPES, parse_lambda

__all__ = [
    "COLS",
    "CONV_IN",
    "CRITERIA",
    "NORMALIZERS",
    "ROWS",
    "SSL_TYPES",
    "SSL_TYPE_GROUPS",
    "Axis",
    "Criterion",
    "Group",
    "GroupSet",
    "SSLPenalty",
    "Slice",
    "build_groups",
    "criterion_scores",
    "default_example",
    "describe_criteria",
    "final_layer",
    "group_norms",
    "list_criteria",
    "model_groups",
    "moments",
    "normalize",
    "parse_lambda",
    "scores_from_moments",
    "ssl_penalty",
    "unit_norms",
]
