"""Table units and formatting (sslsearch/report/_table.py)."""

from __future__ import annotations

import pytest

from sslsearch.report._rows import baseline_of
from sslsearch.report._table import (
    SEED_COLUMNS,
    TableUnits,
    count_unit,
    fmt,
    front_columns,
    front_table,
    seed_row,
    size_unit,
)

from .report_data import baseline, md_tables, point


@pytest.mark.parametrize(
    ("values", "suffix"),
    [([15.5e9, 7.6e9], "G"), ([2.39e6, 8.2e4], "M"), ([999_999.0], "K"), ([12.0], ""), ([], "")],
)
def test_count_unit_keeps_the_largest_value_at_least_one(values: list[float], suffix: str) -> None:
    u = count_unit(values)
    assert u.suffix == suffix
    if values:
        assert max(values) / u.factor >= 1


@pytest.mark.parametrize(
    ("values", "suffix"), [([134.68, 55.9], "MB"), ([0.9, 0.05], "KB"), ([2500.0], "GB")]
)
def test_size_unit(values: list[float], suffix: str) -> None:
    assert size_unit(values).suffix == suffix


@pytest.mark.parametrize(
    ("x", "text"),
    [
        (2393472, "2.393"),
        (81520, "0.08152"),
        (12340, "0.01234"),
        (None, "-"),
        (15, "0.000015"),
    ],
)
def test_fmt_four_significant_digits_never_exponent(x: float | None, text: str) -> None:
    assert fmt(x, count_unit([2.4e6])) == text


def test_fmt_small_values_without_exponent() -> None:
    assert fmt(1.234e-5) == "0.00001234"
    assert fmt(123456.0) == "123456"


def test_units_follow_each_table() -> None:
    """The digits model's table is in M FLOPs and K params, a VGG-16's in G and M."""
    small = [point("t001", 0.5, 97.0)]
    assert TableUnits.of(small).flops.suffix == "M"
    assert TableUnits.of(small).params.suffix == "K"
    big = [
        point(
            "t001",
            0.5,
            80.0,
            flops=7.67e9,
            params=3.5e7,
            size_mb=130.9,
            flops_before=15.51e9,
            params_before=1.3468e8,
            size_mb_before=538.7,
        )
    ]
    u = TableUnits.of(big)
    assert (u.flops.suffix, u.params.suffix, u.size.suffix) == ("G", "M", "MB")
    text, _ = front_table(big, None)
    t = md_tables(text)[0]
    assert t["header"] == front_columns(u)
    cells = dict(zip(t["header"], t["rows"][0]))
    assert cells["flops/G"] == "15.51" and cells["FLOPs after pruning/G"] == "7.67"
    assert cells["params after pruning/M"] == "35" and cells["model size/MB"] == "538.7"


def test_front_table_baseline_row_and_optional_columns() -> None:
    rows = [
        point(
            "t001",
            0.5,
            97.0,
            n_seeds=3,
            top1_mean=96.5,
            top1_std=0.4,
            test_top1_mean=95.0,
            on_mean_front=False,
        )
    ]
    b = baseline_of([baseline(98.0), baseline(97.0, tid="b001")])
    assert b is not None and b.runs == 2 and b.get("top1") == pytest.approx(97.5)
    text, _ = front_table(rows, b, latency=True, confirmed=True)
    t = md_tables(text)[0]
    assert t["header"][-6:] == [
        "latency/ms",
        "speed-up",
        "re-runs",
        "re-run top1 mean ± sd",
        "re-run test top1 mean",
        "on re-run front",
    ]
    base, row = (dict(zip(t["header"], r)) for r in t["rows"])
    assert base["prune type"] == "dense baseline" and base["top1"] == "97.50"
    assert row["top-1 drop"] == "0.50" and row["re-runs"] == "3"
    assert row["re-run top1 mean ± sd"] == "96.50 ± 0.40"
    assert row["re-run test top1 mean"] == "95.00" and row["on re-run front"] == "no (dominated)"
    plain = md_tables(front_table(rows, None)[0])[0]["header"]
    assert "latency/ms" not in plain and "re-runs" not in plain


def test_seed_row_keeps_the_seed_columns() -> None:
    r = seed_row(point("t001", 0.2, 80.81, flops=7.67e9, flops_before=15.51e9))
    assert list(r) == list(SEED_COLUMNS)
    assert r["flops/G"] == "15.51" and r["FLOPs after pruning"] == "7.67" and r["top1"] == "80.810"
    assert r["pruning ratio"] == "20.00%"


def test_speedup_only_against_a_baseline_timed_the_same_way() -> None:
    from sslsearch.report import derived

    b = baseline_of([baseline(99.0)])
    same = derived(point("t001", 0.5, 98.0), b)
    assert same["speedup"] == pytest.approx(0.5 / (0.1 + 0.4 * 0.25))
    other = derived(point("t001", 0.5, 98.0, latency_threads=4), b)
    assert other["speedup"] is None and other["flops_reduction"] == pytest.approx(4.0)
    none = derived(point("t001", 0.5, 98.0), None)
    assert none["top1_drop"] is None and none["speedup"] is None
    assert none["flops_reduction"] == pytest.approx(4.0)  # against flops_before


def test_front_tables_show_test_top1_beside_validation() -> None:
    rows = [point("t001", 0.5, 97.0, test_top1=95.25), point("t002", 0.7, 93.0)]
    text, _ = front_table(rows, baseline_of([baseline(98.0, test_top1=96.5)]))
    t = md_tables(text)[0]
    cells = [dict(zip(t["header"], r)) for r in t["rows"]]
    assert t["header"].index("test top1") == t["header"].index("top5") + 1
    assert [c["test top1"] for c in cells] == ["96.50", "95.25", "-"]  # baseline, point, unknown
    assert [c["top1"] for c in cells] == ["98.00", "97.00", "93.00"]


def test_the_baseline_line_gives_test_top1_too() -> None:
    from sslsearch.report._markdown import baseline_text

    b = baseline_of([baseline(98.0, test_top1=96.5)])
    assert "top-1 98.00 % (test 96.50 %)" in baseline_text(b, "")
    assert "(test" not in baseline_text(baseline_of([baseline(98.0)]), "")
