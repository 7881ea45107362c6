"""The table of scripts/bench_recognizer.py: one cell per column, and a speech-only total beside the total."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from bench_recognizer import SetScore, table  # noqa: E402

ARGS = SimpleNamespace(model=Path("models/whisper-tiny.en-int8"), language="en", threads=2, beam=5, prompt=None)


def rows(text: str) -> list[list[str]]:
    return [line.strip("|").split("|") for line in text.splitlines() if line.startswith("|")]


def test_every_row_has_a_cell_per_column_and_speech_is_totalled_apart_from_nonspeech() -> None:
    scores = [SetScore("real_en", 10.0, ["a cat"], ["a cat"], ["a hat"], 1.0, 2.0),
              SetScore("nonspeech", 5.0, [""], [""], ["you"], 0.5, 5.0)]
    table_rows = rows(table(scores, 200.0, ARGS))
    assert {len(row) for row in table_rows} == {len(table_rows[0])}
    totals = {row[0].strip(): [cell.strip() for cell in row] for row in table_rows if row[0].strip().startswith("**")}
    header = [cell.strip() for cell in table_rows[0]]
    speech, total = totals["**speech sets**"], totals["**total**"]
    assert (speech[header.index("ours s")], speech[header.index("fw s")], speech[header.index("speed-up")]) == ("1.0", "2.0", "2.00x")
    assert (total[header.index("ours s")], total[header.index("fw s")], total[header.index("speed-up")]) == ("1.5", "7.0", "4.67x")


def test_sets_all_with_references_get_one_total() -> None:
    scores = [SetScore("real_en", 10.0, ["a cat"], ["a cat"], ["a cat"], 1.0, 2.0)]
    assert [row[0].strip() for row in rows(table(scores, 200.0, ARGS))].count("**total**") == 1
    assert "speech sets" not in table(scores, 200.0, ARGS)
