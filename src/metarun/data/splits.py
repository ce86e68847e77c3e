"""The published class splits: shipped in the package (metarun/splits/), or a folder the user names."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from metarun.data.cache import DataError, expand

PACKAGED = Path(__file__).resolve().parents[1] / "splits"
CSV_COLUMNS = ["filename", "label"]


class SplitFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def text(self) -> str:
        try:
            return self.path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"cannot read the split file {self.path} ({e}). Point `data.split_dir` at a folder "
                            "holding it, or leave `data.split_dir` empty for the packaged splits.") from None

    def characters(self, known: Sequence[str]) -> list[str]:
        """Omniglot: one `Alphabet/characterNN` per line, each of which must exist in the data."""
        names = [line.strip() for line in self.text().splitlines() if line.strip()]
        present = set(known)
        unknown = [n for n in names if n not in present]
        if unknown:
            raise DataError(
                f"the split file {self.path} names {len(unknown)} character(s) that are not in the data "
                f"(e.g. {unknown[0]!r}). Fix the file, or leave `data.split_dir` empty for the packaged splits."
            )
        if len(set(names)) != len(names):
            raise DataError(f"the split file {self.path} lists a character twice; each line must be unique.")
        return names

    def rows(self) -> list[tuple[str, str]]:
        """miniImageNet: a CSV with the columns filename,label."""
        reader = csv.reader(self.text().splitlines())
        header = next(reader, None)
        if header != CSV_COLUMNS:
            raise DataError(
                f"the split file {self.path} has columns {header}; expected {CSV_COLUMNS} (Ravi & Larochelle's "
                "format). Fix the file, or leave `data.split_dir` empty for the packaged splits."
            )
        rows = [tuple(r) for r in reader if r]
        bad = [r for r in rows if len(r) != 2]
        if bad or not rows:
            raise DataError(f"the split file {self.path} has {'malformed rows' if bad else 'no rows'}; every row "
                            "must be `filename,label`.")
        return rows  # type: ignore[return-value]


def split_file(dataset: str, name: str, split_dir: str | None) -> SplitFile:
    folder = expand(split_dir) if split_dir else PACKAGED / dataset
    return SplitFile(folder / name)
