"""Paper-style tables from the repository's dvc experiments.

Input: what ``dvc exp show --json`` prints (run by the command itself, or read from a file): each
run's params and its ``results/summary.json``, the headline numbers DVC declares as metrics (runs
made before that file existed declared the full ``results/metrics.json``, which is read instead);
with ``--also``, each run's full ``results/metrics.json`` (from git for a commit or experiment, from
disk for the workspace); with ``--workspace``, ``dvc status`` of the workspace. Output:
one row per experiment (or per group of experiments that differ only in their seed), the EM ×100 of
one evaluated system on the seven sets and their average, plus every param that differs between the
rows shown. Markdown, CSV and, optionally, a bar chart of the averages.

Nothing is averaged behind the reader's back:

- an experiment that is queued, running or failed is not a row; it is listed under the table with
  its state;
- an experiment without ``results/metrics.json``, or whose metrics lack the chosen system, is a row
  of ``–`` named as such;
- a set an experiment did not evaluate is a ``–`` and that row has no average;
- rows evaluated on different numbers of questions per set say so in their ``n`` column and in a
  note; seed groups never pool members whose numbers of questions differ;
- a seed group's mean ± std (sample std, n − 1) is taken only over members that have the cell; a
  member without metrics is named in the group's note, and a cell missing from any member is ``–``;
- the workspace row (``--workspace``) shows whatever ``results/metrics.json`` the workspace holds.
  Its stages are checked with ``dvc status``: when one is not up to date (a param, code file, command
  or output changed since ``dvc.lock``), those numbers may not belong to the workspace's params and
  code, and the row is marked ``stale`` with the stages named (in the table, its note and the CSV's
  ``stale`` column); stages whose files are only absent (a clone without ``dvc pull``) get a note.

Usage (see the README): ``python -m searchr2.experiments [--only NAME ...] [--group-over rl.seed]
[--paired A B]``; ``--paired`` adds the difference of two rows (or two systems of one row, or two seed
groups) on the same questions with its 95% interval (:mod:`searchr2.stats`). ``--save-json FILE`` keeps
a study's runs, full metrics included, in one file that ``--json FILE`` reads back anywhere: DVC keeps
experiments as git refs of one clone, so this is how a study made over several machines or sessions
is tabulated in one place.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from searchr2.io import atomic_file
from searchr2.paths import METRICS_JSON, RESULTS, SUMMARY_JSON
from searchr2.published import SET_LABELS, SETS
from searchr2.report import SYSTEM_LABELS, fmt_cell, markdown_table, paired, scores_by_set, system_rows
from searchr2.stats import interval_text

METRICS_FILE = METRICS_JSON.as_posix()   # every score; a DVC metric (in dvc exp show) in older runs only
SUMMARY_FILE = SUMMARY_JSON.as_posix()   # the headline numbers: the metric dvc exp show --json files
RL_FILE = (RESULTS / "rl.json").as_posix()   # the rl stage's summary, also a DVC metric (--also rl.FIELD)
PARAMS_FILE = "params.yaml"
#: executor states whose results are final (None: an experiment saved before dvc recorded one)
FINISHED = {None, "success"}


@dataclass
class ExpRow:
    """One experiment or baseline commit as ``dvc exp show --json`` reports it."""
    name: str
    rev: str
    kind: str                        # workspace | baseline | experiment
    state: str | None = None         # the executor's state for queued/running/failed experiments
    params: dict = field(default_factory=dict)     # flattened: "rl.refiner_weight" -> 0.5
    metrics: dict | None = None      # results/metrics.json's content (or its EM part from summary.json); None: none
    full: bool = True                # False: ``metrics`` was rebuilt from results/summary.json (EM and n only)
    rl: dict | None = None           # results/rl.json's content (the RL run's summary); None: none
    error: str = ""
    timestamp: str = ""
    #: the workspace row only: ``dvc status --json`` of the workspace, or why it was not checked
    status: dict | None = None
    status_error: str = ""


def flatten(tree: dict, prefix: str = "") -> dict:
    """Nested params to dotted keys; lists are kept as values."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _file_data(files: dict | None, path: str) -> tuple[dict | None, str]:
    entry = (files or {}).get(path)
    if entry is None:
        return None, ""
    err = entry.get("error")
    if err:
        return None, f"{path}: {err.get('msg', err) if isinstance(err, dict) else err}"
    return entry.get("data"), ""


