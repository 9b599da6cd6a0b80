"""Writes data/raw/sample: a few rows in each real format the paper profile reads.

    python tests/real_sample.py data/raw/sample

The facts are invented (a small made-up archipelago), the formats are the published ones:

* ``wiki-18-sample.jsonl.gz``: a corpus in wiki-18's layout, gzip, starting with a UTF-8 byte-order
  mark; titles quoted when they hold a space or punctuation and bare otherwise, as the real file
  writes them; some lines in the ``{id, title, text}`` layout instead; integer and string ids.
* ``qa/``, the ``data.local_dir`` of ``configs/real-sample.yaml``:

  - ``nq/test.jsonl``, ``nq/train.jsonl``: FlashRAG jsonl (one ``golden_answers`` a plain string);
  - ``triviaqa/test.parquet``: FlashRAG parquet;
  - ``test.parquet`` at the root: a merged Search-R1 file holding PopQA and Bamboogle rows, told
    apart by ``data_source``, answers in ``reward_model.ground_truth.target``;
  - ``hotpotqa/dev.parquet``: Search-R1/verl rows without ``id``, the question only inside the prompt;
  - ``hotpotqa/train.parquet``: verl rows with ``extra_info.question`` and the answer list in
    ``extra_info.answer`` beside a comma-joined ``ground_truth`` string;
  - ``2wikimultihopqa/dev.jsonl.gz``: FlashRAG, gzip, with a byte-order mark; a dev-only set;
  - ``musique/dev.jsonl``: FlashRAG; a dev-only set.

tests/test_real_sample.py checks that the committed files are what this script writes.
"""
from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

BOM = "\ufeff"

# (title, text): one article a tuple, split into passages of a sentence or two
ARTICLES = [
    ("Varnholm", ["Varnholm is the largest island of the Seltic Archipelago. Its capital is Orsk, a harbour town "
                  "founded by fishermen from the mainland.",
                  "The island is known for its basalt cliffs and for the Varnholm Lighthouse, built in 1871."]),
    ("Orsk", ["Orsk is the capital of Varnholm. The town hall of Orsk was designed by the architect Ilse Marrow.",
              "Orsk hosts the Seltic Fish Market every spring."]),
    ("Ilse Marrow", ["Ilse Marrow (1840 - 1912) was an architect from Orsk. She designed the town hall of Orsk "
                     "and the Brenna Library.",
                     "Marrow studied in the city of Talden and later taught at the Talden Academy."]),
    ("Brenna Library", ["The Brenna Library is a public library in Talden designed by Ilse Marrow. It opened in 1889.",
                        "It holds the largest collection of Seltic sea charts."]),
    ("Talden", ["Talden is a port city on the mainland facing the Seltic Archipelago. The Talden Academy was "
                "founded there in 1802."]),
    ("Talden Academy", ["The Talden Academy is a school of art and building founded in 1802 in Talden. Its first "
                        "rector was Petr Oswin."]),
    ("Petr Oswin", ["Petr Oswin was a painter and the first rector of the Talden Academy. He was born on Varnholm."]),
    ("Varnholm Lighthouse", ["The Varnholm Lighthouse stands on the northern cliffs of Varnholm. It was built in "
                             "1871 and is 38 metres tall."]),
    ("Seltic Fish Market", ["The Seltic Fish Market is held every spring in Orsk. Traders sell herring, cod and "
                            "smoked eel."]),
    ("Kessa River", ["The Kessa River flows through Talden into the sea. Its source lies in the Grau Hills."]),
    ("Grau Hills", ["The Grau Hills are a range of low hills on the mainland. The Kessa River rises there."]),
    ("Mira Dunholt", ["Mira Dunholt is a novelist from Talden. Her novel The Salt Lantern is set on Varnholm.",
                      "She won the Talden Prize in 1998."]),
    ("The Salt Lantern", ["The Salt Lantern is a 1996 novel by Mira Dunholt about a lighthouse keeper on Varnholm."]),
    ("Talden Prize", ["The Talden Prize is a literary award given every year in Talden since 1950."]),
]


def corpus_lines() -> list[str]:
    """The corpus, one JSON line a passage, in the mixed layouts described above."""
    lines, pid = [], 0
    for title, passages in ARTICLES:
        for text in passages:
            if pid % 5 == 4:                                  # DPR's other layout
                record = {"id": str(pid), "title": title, "text": text}
            else:                                             # wiki-18: quoted only with a space or punctuation
                head = f'"{title}"' if any(not c.isalnum() for c in title) else title
                record = {"id": pid if pid % 2 else str(pid), "contents": f"{head}\n{text}"}
            lines.append(json.dumps(record, ensure_ascii=False))
            pid += 1
    return lines


