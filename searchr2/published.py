"""The published numbers (Search-R2 paper, arXiv 2602.03647; docs/method.md#published-numbers), as
data, so that tables can show them beside this run's.

These are the Search-R2 paper's figures (Table 2 and the Table 8 ablation ladder), EM ×100 on the
real benchmarks with the wiki-18 corpus and an E5 retriever. They are never compared as if they were
measured here: every table that prints them labels each row with its model and corpus, and says which
Search-R1 row it is (the paper's Table 2 uses Search-R1's GRPO run, average 35.0; Search-R1's own
headline PPO run averages 43.1).
"""
from __future__ import annotations

from dataclasses import dataclass

#: the seven evaluation sets, in the paper's column order (dataset names as in ``data.test_sets``)
SETS = ("nq", "triviaqa", "popqa", "hotpotqa", "2wikimultihopqa", "musique", "bamboogle")
SET_LABELS = ("NQ", "TriviaQA", "PopQA", "HotpotQA", "2Wiki", "Musique", "Bamboogle")

CORPUS = "wiki-18, E5"
SOURCE_TABLE2 = "Search-R2 paper, Table 2"


@dataclass(frozen=True)
class PublishedRow:
    method: str
    model: str
    em: tuple[float, ...]           # one per SETS entry
    avg: float                      # as published
    source: str = SOURCE_TABLE2
    corpus: str = CORPUS
    note: str = ""

    def __post_init__(self):
        if len(self.em) != len(SETS):
            raise ValueError(f"{self.method}: {len(self.em)} EM values for {len(SETS)} sets")

    @property
    def cells_mean(self) -> float:
        return sum(self.em) / len(self.em)

    @property
    def avg_disagrees(self) -> bool:
        """True when the published average is not the mean of the published cells (to rounding): the
        IRCoT row, as printed in both papers (cells 22.6, average 23.9). Tables say so beside it."""
        return abs(self.cells_mean - self.avg) > 0.051


_Q7 = "Qwen2.5-7B"
_BASELINE_NOTE = "copied by the paper from Search-R1"

TABLE2: tuple[PublishedRow, ...] = (
    PublishedRow("Direct inference", _Q7, (13.4, 40.8, 14.0, 18.3, 25.0, 3.1, 12.0), 18.1, note=_BASELINE_NOTE),
    PublishedRow("CoT", _Q7, (4.8, 18.5, 5.4, 9.2, 11.1, 2.2, 23.2), 10.6, note=_BASELINE_NOTE),
    PublishedRow("IRCoT", _Q7, (22.4, 47.8, 30.1, 13.3, 14.9, 7.2, 22.4), 23.9, note=_BASELINE_NOTE),
    PublishedRow("Search-o1", _Q7, (15.1, 44.3, 13.1, 18.7, 17.6, 5.8, 29.6), 20.6, note=_BASELINE_NOTE),
    PublishedRow("RAG", _Q7, (34.9, 58.5, 39.2, 29.9, 23.5, 5.8, 20.8), 30.4, note=_BASELINE_NOTE),
    PublishedRow("SFT", _Q7, (31.8, 35.4, 12.1, 21.7, 25.9, 6.6, 11.2), 20.7, note=_BASELINE_NOTE),
    PublishedRow("R1-base (RL, no search)", _Q7, (29.7, 53.9, 20.2, 24.2, 27.3, 8.3, 29.6), 27.6, note=_BASELINE_NOTE),
    PublishedRow("Rejection sampling", _Q7, (36.0, 59.2, 38.0, 33.1, 29.6, 12.3, 35.5), 34.8, note=_BASELINE_NOTE),
    PublishedRow("Search-R1", _Q7, (39.5, 56.0, 38.8, 32.6, 29.7, 12.5, 36.0), 35.0,
                 note="Search-R1's GRPO run (the row the Search-R2 paper compares against)"),
    PublishedRow("Search-R1", "Qwen3-8B", (44.0, 63.1, 41.8, 37.2, 35.5, 15.7, 43.0), 40.0),
    PublishedRow("Search-R1", "Qwen2.5-32B", (47.6, 68.0, 47.0, 43.3, 46.2, 22.1, 45.0), 45.6),
    PublishedRow("Search-R2", _Q7, (39.9, 65.9, 41.0, 39.0, 35.8, 15.1, 46.2), 40.4),
    PublishedRow("Search-R2", "Qwen3-8B", (47.7, 67.6, 46.6, 41.2, 40.5, 17.2, 51.2), 44.6),
    PublishedRow("Search-R2", "Qwen2.5-32B", (50.9, 70.9, 50.1, 49.9, 51.7, 25.4, 56.4), 50.8),
)

#: Search-R1's own headline run (PPO), which is NOT the row Table 2 uses
SEARCH_R1_PPO = PublishedRow("Search-R1 (PPO)", _Q7, (48.0, 63.8, 45.7, 43.3, 38.2, 19.6, 43.2), 43.1,
                             source="Search-R1 paper (headline PPO run)",
                             note="not the GRPO row (35.0) the Search-R2 paper compares against")

def table2_row(method: str, model: str) -> PublishedRow:
    """The Table 2 row of ``method`` on ``model``."""
    return next(r for r in TABLE2 if r.method == method and r.model == model)


#: Table 8, Qwen2.5-7B, per set where published (the Search-R1 and full rows are Table 2's)
LADDER_7B: tuple[PublishedRow, ...] = (
    table2_row("Search-R1", _Q7),
    PublishedRow("+ Meta-Refiner", _Q7, (39.3, 64.4, 40.3, 37.0, 34.6, 12.7, 44.0), 38.9, source="Search-R2 paper, Table 8"),
    PublishedRow("+ Meta-Refiner + process reward", _Q7, (39.6, 64.9, 40.5, 37.4, 34.9, 14.2, 45.6), 39.6,
                 source="Search-R2 paper, Table 8"),
    table2_row("Search-R2", _Q7),
)