def from_summary(summary: dict) -> dict:
    """``results/summary.json`` (``em: {system: {set: EM, avg: EM}}``, ``questions: {set: n}``,
    ``refiner``) in ``results/metrics.json``'s shape, with only the fields it has."""
    questions = summary.get("questions") or {}
    metrics = {}
    for system, per_set in (summary.get("em") or {}).items():
        if not isinstance(per_set, dict):
            continue
        metrics[system] = {s: {"em": v, **({"n": questions[s]} if isinstance(questions.get(s), int) else {})}
                           for s, v in per_set.items() if s != "avg"}
        if "avg" in per_set:
            metrics[system]["avg"] = {"em": per_set["avg"]}
    if summary.get("refiner"):
        metrics["refiner"] = summary["refiner"]
    return metrics


def _row(rev_entry: dict, name: str, kind: str, state: str | None = None) -> ExpRow:
    data = rev_entry.get("data") or {}
    params, perr = _file_data(data.get("params"), PARAMS_FILE)
    metrics, merr = _file_data(data.get("metrics"), METRICS_FILE)
    full = metrics is not None
    if metrics is None and not merr:
        summary, merr = _file_data(data.get("metrics"), SUMMARY_FILE)
        metrics = from_summary(summary) if isinstance(summary, dict) else None
    err = rev_entry.get("error")
    errs = [e for e in (perr, merr) if e]
    if err:
        errs.insert(0, err.get("msg", str(err)) if isinstance(err, dict) else str(err))
    rl, _ = _file_data(data.get("metrics"), RL_FILE)
    return ExpRow(name=name, rev=rev_entry.get("rev", ""), kind=kind, state=state,
                  params=flatten(params or {}), metrics=metrics, full=full, error="; ".join(errs),
                  timestamp=data.get("timestamp") or "", rl=rl if isinstance(rl, dict) else None)


def parse_exp_show(show: list) -> list[ExpRow]:
    """``dvc exp show --json`` to rows: the workspace, each baseline commit, then its experiments
    (oldest first)."""
    if not isinstance(show, list):
        raise ValueError("not `dvc exp show --json` output: expected a JSON list of revisions")
    rows = []
    for entry in show:
        if not isinstance(entry, dict) or "rev" not in entry:
            raise ValueError(f"not `dvc exp show --json` output: a revision without 'rev': {str(entry)[:80]}")
        if entry["rev"] == "workspace":
            rows.append(_row(entry, "workspace", "workspace"))
            continue
        base = entry.get("name") or entry["rev"][:7]
        rows.append(_row(entry, f"{base}@{entry['rev'][:7]}" if entry.get("name") else base, "baseline"))
        exps = []
        for exp in entry.get("experiments") or []:
            executor = exp.get("executor") or {}
            revs = exp.get("revs") or []
            if not revs:
                continue
            last = revs[0]                   # a checkpoint-less experiment has one revision
            name = exp.get("name") or last.get("name") or last.get("rev", "")[:7]
            exps.append(_row(last, name, "experiment", executor.get("state")))
        rows.extend(sorted(exps, key=lambda r: r.timestamp))
    return rows


def run_exp_show(all_commits: bool = False, revs: list[str] | None = None, cwd: str | Path = ".") -> list:
    """Run ``dvc exp show --json`` (``-A`` for experiments of every commit) and return its JSON."""
    cmd = ["dvc", "exp", "show", "--json"]
    if all_commits:
        cmd.append("-A")
    for rev in revs or []:
        cmd += ["--rev", rev]
    return _dvc_json(cmd, cwd)


def _dvc_json(cmd: list[str], cwd: str | Path):
    """Run a ``dvc ... --json`` command and return what it printed; a missing dvc, a failure or output
    that is not JSON is a RuntimeError that names the command."""
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as e:
        raise RuntimeError("`dvc` is not on PATH: activate the project's environment") from e
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    try:
        return json.loads(proc.stdout or "{}")
    except json.JSONDecodeError as e:
        raise RuntimeError(f"`{' '.join(cmd)}` printed no JSON: {proc.stdout[:200]!r}") from e


def load_full_metrics(row: ExpRow, cwd: str | Path = ".") -> dict | None:
    """A run's whole ``results/metrics.json`` (searches, F1, ... besides EM): the workspace's file, or the
    one committed in the run's git revision (DVC commits it with every experiment); None when absent."""
    if row.kind == "workspace":
        path = Path(cwd) / METRICS_FILE
        text = path.read_text() if path.is_file() else None
    else:
        proc = subprocess.run(["git", "show", f"{row.rev}:{METRICS_FILE}"], cwd=cwd, capture_output=True,
                              text=True, check=False)
        text = proc.stdout if proc.returncode == 0 else None
    try:
        return json.loads(text) if text else None
    except json.JSONDecodeError:
        return None


