"""report.html: self-contained, every trial embedded, opens offline (report/_html.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from sslsearch.report import export_experiment
from sslsearch.report._history import trial_history
from sslsearch.report._html import DATA_ID

from .report_data import baseline, experiment, random_rows


class _Page(HTMLParser):
    """Scripts (attributes and text), links, and the cells of the sortable table."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.links: list[dict[str, str | None]] = []
        self.trial_cells: list[list[str]] = []
        self._script: dict[str, str | None] | None = None
        self._text: list[str] = []
        self._in_sortable = False
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script":
            self._script, self._text = a, []
        elif tag == "link":
            self.links.append(a)
        elif tag == "table" and a.get("class") == "sortable":
            self._in_sortable = True
        elif tag == "tr" and self._in_sortable:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._script is not None:
            self.scripts.append((self._script, "".join(self._text)))
            self._script = None
        elif tag == "table":
            self._in_sortable = False
        elif tag == "tr" and self._row is not None:
            if self._row:
                self.trial_cells.append(self._row)
            self._row = None
        elif tag == "td" and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            self._text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def _with_history(exp: Path, rows: list[dict[str, Any]], ids: list[str]) -> None:
    """Tune-style result.json lines (one per epoch report) for the trials ``ids``."""
    for r in rows:
        if r["trial_id"] not in ids:
            continue
        d = exp / r["trial_dir"]
        d.mkdir()
        lines = []
        for g in range(1, 7):
            phase, epoch = ("ssl", g) if g <= 4 else ("finetune", g - 4)
            lines.append(
                json.dumps(
                    {
                        "phase": phase,
                        "epoch": epoch,
                        "global_epoch": g,
                        "loss": 1.0 / g,
                        "val_top1": 80 + g,
                        "trial_id": r["trial_id"],
                        "done": False,
                    }
                )
            )
        lines.append(json.dumps({"final": True, "status": "ok", "global_epoch": 7}))
        (d / "result.json").write_text("\n".join(lines) + "\n")


def _report(tmp_path: Path) -> tuple[Path, list[dict[str, Any]], dict[str, Any]]:
    rows = [*random_rows(14), *random_rows(6, seed=2, role="reference"), baseline(99.0)]
    rows[2].update(status="error", error="RuntimeError: <boom> & </script>", top1=None)
    exp = experiment(tmp_path, rows)
    probe = export_experiment(str(exp), ["parquet"])
    pareto = sorted({r["trial_id"] for f in probe["fronts"] for r in f.rows})
    _with_history(exp, rows, pareto[:2])
    out = export_experiment(str(exp), ["html", "parquet"])
    return exp, rows, out


def test_report_html_embeds_every_trial_and_plotly(tmp_path: Path) -> None:
    from plotly.offline import get_plotlyjs

    exp, _, out = _report(tmp_path)
    page = (exp / "report.html").read_text()
    p = _Page()
    p.feed(page)
    # self-contained: no external script or stylesheet, plotly.js inline
    assert not p.links and all("src" not in a for a, _ in p.scripts)
    assert any(text == get_plotlyjs() for _, text in p.scripts)
    # the embedded data holds every trial of trials.parquet, the fronts and the baseline
    data = json.loads(next(t for a, t in p.scripts if a.get("id") == DATA_ID))
    parquet_ids = pq.read_table(exp / "trials.parquet").column("trial_id").to_pylist()
    assert sorted(t["trial_id"] for t in data["trials"]) == sorted(parquet_ids)
    assert any(t["error"] == "RuntimeError: <boom> & </script>" for t in data["trials"])
    assert data["baseline"]["trial_ids"] == ["b000"]
    for f in out["fronts"]:
        got = next(d for d in data["fronts"] if d["name"] == f.name and d["role"] == f.role)
        assert got["trial_ids"] == [r["trial_id"] for r in f.rows]
        assert got["hypervolume"] == pytest.approx(f.hypervolume)
    # the table of all trials: one row per trial
    assert sorted(c[0] for c in p.trial_cells) == sorted(parquet_ids)
    # figures: a front per two-objective front, hypervolume over trials, training curves
    figures = re.findall(r'Plotly\.newPlot\(\s*"([^"]+)"', page)
    assert len(figures) == 3 + 1 + 1
    assert "No per-epoch history" not in page
    curves = page[page.index("Training curves of the Pareto points") :]
    pareto = sorted({r["trial_id"] for f in out["fronts"] for r in f.rows})
    assert pareto[0] in curves and pareto[1] in curves


def test_trial_history_reads_tune_result_lines(tmp_path: Path) -> None:
    rows = random_rows(2)
    exp = experiment(tmp_path, rows)
    _with_history(exp, rows, [rows[0]["trial_id"]])
    h = trial_history(str(exp), rows[0])
    assert [e["global_epoch"] for e in h] == [1, 2, 3, 4, 5, 6]
    assert [e["phase"] for e in h] == ["ssl"] * 4 + ["finetune"] * 2
    assert trial_history(str(exp), rows[1]) == []  # no directory: no curve, no error
    inline = {"history": json.dumps([{"phase": "ssl", "epoch": 1, "global_epoch": 1, "loss": 2.0}])}
    assert trial_history(str(exp), inline)[0]["loss"] == 2.0


def _chromium() -> str | None:
    return next(
        (p for n in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(n))),
        None,
    )


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="no chromium installed (apt-get install chromium)")
def test_report_html_renders_offline_in_headless_chromium(tmp_path: Path) -> None:
    exp, _, _ = _report(tmp_path)
    # every network request goes to a closed port: the page must render without any
    cmd = [
        str(_chromium()),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--proxy-server=127.0.0.1:9",
        "--virtual-time-budget=5000",
        "--dump-dom",
        (exp / "report.html").as_uri(),
    ]
    env = {**os.environ, "HOME": str(tmp_path)}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    dom = out.stdout
    # plotly drew every figure (its SVG roots exist only after plotly.js ran)
    assert dom.count('class="plot-container plotly"') == 5
    assert dom.count("main-svg") >= 5
