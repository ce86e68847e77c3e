"""`metarun-report`: the page of a real (tiny) sweep, checked in headless Chromium (the numbers in its tables, every
figure drawn, no request leaving the file), its bad inputs, and that it never imports torch."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from metarun.commands.report import main
from metarun.report.results import RESULTS, SCORES, cell, method_label, write_failure, write_results

REQUIRE_BROWSER = "METARUN_REQUIRE_BROWSER"  # "1" (CI): a missing Chromium fails the browser test instead of skipping
TINY = ["train.iterations=4", "train.meta_batch=2", "train.eval_every=2", "eval.tasks=6", "eval.val_tasks=4",
        "eval.chunk=6", "device=cpu"]
EVIDENCE = ROOT / "docs" / "results" / "ga_sine"  # a metarun-reproduce folder kept in the repository


@pytest.fixture(scope="module")
def sweep(forker, tmp_path_factory) -> Path:
    """2 methods (uniform, agreement weighting) x 2 seeds on sine, 4 iterations each: a real multirun."""
    root = tmp_path_factory.mktemp("report") / "sweep"
    out = forker.run("-m", "weighting=uniform,agreement", "seed=0,1", *TINY, f"hydra.sweep.dir={root}")
    assert out.returncode == 0, out.stderr
    assert len(list(root.glob("*/results.json"))) == 4
    return root


def records(folder: Path) -> list[dict]:
    return [{"status": "finished", **json.loads(p.read_text())} for p in sorted(folder.glob(f"*/{RESULTS}"))]


def error(capsys) -> str:
    """The one-paragraph error: the only line on stderr."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("metarun-report: error: "), lines
    return lines[0]


@pytest.fixture(scope="module")
def chromium() -> str:
    """Chromium's path; without it (or without playwright) the test is skipped, or fails where
    METARUN_REQUIRE_BROWSER=1 says a browser must be there (CI). Asked before the sweep is made."""
    path = shutil.which("chromium")
    reason = None
    if path is None:
        reason = "no Chromium on PATH (`apt-get install chromium`): the report is not checked in a browser"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "playwright is not installed (pip install -e '.[test]'): the report is not checked in a browser"
    if reason:
        if os.environ.get(REQUIRE_BROWSER) == "1":
            pytest.fail(f"{REQUIRE_BROWSER}=1, but {reason}", pytrace=False)
        pytest.skip(reason)
    return path


def table_rows(page, ident: str) -> list[list[str]]:
    return page.eval_on_selector_all(f"#{ident} tbody tr", "rows => rows.map(r => [...r.cells].map(c => "
                                                           "c.textContent.trim()))")


@pytest.mark.slow
def test_the_report_of_a_sweep_in_a_browser(chromium, sweep, capsys):
    from playwright.sync_api import sync_playwright

    assert main([str(sweep)]) == 0
    page_file = sweep / "report.html"
    assert capsys.readouterr().out == f"wrote {page_file}\n"
    url = page_file.as_uri()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium)
        try:
            page = browser.new_page()
            requests, errors = [], []
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url, wait_until="load")

            # The table as metarun-table builds it: a row per run here (each method has two seeds), each cell the
            # run's own mean ± CI from its results.json.
            rows = table_rows(page, "results-mse")
            assert len(rows) == 4
            for record in records(sweep):
                row = next(r for r in rows if r[0] == f"{method_label(record)} (seed={record['seed']})")
                assert row[1] == cell(record)
                assert float(row[1].split(" ± ")[0]) == pytest.approx(record["mean"], rel=1e-3)
            # A sweep over seeds: the --seeds table too, one row per method; and the one pair of methods compared.
            assert [r[0] for r in table_rows(page, "seeds-mse")] == ["maml + agreement", "maml + uniform"]
            pairs = table_rows(page, "pairs-mse")
            assert [r[:3] for r in pairs] == [["maml + agreement", "maml + uniform", "0, 1"]]

            # Every figure drawn: forest plot, a curves figure per method, the agreement runs' weights.
            boxes = page.eval_on_selector_all("svg", "els => els.map(e => { const b = e.getBoundingClientRect(); "
                                                     "return [b.width, b.height]; })")
            assert len(boxes) == 4 and all(w > 100 and h > 50 for w, h in boxes), boxes
            assert page.locator("details[open]").count() == 0  # configs collapsed
            assert page.locator("article.run").count() == 4
            assert page.locator("#runs").inner_text().count("torch ") == 4  # each run's environment
        finally:
            browser.close()
    assert requests == [url], requests  # nothing but the file itself: no font, script, image or icon
    assert errors == []


