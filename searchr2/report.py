"""The report stage's tables and plots: this run's EM per set and system, beside the published rows.

Input: ``results/metrics.json`` as the evaluate stage writes it (``{system: {set: {"em", "n", ...},
"avg": {...}}, "refiner": {...}}``) and the rl stage's dvclive directory. Output: a Markdown report,
the same table as CSV, a bar chart of EM per set per system, and the RL training curves as a PNG.

A cell this run did not measure (a set missing from a system's metrics) is printed as ``–`` and that
row's average is left empty with the missing sets named: an average over fewer sets is a different
number and is never shown as if it were the same one.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from searchr2.io import atomic_file
from searchr2.paths import MODEL_NAMES
from searchr2.published import LADDER_7B, SEARCH_R1_PPO, SET_LABELS, SETS, TABLE2, PublishedRow
from searchr2.stats import decode_scores, interval_text, paired_difference

SYSTEM_LABELS = {
    "direct": "Direct (base model)",
    "rag": "RAG (base model)",
    "direct_tagged": "Direct, tagged answer (base model)",
    "rag_tagged": "RAG, tagged answer (base model)",
    "agent_base": "agent, base model",
    "agent_sft": "agent, SFT warm-up",
    "agent_rl": "agent, after RL",
}
#: the paired differences the report prints, when both systems were evaluated: each step of the pipeline
REPORT_PAIRS = (("rag", "direct"), ("agent_sft", "agent_base"), ("agent_rl", "agent_sft"), ("agent_rl", "rag"))


def ladder_rung(refiner_enabled: bool, process_reward: bool, refiner_weight: float, max_turns: int) -> str:
    """The paper's row (Table 2 / the Table 8 ladder, docs/method.md#ablation-ladder) that an RL run with
    these settings reproduces (``max_turns`` 0: no search, the R1-base row); a combination outside the
    ladder says so."""
    if max_turns == 0:
        if refiner_enabled or process_reward:
            return "none (no search with the Meta-Refiner or the process reward: not a rung)"
        return "R1-base (RL, no search)"
    if not refiner_enabled:
        return "Search-R1" if not process_reward else "none (Search-R1 with the process reward: not a rung)"
    if refiner_weight == 0:
        return "+ Meta-Refiner" if not process_reward else "+ Meta-Refiner + process reward"
    return "Search-R2" if process_reward else "none (Search-R2 without the process reward: not a rung)"


def paper_rows(rl_rung: str) -> dict[str, str]:
    """Which published row each system corresponds to (``rl_rung``: :func:`ladder_rung` of the run)."""
    return {"direct": "Direct inference", "rag": "RAG",
            "direct_tagged": "none (extra: Direct asked for answer tags)",
            "rag_tagged": "none (extra: RAG asked for answer tags)",
            "agent_base": "none (the agent before any training)",
            "agent_sft": "none (the warm-up RL starts from; the paper's SFT row fine-tunes on answers only)",
            "agent_rl": rl_rung}
#: the RL curves drawn in the report, when the run logged them
RL_CURVES = ("reward", "em", "kl", "acceptance_rate", "response_tokens", "val_em")


def fmt_cell(x: float | None, sd: float | None = None, digits: int = 1) -> str:
    """A table cell: ``–`` where nothing was measured, else the value (and ``± sd`` when given)."""
    if x is None:
        return "–"
    return f"{x:.{digits}f}" if sd is None else f"{x:.{digits}f} ± {sd:.{digits}f}"


def system_rows(metrics: dict, sets: tuple[str, ...] = SETS) -> list[dict]:
    """One row per evaluated system: EM per set (None where not measured), the average over all
    ``sets`` (None when any is missing), the sets missing, and the questions per set."""
    rows = []
    order = {name: i for i, name in enumerate(SYSTEM_LABELS)}
    for system, per_set in sorted(metrics.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])):
        if system == "refiner" or not isinstance(per_set, dict):
            continue
        em = [per_set[s]["em"] if isinstance(per_set.get(s), dict) and "em" in per_set[s] else None for s in sets]
        missing = [s for s, v in zip(sets, em) if v is None]
        n = sorted({per_set[s].get("n") for s in sets if isinstance(per_set.get(s), dict)} - {None})
        ci = per_set.get("avg", {}).get("em_ci95") if isinstance(per_set.get("avg"), dict) else None
        rows.append({"system": system, "label": SYSTEM_LABELS.get(system, system), "em": em,
                     "avg": None if missing else sum(em) / len(em), "missing": missing, "n": n,
                     "ci95": None if missing else ci})
    return rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def run_table(rows: list[dict], paper: dict[str, str] | None = None) -> str:
    """This run's EM table: per set, the average and its 95% interval over questions, and (``paper``:
    :func:`paper_rows`) the published row each system stands for."""
    body = []
    for r in rows:
        avg = fmt_cell(r["avg"]) if r["avg"] is not None else f"– (missing: {', '.join(r['missing'])})"
        row = [r["label"], *map(fmt_cell, r["em"]), avg, interval_text(r.get("ci95"))]
        body.append(row + ([paper.get(r["system"], "none")] if paper is not None else []))
    return markdown_table(["system", *SET_LABELS, "avg", "95% CI", *(["paper row"] if paper is not None else [])],
                          body)


def scores_by_set(metrics: dict, system: str, sets: tuple[str, ...] = SETS) -> tuple[dict, dict] | None:
    """``system``'s per-question EMs per set and its question digests, or None when any set lacks them."""
    per_set = metrics.get(system)
    if not isinstance(per_set, dict) or any(not isinstance(per_set.get(s), dict)
                                            or "em_by_question" not in per_set[s] for s in sets):
        return None
    return ({s: decode_scores(per_set[s]["em_by_question"], f"{system}.{s}.em_by_question") for s in sets},
            {s: per_set[s].get("questions_sha") for s in sets})