def flashrag(rid: str, question: str, answers, **metadata) -> dict:
    return {"id": rid, "question": question, "golden_answers": answers, "metadata": metadata}


def prompt(question: str) -> list[dict]:
    """A chat prompt in the Search-R1 style: an instruction, then the question on the last line."""
    return [{"role": "user", "content": "Think step by step, search with <search> query </search> when you need "
                                        "facts, and give the final answer inside <answer> and </answer>.\n"
                                        f"Question: {question}\n"}]


def verl(source: str, split: str, index: int, question: str, ground_truth, extra: dict | None = None,
         in_prompt_only: bool = False) -> dict:
    row = {"data_source": source, "prompt": prompt(question), "ability": "fact-reasoning",
           "reward_model": {"style": "rule", "ground_truth": ground_truth},
           "extra_info": {"split": split, "index": index, **(extra or {})}}
    if not in_prompt_only:
        row["extra_info"]["question"] = question
    return row


NQ_TEST = [flashrag("test_0", "what is the capital of varnholm", ["Orsk"]),
           flashrag("test_1", "who designed the town hall of orsk", "Ilse Marrow"),       # one string: one answer
           flashrag("test_2", "when was the varnholm lighthouse built", ["1871"])]
NQ_TRAIN = [flashrag("train_0", "where is the seltic fish market held", ["Orsk"]),
            flashrag("train_1", "who was the first rector of the talden academy", ["Petr Oswin", "Oswin"]),
            flashrag("train_2", "where does the kessa river rise", ["Grau Hills", "the Grau Hills"])]
TRIVIAQA = [flashrag("tq_0", "Which novelist wrote The Salt Lantern?", ["Mira Dunholt"], source="sample"),
            flashrag("tq_1", "How tall is the Varnholm Lighthouse in metres?", ["38", "38 metres"], source="sample")]
MERGED_TEST = [verl("popqa", "test", 0, "What is Petr Oswin's occupation?", {"target": ["painter"]}),
               verl("popqa", "test", 1, "In what city was Mira Dunholt born?", {"target": ["Talden"]}),
               verl("bamboogle", "test", 0, "Who designed the library that holds the largest collection of "
                    "Seltic sea charts?", {"target": ["Ilse Marrow"]})]
HOTPOT_DEV = [verl("hotpotqa", "dev", 0, "The architect of the Brenna Library taught at a school founded in what year?",
                   ["1802"], in_prompt_only=True),
              verl("hotpotqa", "dev", 1, "Which island is the setting of the novel that won its author the Talden "
                   "Prize?", ["Varnholm"], in_prompt_only=True)]
HOTPOT_TRAIN = [verl("hotpotqa", "train", 0, "What river flows through the city where the Talden Academy was founded?",
                     "Kessa River, the Kessa River", {"answer": ["Kessa River", "the Kessa River"]}),
                verl("hotpotqa", "train", 1, "What market is held in the capital of Varnholm?",
                     "Seltic Fish Market", {"answer": ["Seltic Fish Market"]})]
TWOWIKI = [flashrag("2w_0", "Who was born first, Ilse Marrow or Mira Dunholt?", ["Ilse Marrow"], type="comparison")]
MUSIQUE = [flashrag("mq_0", "Where did the designer of Orsk's town hall study?", ["Talden"])]


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def write(root: Path) -> list[Path]:
    """Write every sample file under ``root``; return their paths."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(root)
    files = []

    def text(rel: str, content: str, gz: bool = False) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = content.encode("utf-8")
        path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
        files.append(path)

    def parquet(rel: str, rows: list[dict]) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), path)
        files.append(path)

    text("wiki-18-sample.jsonl.gz", BOM + "\n".join(corpus_lines()) + "\n", gz=True)
    text("qa/nq/test.jsonl", _jsonl(NQ_TEST))
    text("qa/nq/train.jsonl", _jsonl(NQ_TRAIN))
    parquet("qa/triviaqa/test.parquet", TRIVIAQA)
    parquet("qa/test.parquet", MERGED_TEST)
    parquet("qa/hotpotqa/dev.parquet", HOTPOT_DEV)
    parquet("qa/hotpotqa/train.parquet", HOTPOT_TRAIN)
    text("qa/2wikimultihopqa/dev.jsonl.gz", BOM + _jsonl(TWOWIKI), gz=True)
    text("qa/musique/dev.jsonl", _jsonl(MUSIQUE))
    return files


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if len(sys.argv) == 2 else 2)
    for f in write(Path(sys.argv[1])):
        print(f)