def embed_full_metrics(show: list, cwd: str | Path = ".") -> list:
    """``show`` (``dvc exp show --json`` output) with every committed run's full ``results/metrics.json``
    (read from git) put where DVC lists a metrics file, so that :func:`parse_exp_show` finds it without
    git. Runs whose file git does not have are left as they are; the input is not changed."""
    out = json.loads(json.dumps(show))

    def fill(rev_entry: dict) -> None:
        data = rev_entry.get("data") or {}
        files = data.get("metrics") or {}
        if rev_entry.get("rev") in (None, "workspace") or (files.get(METRICS_FILE) or {}).get("data"):
            return
        full = load_full_metrics(ExpRow(name="", rev=rev_entry["rev"], kind="experiment"), cwd)
        if full is not None:
            rev_entry["data"] = {**data, "metrics": {**files, METRICS_FILE: {"data": full}}}

    for entry in out if isinstance(out, list) else []:
        if not isinstance(entry, dict):
            continue
        fill(entry)
        for exp in entry.get("experiments") or []:
            for rev in (exp or {}).get("revs") or []:
                fill(rev)
    return out


def run_dvc_status(cwd: str | Path = ".") -> dict:
    """Run ``dvc status --json`` in the workspace: ``{stage: [changes]}``, ``{}`` when all is up to date."""
    cmd = ["dvc", "status", "--json"]
    status = _dvc_json(cmd, cwd)
    if not isinstance(status, dict):
        raise RuntimeError(f"`{' '.join(cmd)}` printed {type(status).__name__}, not a JSON object")
    return status


#: a dependency or output in one of these states is missing from the workspace, not changed
ABSENT = {"deleted", "not in cache"}


def stage_changes(status: dict) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Split ``dvc status --json`` into (stale, absent), each ``{stage: [what]}``.

    A stage is stale when something it records in ``dvc.lock`` changed: a param (any state, a param
    removed from params.yaml included), a file modified or new, its command, or it always runs. A stage
    whose only entries are files deleted or not in the cache is absent: nothing changed, the files are
    just not in this workspace (``dvc pull`` / ``dvc checkout``).
    """
    stale, absent = {}, {}
    for stage, entries in status.items():
        changed, missing = [], []
        for entry in entries if isinstance(entries, list) else [entries]:
            if not isinstance(entry, dict):
                changed.append(str(entry))                      # "changed command", "always changed", ...
                continue
            for files in entry.values():                        # "changed deps" / "changed outs"
                for path, state in (files.items() if isinstance(files, dict) else [(str(files), "")]):
                    if isinstance(state, dict):                 # params.yaml: {param: state}
                        changed += [f"{path}:{param} {how}" for param, how in state.items()]
                    elif state in ABSENT:
                        missing.append(f"{path} {state}")
                    else:
                        changed.append(f"{path} {state}".strip())
        if changed:
            stale[stage] = changed
        elif missing:
            absent[stage] = missing
    return stale, absent


def _some(items: list[str], at_most: int = 3) -> str:
    """The first ``at_most`` items and how many more there are."""
    more = len(items) - at_most
    return ", ".join(items[:at_most]) + (f" and {more} more" if more > 0 else "")


def workspace_status(row: ExpRow) -> tuple[list[str] | None, str]:
    """(stale stages, note) of a row: ``[]`` and no note for a row that is not the workspace or whose
    stages are all up to date; ``None`` stages when the workspace was not checked."""
    if row.kind != "workspace":
        return [], ""
    if row.status is None:
        return None, f"whether its DVC stages are up to date was not checked ({row.status_error or 'no dvc status'})"
    stale, absent = stage_changes(row.status)
    notes = []
    if stale:
        what = "; ".join(f"{stage}: {_some(changes)}" for stage, changes in stale.items())
        notes.append(f"stale: stages not up to date ({what}), and every stage downstream of them; its "
                     f"{METRICS_FILE} may not come from the workspace's params and code (run `dvc repro`)")
    if absent:
        notes.append(f"files of stages {', '.join(absent)} are absent from the workspace (unchanged otherwise; "
                     "`dvc pull` fetches them)")
    return list(stale), "; ".join(notes)


# ---------------------------------------------------------------------------------------------- rows


def em_cells(row: ExpRow, system: str, also: tuple[str, ...] = ()) -> dict:
    """EM per set, average, missing sets and questions per set of ``system`` in one row; ``also``:
    other per-set fields of the metrics (searches, f1, turns, ...), each as its mean over the seven
    sets (None unless every set has it), or ``rl.``-prefixed fields of the RL run's summary
    (``rl.revisions.diff``: a dotted path into results/rl.json; None unless it is a number)."""
    def nothing(problem: str) -> dict:
        return {"em": [None] * len(SETS), "avg": None, "missing": list(SETS), "n": [],
                "also": {f: None for f in also}, "problem": problem}

    if row.metrics is None:
        return nothing(row.error or f"no {METRICS_FILE} or {SUMMARY_FILE}")
    found = [r for r in system_rows(row.metrics) if r["system"] == system]
    if not found:
        have = sorted(k for k, v in row.metrics.items() if k != "refiner" and isinstance(v, dict))
        return nothing(f"system {system} not evaluated (has: {', '.join(have) or 'none'})")
    r = found[0]
    problem = f"missing sets: {', '.join(r['missing'])}" if r["missing"] else ""
    per_set = row.metrics[system]

    def column(f: str) -> float | None:
        if f.startswith("rl."):
            return rl_field(row.rl, f)
        vs = [per_set.get(s, {}).get(f) if isinstance(per_set.get(s), dict) else None for s in SETS]
        return None if any(not isinstance(v, (int, float)) for v in vs) else sum(vs) / len(vs)

    extra = {f: column(f) for f in also}
    return {"em": r["em"], "avg": r["avg"], "missing": r["missing"], "n": r["n"], "also": extra,
            "problem": problem}


def rl_field(rl: dict | None, field: str) -> float | None:
    """``rl.a.b`` of ``--also``: ``rl["a"]["b"]`` of results/rl.json when it is a number, else None."""
    value = rl
    for key in field.split(".")[1:]:
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _value(v) -> str:
    if isinstance(v, (list, dict, bool)) or v is None:     # as params.yaml spells them: false, null
        return json.dumps(v, separators=(",", ":"))
    return "(absent)" if v is _ABSENT else str(v)


_ABSENT = object()


def differing_params(rows: list[ExpRow], ignore: tuple[str, ...] = ()) -> list[str]:
    """Param keys whose value is not the same in every row (a key missing from a row counts as a
    value), in params.yaml order."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r.params if k not in keys]
    return [k for k in keys if k not in ignore
            and len({_value(r.params.get(k, _ABSENT)) for r in rows}) > 1]


