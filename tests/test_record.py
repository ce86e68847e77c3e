"""The run record's fields are declared once (metarun.report.record), and every reader takes them from there."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from conftest import ROOT
from metarun.report import record
from metarun.report.compare import stream
from metarun.report.results import ResultsError, read_results, row_labels
from metarun.report.runs import Run
from metarun.report.settings import run_settings

SMALL = ("train.iterations=2", "train.meta_batch=2", "eval.tasks=3", "eval.val_tasks=0", "eval.chunk=3")


def test_the_declaration_has_each_field_once_with_a_kind():
    names = [f.name for f in record.FIELDS]
    assert len(names) == len(set(names))
    assert {f.kind for f in record.FIELDS} == {"setting", "stream", "measurement", "identity"}


@pytest.mark.slow
def test_every_field_a_run_writes_is_declared(forker, tmp_path, synthetic_omniglot):
    """A sine run, an image run and the committed full-budget records: nothing metarun writes is undeclared."""
    sine = tmp_path / "sine"
    assert forker.run(*SMALL, f"hydra.run.dir={sine}").returncode == 0
    images = tmp_path / "omniglot"
    splits = synthetic_omniglot.splits["vinyals"]
    result = forker.run("data=omniglot", "model=conv4", "ways=3", "shots=1", "queries=1", "model.filters=4",
                        f"data.root={synthetic_omniglot.data}", f"data.split_dir={splits}",
                        f"data.cache_dir={tmp_path / 'cache'}", *SMALL, f"hydra.run.dir={images}")
    assert result.returncode == 0, result.err
    records = [json.loads((d / "results.json").read_text()) for d in (sine, images)]
    records += [json.loads(p.read_text()) for p in (ROOT / "docs" / "results").rglob("results.json")]
    undeclared = {k for r in records for k in r} - set(record.BY_NAME)
    assert undeclared == set()


def test_a_record_without_a_required_field_is_refused(tmp_path):
    fields = {name: 1 for name in record.required()} | {"format": 1}
    for name in record.required():
        path = tmp_path / f"without-{name}.json"
        path.write_text(json.dumps({k: v for k, v in fields.items() if k != name}))
        with pytest.raises(ResultsError, match=f"lacks {name},"):
            read_results(path)


def test_a_new_field_is_one_declaration(monkeypatch, tmp_path):
    """Declared as a setting, a new field names runs apart in tables and counts among a run's settings; declared
    as the stream, it keeps runs that differ in it from being paired; as a measurement it does neither."""
    runs = pd.DataFrame([{"method": "maml + uniform", "setting": "s", "run_dir": str(tmp_path / name), "seed": 0,
                          "mean": mean, "new_field": value} for name, mean, value in (("a", 0.1, 1), ("b", 0.2, 2))])

    def declare(kind: str) -> None:
        fields = (*record.FIELDS, record.Field("new_field", kind, "a new thing"))
        monkeypatch.setattr(record, "FIELDS", fields)
        monkeypatch.setattr(record, "BY_NAME", {f.name: f for f in fields})

    declare("setting")
    assert list(row_labels(runs)) == ["maml + uniform (new_field=1)", "maml + uniform (new_field=2)"]
    assert run_settings(tmp_path / "a", {"new_field": 1, "mean": 0.1}) == {"new_field": 1}
    declare("measurement")
    assert list(row_labels(runs)) == ["maml + uniform (run a)", "maml + uniform (run b)"]
    assert run_settings(tmp_path / "a", {"new_field": 1, "mean": 0.1}) == {}
    declare("stream")
    one = Run(tmp_path / "none", {"new_field": 1, "data": "sine"})
    assert stream(one) == {"data.name": "sine", "new_field": 1}


def test_a_field_of_a_users_dataset_is_a_setting():
    assert record.kind("my_dataset_resolution") == "setting"
    assert record.describes_the_run("my_dataset_resolution") and not record.describes_the_run("seconds")