def test_a_folder_without_runs_a_file_and_a_missing_path_are_refused(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty)]) == 2
    assert "no runs under" in error(capsys)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    assert main([str(a_file)]) == 2
    assert f"{a_file} is a file, not a folder. Pass the run or multirun folder that holds it" in error(capsys)
    assert main([str(tmp_path / "nowhere")]) == 2
    assert f"no such folder: {tmp_path / 'nowhere'}" in error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "notes.txt"]
    assert list(empty.iterdir()) == []


def test_out_that_is_a_folder_is_refused(sweep, tmp_path, capsys):
    assert main([str(sweep), "--out", str(tmp_path)]) == 2
    assert f"--out {tmp_path} is a folder" in error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_without_matplotlib_it_says_how_to_install_it(sweep, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    assert main([str(sweep), "--out", str(tmp_path / "r.html")]) == 2
    assert "`pip install matplotlib`" in error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_runs_of_two_metrics_give_two_tables(sweep, tmp_path, capsys):
    mixed = tmp_path / "mixed"
    shutil.copytree(next(p.parent for p in sorted(sweep.glob(f"*/{RESULTS}"))), mixed / "sine")
    (mixed / "omniglot").mkdir()
    write_results(mixed / "omniglot", {"data": "omniglot", "task_kind": "classification", "ways": 5, "shots": 1,
                                        "queries": 15, "algo": "maml", "weighting": "uniform", "metric": "accuracy",
                                        "mean": 0.95, "ci95": 0.01, "seed": 0, "n_tasks": 600})
    assert main([str(mixed), "--out", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert 'id="results-mse"' in page and 'id="results-accuracy"' in page
    assert "These runs score 2 different metrics (accuracy, mse): one table per metric" in page
    assert "95.00 ± 1.00" in page


def test_one_run_and_a_failed_job(sweep, tmp_path):
    one = tmp_path / "one"
    shutil.copytree(sweep / sorted(p.parent.name for p in sweep.glob(f"*/{RESULTS}"))[0], one)
    (one / "report.html").unlink(missing_ok=True)
    assert main([str(one)]) == 0
    page = (one / "report.html").read_text()
    assert "One run: 1 run(s), 1 finished." in page and page.count('<article class="run"') == 1

    failed = tmp_path / "sweep"
    shutil.copytree(sweep, failed, ignore=shutil.ignore_patterns("report.html"))
    job = next(p.parent for p in sorted(failed.glob(f"*/{RESULTS}")))
    (job / RESULTS).unlink()
    (job / SCORES).unlink()
    write_failure(job, "Diverged: the loss became nan at iteration 3", 1)
    assert main([str(failed), "--out", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert '<td class="failed">failed</td>' in page  # its cell is kept, marked
    assert "Diverged: the loss became nan at iteration 3" in page and "3 finished, 1 failed" in page


def test_a_reproduction_shows_its_verdicts(tmp_path):
    assert main([str(EVIDENCE), "--out", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "A reproduction of ga_sine" in page and 'id="reproduction-ga_sine"' in page
    table = page[page.index('id="reproduction-ga_sine"'):].split("</table>")[0]
    # The numbers metarun-reproduce --table-only printed for these runs (docs/results/ga_sine/reproduce.md).
    assert re.search(r"<th scope=\"row\">reptile</th><td>0\.233 ± 0\.067</td><td>3</td>", table), table
    assert re.search(r"<th scope=\"row\">ga_reptile</th><td>0\.197 ± 0\.047</td><td>3</td>", table), table


def test_the_report_never_imports_torch(sweep, tmp_path):
    """Not for finished runs, nor for a failed job, whose kind and metric come from its config."""
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy, ignore=shutil.ignore_patterns("report.html"))
    job = next(p.parent for p in sorted(copy.glob(f"*/{RESULTS}")))
    (job / RESULTS).unlink()
    write_failure(job, "Diverged: the loss became nan at iteration 3", 1)
    code = ("import sys; from metarun.commands.report import main; code = main(sys.argv[1:]); "
            "assert code == 0, code; assert 'torch' not in sys.modules, 'torch was imported'")
    out = subprocess.run([sys.executable, "-c", code, str(copy), "--out", str(tmp_path / "r.html")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "r.html").is_file()