def paired(a: tuple[dict, dict], b: tuple[dict, dict], bootstrap: tuple[int, int]) -> dict:
    """:func:`searchr2.stats.paired_difference` of two :func:`scores_by_set` results, refused when the
    question digests show that they were not scored on the same questions."""
    differ = [s for s in a[1] if a[1][s] != b[1].get(s)]
    if differ:
        raise ValueError(f"not the same questions in {', '.join(differ)}: a paired comparison needs them equal")
    return paired_difference(a[0], b[0], *bootstrap)


def paired_table(metrics: dict, pairs: tuple[tuple[str, str], ...], bootstrap: tuple[int, int]) -> str:
    """Paired differences of average EM between systems of one run (those of ``pairs`` evaluated)."""
    body = []
    for a, b in pairs:
        sa, sb = scores_by_set(metrics, a), scores_by_set(metrics, b)
        if sa is None or sb is None:
            continue
        d = paired(sa, sb, bootstrap)
        body.append([f"{SYSTEM_LABELS.get(a, a)} − {SYSTEM_LABELS.get(b, b)}", f"{d['diff']:+.1f}",
                     interval_text(d["ci95"]), str(d["a_better"]), str(d["b_better"])])
    if not body:
        return ""
    return markdown_table(["comparison (same questions)", "Δ avg EM", "95% CI", "only first right",
                           "only second right"], body)


def published_table(rows: tuple[PublishedRow, ...]) -> str:
    body = [[r.method, r.model, r.corpus, *map(fmt_cell, r.em),
             fmt_cell(r.avg) + (f" (cells: {r.cells_mean:.1f})" if r.avg_disagrees else ""),
             r.source + (f"; {r.note}" if r.note else "")] for r in rows]
    return markdown_table(["method", "model", "corpus", *SET_LABELS, "avg", "source"], body)


def run_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["system", *SETS, "avg", "missing"])
    for r in rows:
        w.writerow([r["system"], *("" if v is None else f"{v:.2f}" for v in r["em"]),
                    "" if r["avg"] is None else f"{r['avg']:.2f}", " ".join(r["missing"])])
    return out.getvalue()


def plot_em_bars(rows: list[dict], out: Path, title: str) -> Path:
    """Grouped bars: one group per set (and the average), one bar per system; unmeasured cells absent."""
    from searchr2.curves import pyplot, save_figure

    plt = pyplot()
    labels = [*SET_LABELS, "avg"]
    width = 0.8 / max(len(rows), 1)
    fig, ax = plt.subplots(figsize=(10, 3.6))
    for k, r in enumerate(rows):
        values = [*r["em"], r["avg"]]
        xs = [i + (k - (len(rows) - 1) / 2) * width for i, v in enumerate(values) if v is not None]
        ax.bar(xs, [v for v in values if v is not None], width, label=r["label"])
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel("EM ×100")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    top = max([v for r in rows for v in [*r["em"], r["avg"]] if v is not None] + [1.0])
    ax.set_ylim(0, top * 1.3)                      # room for the legend above the tallest bar
    ax.legend(fontsize=7, ncol=min(len(rows), 5), loc="upper center")
    return save_figure(fig, out)


def _pipeline_order(item) -> tuple:
    """base, sft, rl first, in the order the pipeline makes them (metrics.json stores keys sorted)."""
    return (MODEL_NAMES.index(item[0]) if item[0] in MODEL_NAMES else len(MODEL_NAMES), item[0])


def refiner_in_rl(curves: dict, rl_summary: dict | None) -> str:
    """The Meta-Refiner's behaviour during RL in words: the share of first reviews it accepted, per step,
    and what its revisions did to the reward (paired over the revised trajectories, ``revisions`` of the
    rl stage's summary). "" when the run had no refiner."""
    accepted = curves.get("acceptance_rate")
    effect = (rl_summary or {}).get("revisions")
    if not accepted and not effect:
        return ""
    text = "\nMeta-Refiner during RL:"
    if accepted:
        values = accepted[1]
        text += (f" it accepted {100 * sum(values) / len(values):.0f}% of the trajectories on first review over the "
                 f"run (per step: {', '.join(f'{100 * v:.0f}%' for v in values)}; the paper's refiner accepts "
                 "roughly 60-90%).")
    if effect and effect.get("n"):
        ci = effect.get("ci95")
        text += (f" It revised {effect['n']} trajectories; their mean reward went from {effect['before']:.3f} before "
                 f"revision to {effect['after']:.3f} after ({effect['diff']:+.3f}, paired 95% interval "
                 f"{f'[{ci[0]:+.3f}, {ci[1]:+.3f}]' if ci else '–'}; {effect['better']} better, {effect['worse']} worse; "
                 "each is listed in results/rl/revisions.jsonl).")
    elif effect is not None:
        text += " It revised no trajectory."
    return text + "\n"