def matches(row: ExpRow, name: str) -> bool:
    """A row answers to its name; a baseline also to its branch alone (``main`` for ``main@1a2b3c4``)."""
    return name == row.name or (row.kind == "baseline" and "@" in row.name and name == row.name.split("@")[0])


def select(rows: list[ExpRow], only: list[str] | None = None, exclude: list[str] | None = None,
           workspace: bool = False) -> tuple[list[ExpRow], list[ExpRow]]:
    """(rows to show, experiments not finished). ``only`` also fixes the order; a name in ``only``
    that matches nothing, or an unfinished experiment, is an error."""
    unfinished = [r for r in rows if r.kind == "experiment" and r.state not in FINISHED]
    shown = [r for r in rows if r not in unfinished and (workspace or r.kind != "workspace")
             and not any(matches(r, n) for n in exclude or [])]
    if only:
        found = {n: [r for r in shown if matches(r, n)] for n in only}
        pending = {r.name: r.state for r in unfinished}
        unknown = [n for n, hits in found.items() if not hits]
        if unknown:
            detail = [f"{n} ({pending[n]})" if n in pending else n for n in unknown]
            raise ValueError(f"no finished experiment named {', '.join(detail)}; "
                             f"have: {', '.join(r.name for r in shown) or 'none'}")
        shown, unfinished = [found[n][0] for n in only], []      # the others were not asked for
    return shown, unfinished


def _n_label(n: list) -> str:
    return "/".join(map(str, n)) if n else "–"


def table(rows: list[ExpRow], system: str, ignore: tuple[str, ...] = (), also: tuple[str, ...] = ()) -> dict:
    """One record per row (EM cells, average, ``also`` columns, problem) and the differing param keys."""
    keys = differing_params(rows, ignore)
    records = []
    for r in rows:
        cells = em_cells(r, system, also)
        stale, status_note = workspace_status(r)
        records.append({"experiment": r.name, "rev": r.rev[:7], **cells, "stale": stale, "status_note": status_note,
                        "params": {k: _value(r.params.get(k, _ABSENT)) for k in keys}})
    return {"keys": keys, "records": records, "also": list(also)}


