"""Exact statistics, standard library only: binomial bounds, paired tests, sequential designs.

Pure functions with their method in each docstring; imports only ``_errors``.
"""

from ._exact import (
    PairCounts,
    clopper_pearson_upper,
    e_value_against_better,
    e_value_against_worse,
    exact_paired_p_value,
    exact_paired_upper_bound,
    min_cases_for_failure_bound,
    min_cases_to_accept,
    sequential_lower_bound,
    sequential_upper_bound,
)
from ._group import GroupBoundary, group_boundary

__all__ = [
    "GroupBoundary",
    "PairCounts",
    "clopper_pearson_upper",
    "e_value_against_better",
    "e_value_against_worse",
    "exact_paired_p_value",
    "exact_paired_upper_bound",
    "group_boundary",
    "min_cases_for_failure_bound",
    "min_cases_to_accept",
    "sequential_lower_bound",
    "sequential_upper_bound",
]