def write_report(metrics: dict, rl_run_dir: Path | None, out_md: Path, assets: Path, profile: str,
                 corpus_label: str, rl_rung: str = "Search-R2", bootstrap: tuple[int, int] = (2000, 0),
                 rl_summary: dict | None = None) -> dict:
    """Write ``out_md``, ``assets/em.csv``, ``assets/em_by_set.png`` and (when the rl run logged
    curves) ``assets/rl_curves.png``. ``rl_rung``: the paper row the RL run reproduces
    (:func:`ladder_rung`); ``bootstrap``: samples and seed of the paired intervals; ``rl_summary``: the rl
    stage's summary (results/rl.json), for what the refiner did during RL. Returns what was written and
    which rows had missing cells."""
    from searchr2.curves import plot_curves, read_curves

    rows = system_rows(metrics)
    if not rows:
        raise ValueError("no evaluated system in the metrics")
    assets.mkdir(parents=True, exist_ok=True)
    with atomic_file(assets / "em.csv") as f:      # a killed stage leaves the old file or none, never half
        f.write(run_csv(rows))
    plot_em_bars(rows, assets / "em_by_set.png", f"EM per set, profile {profile} ({corpus_label})")
    curves_note = ""
    try:
        curves = read_curves(rl_run_dir) if rl_run_dir is not None else {}
    except FileNotFoundError as e:
        curves, curves_note = {}, f"No RL curves: {e}."
    names = [n for n in RL_CURVES if n in curves]
    if names:
        plot_curves(curves, assets / "rl_curves.png", f"rl training curves, profile {profile}", names)
    n = sorted({k for r in rows for k in r["n"]})
    rel = assets.name
    parts = [
        f"# Results: profile `{profile}`\n\n",
        f"## This run\n\nEM ×100 per set, greedy, Actor only; {corpus_label}; "
        f"{'/'.join(map(str, n)) or '?'} questions per set. The 95% CI is a bootstrap over questions "
        "(resampled within each set) of the average; the paper row is the published row each system "
        "stands for.\n\n",
        run_table(rows, paper_rows(rl_rung)),
    ]
    pairs = paired_table(metrics, REPORT_PAIRS, bootstrap)
    if pairs:
        parts += ["\nPaired differences on the same questions (first system minus second, average EM; the "
                  "interval resamples questions, so a difference whose interval excludes 0 is unlikely to be "
                  "luck of the draw):\n\n", pairs]
    if any(r["missing"] for r in rows):
        parts.append("\nA `–` is a set this run did not evaluate for that system; its average is left out.\n")
    if "refiner" in metrics:
        parts.append("\nMeta-Refiner on held-out labelled trajectories (exact first flawed step; accept/reject; "
                     "revise rate; AUC of P(accept) between clean and flawed ones, 50 = no discrimination):\n\n")
        parts.append(markdown_table(["model", "exact", "accept/reject", "revise rate", "AUC", "n"],
                                    [[m, fmt_cell(100 * v["exact"]), fmt_cell(100 * v["accept_reject"]),
                                      fmt_cell(100 * v["revise_rate"]),
                                      fmt_cell(100 * v["auc"]) if v.get("auc") is not None else "–", str(v["n"])]
                                     for m, v in sorted(metrics["refiner"].items(), key=_pipeline_order)]))
    parts.append(refiner_in_rl(curves, rl_summary))
    parts += [
        "\n## Published (Search-R2 paper, arXiv 2602.03647; docs/method.md#published-numbers), for reference only\n\n"
        "Real benchmarks, full test/dev sets, not comparable cell by cell with the table above unless this "
        "run used the same model, corpus and sets. The Search-R1 Qwen2.5-7B row is Search-R1's GRPO run "
        "(35.0), the one the Search-R2 paper compares against.\n\n",
        published_table(TABLE2),
        "\nSearch-R1's own headline run (PPO), not the row above:\n\n",
        published_table((SEARCH_R1_PPO,)),
        "\nAblation ladder, Qwen2.5-7B (Search-R1 → + Meta-Refiner → + process reward → Search-R2):\n\n",
        published_table(LADDER_7B),
        "\n## Plots\n\n",
        f"![EM per set]({rel}/em_by_set.png)\n",
    ]
    if names:
        parts.append(f"\n![RL curves]({rel}/rl_curves.png)\n")
    elif curves_note:
        parts.append(f"\n{curves_note}\n")
    out_md.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out_md) as f:
        f.write("".join(parts))
    return {"systems": [r["system"] for r in rows], "incomplete": {r["system"]: r["missing"] for r in rows
                                                                   if r["missing"]},
            "rl_curves": names}