# -------------------------------------------------------------------------------------------- seeds


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def aggregate(rows: list[ExpRow], system: str, over: tuple[str, ...], ignore: tuple[str, ...] = (),
              also: tuple[str, ...] = ()) -> dict:
    """Group rows that differ only in the ``over`` params (and ``ignore``), mean ± std per cell.

    Members with no metrics for ``system`` are named in the group's problem and left out of its
    means; a set missing from any member with metrics is ``None`` for the group (no mean over fewer
    seeds than the others); members evaluated on different numbers of questions are never pooled.
    """
    keys = differing_params(rows, tuple(ignore) + tuple(over))
    by_params: dict[tuple, list] = {}
    for r in rows:
        by_params.setdefault(tuple(_value(r.params.get(k, _ABSENT)) for k in keys), []).append(
            (r, em_cells(r, system, also)))
    groups = []
    for members in by_params.values():       # split by questions per set; members without metrics join the first
        by_n: dict[tuple, list] = {}
        for r, c in members:
            if c["n"]:
                by_n.setdefault(tuple(c["n"]), []).append((r, c))
        split = list(by_n.values()) or [[]]
        split[0] = [m for m in members if not m[1]["n"]] + split[0]
        order = {id(r): i for i, (r, _) in enumerate(members)}
        groups += [sorted(g, key=lambda m: order[id(m[0])]) for g in split]
    records = []
    for members in groups:
        with_metrics = [(r, c) for r, c in members if c["n"]]
        problems = [f"{r.name}: {c['problem']}" for r, c in members if not c["n"]]
        em, spread, missing = [], [], []
        for i, s in enumerate(SETS):
            vals = [c["em"][i] for _, c in with_metrics]
            m, sd = _mean_std(vals) if vals and None not in vals else (None, None)
            em.append(m)
            spread.append(sd)
            if m is None:
                missing.append(s)
        avgs = [c["avg"] for _, c in with_metrics]
        if missing and with_metrics:
            problems.append(f"missing sets: {', '.join(missing)}")
        avg, avg_sd = _mean_std(avgs) if avgs and None not in avgs else (None, None)
        extra = {}
        for f in also:
            vals = [c["also"][f] for _, c in with_metrics]
            extra[f] = _mean_std(vals) if vals and None not in vals else (None, None)
        first = members[0][0]
        statuses = [(r.name, *workspace_status(r)) for r, _ in members]
        stale = None if any(st is None for _, st, _ in statuses) else [s for _, st, _ in statuses for s in st]
        status_note = "; ".join(f"{name}: {note}" if len(members) > 1 else note for name, _, note in statuses if note)
        records.append({
            "experiment": first.name if len(members) == 1 else f"{first.name} (+{len(members) - 1})",
            "members": [r.name for r, _ in members],
            "rows": [r for r, _ in members],            # the members themselves (--paired on a group)
            "seeds": [_value(r.params.get(over[0], _ABSENT)) if over else "" for r, _ in with_metrics],
            "em": em, "std": spread, "avg": avg, "avg_std": avg_sd, "missing": missing,
            "also": {f: m for f, (m, _) in extra.items()}, "also_std": {f: sd for f, (_, sd) in extra.items()},
            "n": sorted({k for _, c in with_metrics for k in c["n"]}),
            "problem": "; ".join(problems), "stale": stale, "status_note": status_note,
            "params": {k: _value(first.params.get(k, _ABSENT)) for k in keys},
        })
    return {"keys": keys, "records": records, "over": list(over), "also": list(also)}


# ------------------------------------------------------------------------------------------ output


def parse_side(text: str, default_system: str) -> tuple[str, str]:
    """``ROW`` or ``ROW:SYSTEM`` (a ``--paired`` operand) to (row name, system)."""
    name, sep, system = text.rpartition(":")
    if not sep:
        return text, default_system
    if not name or not system:
        raise ValueError(f"--paired {text!r}: expected ROW or ROW:SYSTEM")
    return name, system


def paired_records(rows: list[ExpRow], pairs: list[tuple[str, str]], default_system: str,
                   bootstrap: tuple[int, int], groups: list[list[ExpRow]] | None = None) -> list[dict]:
    """One record per ``(A, B)`` of ``pairs``: the average EM of A minus that of B on the same questions,
    with its 95% paired bootstrap interval (:func:`searchr2.stats.paired_difference`). Each side is a row
    name, optionally with ``:system``. A side whose metrics hold no per-question scores (a run made before
    they were recorded, or a summary-only row) is an error naming it.

    With ``groups`` (the seed groups of ``--group-over``), a side naming any member of a group stands for
    the whole group: per question, the mean of its members' scores. The interval then resamples questions
    with the seeds held fixed; the spread over seeds is the table's ± std, not part of this interval."""
    def scores(row: ExpRow, system: str):
        got = scores_by_set(row.metrics or {}, system)
        if got is None:
            raise ValueError(f"--paired: {row.name} has no per-question scores of {system} (em_by_question in "
                             f"{METRICS_FILE}, written since the paired comparisons exist); rerun its metrics stage")
        return got

    def side(text: str):
        name, system = parse_side(text, default_system)
        found = [r for r in rows if matches(r, name)]
        if not found:
            raise ValueError(f"--paired: no finished experiment named {name}; have: "
                             f"{', '.join(r.name for r in rows) or 'none'}")
        row = found[0]
        label = SYSTEM_LABELS.get(system, system)
        members = next((g for g in groups or [] if row in g), [row])
        if len(members) == 1:
            return f"{row.name}: {label}", scores(row, system)
        # a seed group: each question's score is its mean over the members, so the difference of two groups
        # is the mean over seeds of the per-seed differences, resampled over questions (seeds held fixed)
        each = [scores(r, system) for r in members]
        for r, (_, digests) in zip(members[1:], each[1:]):
            differ = [s for s in digests if digests[s] != each[0][1].get(s)]
            if differ:
                raise ValueError(f"--paired: {members[0].name} and {r.name} were not scored on the same questions "
                                 f"in {', '.join(differ)}; a seed group's scores need them equal")
        mean = {s: sum(e[0][s] for e in each) / len(each) for s in each[0][0]}
        return f"{members[0].name} (mean of {len(members)}: {', '.join(r.name for r in members)}): {label}", \
            (mean, each[0][1])

    out = []
    for a, b in pairs:
        (label_a, sa), (label_b, sb) = side(a), side(b)
        try:
            d = paired(sa, sb, bootstrap)
        except ValueError as e:
            raise ValueError(f"--paired {a} {b}: {e}") from e
        out.append({"a": label_a, "b": label_b, **d})
    return out


def paired_markdown(records: list[dict], bootstrap: tuple[int, int]) -> str:
    body = [[r["a"], r["b"], f"{r['diff']:+.1f}", interval_text(r["ci95"]), str(r["a_better"]), str(r["b_better"]),
             str(sum(r["n"].values()))] for r in records]
    return (f"\nPaired differences of average EM (A − B, the same questions; 95% percentile bootstrap over "
            f"questions within sets, {bootstrap[0]} resamples, seed {bootstrap[1]}):\n\n"
            + markdown_table(["A", "B", "Δ avg EM", "95% CI", "only A right", "only B right", "questions"], body))


def _also_caption(also: list[str]) -> str:
    per_set = [f"`{f}`" for f in also if not f.startswith("rl.")]
    run = [f"`{f}`" for f in also if f.startswith("rl.")]
    return ((f"; {', '.join(per_set)}: mean over the seven sets" if per_set else "")
            + (f"; {', '.join(run)}: from the RL run's {RL_FILE}" if run else ""))


def to_markdown(result: dict, system: str, unfinished: list[ExpRow], source: str) -> str:
    grouped = "over" in result
    keys = result["keys"]
    also = result.get("also", [])
    header = ["experiment", *(["seeds"] if grouped else []), *SET_LABELS, "avg", *also, "n", *keys]
    body = []
    for rec in result["records"]:
        if grouped:
            cells = [fmt_cell(v, sd) for v, sd in zip(rec["em"], rec["std"])]
            avg = fmt_cell(rec["avg"], rec["avg_std"])
            extra = [fmt_cell(rec["also"][f], rec["also_std"][f], 2) for f in also]
            lead = [_label(rec), ",".join(rec["seeds"]) or "–"]
        else:
            cells = [fmt_cell(v) for v in rec["em"]]
            avg = fmt_cell(rec["avg"])
            extra = [str(v) if isinstance(v := rec["also"][f], int) else fmt_cell(v, digits=2) for f in also]
            lead = [_label(rec)]
        body.append([*lead, *cells, avg, *extra, _n_label(rec["n"]), *(f"`{rec['params'][k]}`" for k in keys)])
    what = (f"mean ± sample std over `{'`, `'.join(result['over'])}`" if grouped else "one run per row")
    parts = [f"EM ×100 of `{system}` per set ({what}); {source}. "
             "`n` = questions per set; the last columns are the params that differ between rows"
             + _also_caption(also) + ".\n\n",
             markdown_table(header, body)]
    notes = [f"- **{rec['experiment']}**: {rec['problem']}" for rec in result["records"] if rec["problem"]]
    notes += [f"- **{rec['experiment']}**: {rec['status_note']}" for rec in result["records"] if rec.get("status_note")]
    ns = {tuple(rec["n"]) for rec in result["records"] if rec["n"]}
    if len(ns) > 1:
        notes.append("- rows were evaluated on different numbers of questions per set "
                     f"({', '.join(_n_label(list(n)) for n in sorted(ns))}): their cells are not comparable")
    if grouped:
        multi = [rec for rec in result["records"] if len(rec["members"]) > 1]
        notes += [f"- {rec['experiment']} = {', '.join(rec['members'])}" for rec in multi]
    states: dict[str, list[str]] = {}
    for r in unfinished:
        states.setdefault(r.state or "unknown", []).append(r.name)
    notes += [f"- not shown, {state}: {', '.join(names)}" for state, names in states.items()]
    if notes:
        parts.append("\n" + "\n".join(notes) + "\n")
    return "".join(parts)


def _label(rec: dict) -> str:
    """A row's name in the Markdown table, marked when its workspace stages are out of date."""
    return f"{rec['experiment']} (stale: {_some(rec['stale'])})" if rec.get("stale") else rec["experiment"]


def _stale_cell(rec: dict) -> str:
    """The CSV's ``stale`` column: the out-of-date stages, ``unchecked`` when the workspace was not checked."""
    stale = rec.get("stale", [])
    return "unchecked" if stale is None else " ".join(stale)


def to_csv(result: dict) -> str:
    grouped = "over" in result
    keys, also = result["keys"], result.get("also", [])
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    num = lambda v: "" if v is None else f"{v:.3f}".rstrip("0").rstrip(".")     # noqa: E731
    if grouped:
        w.writerow(["experiment", "members", "seeds", *SETS, "avg", *also,
                    *(f"{s}_std" for s in SETS), "avg_std", *(f"{f}_std" for f in also), "n", "problem", "stale",
                    *keys])
        for rec in result["records"]:
            w.writerow([rec["experiment"], " ".join(rec["members"]), " ".join(rec["seeds"]),
                        *map(num, rec["em"]), num(rec["avg"]), *(num(rec["also"][f]) for f in also),
                        *map(num, rec["std"]), num(rec["avg_std"]), *(num(rec["also_std"][f]) for f in also),
                        _n_label(rec["n"]), rec["problem"], _stale_cell(rec), *(rec["params"][k] for k in keys)])
    else:
        w.writerow(["experiment", "rev", *SETS, "avg", *also, "n", "problem", "stale", *keys])
        for rec in result["records"]:
            w.writerow([rec["experiment"], rec["rev"], *map(num, rec["em"]), num(rec["avg"]),
                        *(num(rec["also"][f]) for f in also),
                        _n_label(rec["n"]), rec["problem"], _stale_cell(rec), *(rec["params"][k] for k in keys)])
    return out.getvalue()


def plot_averages(result: dict, out: Path, title: str) -> Path:
    """Horizontal bars of each row's average EM, with ± std whiskers for seed groups."""
    from searchr2.curves import pyplot, save_figure

    plt = pyplot()
    recs = [r for r in result["records"] if r["avg"] is not None]
    fig, ax = plt.subplots(figsize=(7, 0.45 * max(len(recs), 1) + 1.2))
    ys = range(len(recs))
    errs = [r.get("avg_std") or 0.0 for r in recs]
    ax.barh(list(ys), [r["avg"] for r in recs], xerr=errs if any(errs) else None, capsize=3, color="#4C72B0")
    ax.set_yticks(list(ys), [r["experiment"] for r in recs], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("average EM ×100 over the seven sets" + (" (seed groups: mean ± sample std)" if any(errs) else ""))
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, out)


def _write(path: str | None, text: str) -> None:
    if path:
        with atomic_file(path) as f:                  # creates the folder too
            f.write(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m searchr2.experiments", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", metavar="FILE", action="append", default=[],
                    help="read saved `dvc exp show --json` output ('-' = stdin) instead of running it; "
                         "repeatable: the files' rows are listed one after another")
    ap.add_argument("--save-json", metavar="FILE",
                    help="write the `dvc exp show --json` input with each run's full results/metrics.json "
                         "embedded, so that a later --json FILE makes the same table, --also and --paired "
                         "included, without the experiments' git refs (e.g. on a fresh clone)")
    ap.add_argument("-A", "--all-commits", action="store_true", help="experiments of every commit, not only HEAD's")
    ap.add_argument("--rev", action="append", default=[], help="experiments of this commit (repeatable)")
    ap.add_argument("--system", default="agent_rl", help="which evaluated system's EM forms a row (default agent_rl)")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="these rows, in this order (a baseline "
                    "commit is branch@rev, e.g. main@1a2b3c4, or just its branch)")
    ap.add_argument("--exclude", nargs="+", metavar="NAME", default=[], help="leave these rows out")
    ap.add_argument("--rename", action="append", default=[], metavar="OLD=NEW", help="show row OLD as NEW")
    ap.add_argument("--workspace", action="store_true", help="also show the workspace (uncommitted results), "
                    "marked stale when `dvc status` finds its stages out of date")
    ap.add_argument("--group-over", nargs="+", metavar="PARAM", default=[],
                    help="aggregate rows that differ only in these params (e.g. rl.seed): mean ± std per cell")
    ap.add_argument("--ignore", nargs="+", metavar="PARAM", default=[],
                    help="params left out of the differing columns and of the grouping (e.g. evaluate.systems)")
    ap.add_argument("--also", nargs="+", metavar="FIELD", default=[],
                    help="more columns: the mean over the seven sets of another per-set metric "
                         "(searches, turns, f1, cover_em, answered), or a number of the RL run's summary "
                         f"{RL_FILE} as rl.PATH (e.g. rl.revisions.n, rl.revisions.diff, rl.best_step)")
    ap.add_argument("--paired", nargs=2, action="append", default=[], metavar=("A", "B"),
                    help="also the paired difference of average EM, A minus B, on the same questions, with its "
                         "95%% bootstrap interval; A and B are row names, each optionally ROW:SYSTEM (default "
                         "--system), e.g. --paired search-r2 search-r1 or --paired workspace:agent_rl "
                         "workspace:agent_sft (repeatable)")
    ap.add_argument("--bootstrap", nargs=2, type=int, default=[2000, 0], metavar=("SAMPLES", "SEED"),
                    help="resamples and seed of the paired intervals (default 2000 0, as evaluate.bootstrap_*)")
    ap.add_argument("--md", metavar="PATH", help="write the Markdown table here (it is always printed)")
    ap.add_argument("--csv", metavar="PATH", help="write the CSV here")
    ap.add_argument("--png", metavar="PATH", help="bar chart of the averages (± std when grouped)")
    args = ap.parse_args(argv)

    try:
        if args.json:
            show = []
            for name in args.json:
                src = sys.stdin.read() if name == "-" else Path(name).read_text()
                try:
                    part = json.loads(src)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{name}: line {e.lineno}: not JSON ({e.msg})") from e
                if not isinstance(part, list):
                    raise ValueError(f"{name}: not `dvc exp show --json` output: expected a JSON list of revisions")
                show += part
            source = "from " + ", ".join(args.json)
        else:
            show = run_exp_show(args.all_commits, args.rev)
            source = "from `dvc exp show --json" + (" -A" if args.all_commits else "") + \
                "".join(f" --rev {r}" for r in args.rev) + "`"
        if args.save_json:          # embedded first, so the rows below need no second read from git
            show = embed_full_metrics(show)
            _write(args.save_json, json.dumps(show, indent=1) + "\n")
        rows = parse_exp_show(show)
        renames = {}
        for item in args.rename:
            old, sep, new = item.partition("=")
            if not sep or not old or not new:
                raise ValueError(f"--rename {item!r}: expected OLD=NEW")
            renames[old] = new
        for r in rows:
            r.name = next((new for old, new in renames.items() if matches(r, old)), r.name)
        shown, unfinished = select(rows, args.only, args.exclude, args.workspace)
        if not shown:
            raise ValueError("no finished experiment or baseline to show")
        for r in shown:
            # --also and --paired need the whole file; only for a run with a summary (else it may be an older run's)
            if ((args.also or args.paired) and r.metrics is not None and not r.full
                    and (full := load_full_metrics(r)) is not None):
                r.metrics, r.full = full, True
            if r.kind != "workspace":
                continue
            if args.json:
                r.status_error = f"the table was read from {', '.join(args.json)}; run `dvc status`"
                continue
            try:
                r.status = run_dvc_status()
            except RuntimeError as e:
                r.status_error = str(e)
        ignore = tuple(args.ignore)
        also = tuple(args.also)
        result = (aggregate(shown, args.system, tuple(args.group_over), ignore, also) if args.group_over
                  else table(shown, args.system, ignore, also))
        groups = [rec["rows"] for rec in result["records"]] if args.group_over else None
        pairs = paired_records(shown, [tuple(p) for p in args.paired], args.system, tuple(args.bootstrap), groups)
    except (ValueError, RuntimeError, OSError) as e:
        print(f"[experiments] error: {e}", file=sys.stderr)
        return 2
    md = to_markdown(result, args.system, unfinished, source)
    if pairs:
        md += paired_markdown(pairs, tuple(args.bootstrap))
    print(md, end="")
    _write(args.md, md)
    _write(args.csv, to_csv(result))
    if args.png:
        plot_averages(result, Path(args.png), f"average EM of {args.system}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
