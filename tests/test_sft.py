"""The warm-up trainer (searchr2.sft) and its stage (stages/sft.py), on a tiny random model.

Records are built the way the rollout engine builds them: prompt and tool text with mask 0, the
model's own turns with mask 1, each part tokenised on its own and appended as ids.
"""
import json
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from conftest import (ENV, LAUNCHERS, NAMES, assert_killed, assert_trained_alike, launch_two_processes,
                      make_tiny_model, run)
from searchr2.io import InputError
from searchr2.models import load_model, load_tokenizer
from searchr2.sft import MaskedLMLoss, MicroBatches, SFTConfig, backward_step, load_sft_data, train_sft
from searchr2.training import IGNORE, collate, plan_micro_batches

# small, fast, and with every knob that changes the arithmetic exercised (several micro-batches per step)
CFG = SFTConfig(lr=3e-3, epochs=3, micro_batch_tokens=256, grad_accum=2, warmup_ratio=0.2, weight_decay=0.01,
                max_grad_norm=1.0, seed=0, freeze_layers=0, max_seq_len=256, save_every_steps=2, device="cpu",
                mixed_precision="fp32", refiner_loss_weight=1.0)


pytestmark = pytest.mark.usefixtures("one_thread")   # see conftest.one_thread


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft")
    return make_tiny_model(root, seed=3, verb="born")


@pytest.fixture(scope="module")
def tok(base):
    return load_tokenizer(base)


def make_record(tok, i: int, hops: int = 1) -> dict:
    """A search trajectory in the protocol; ``hops`` searches make it longer."""
    a, b = NAMES[i % 5], NAMES[(i * 2 + 1) % 5]
    parts = [(f"<|im_start|>user\nWhere was {a} born?<|im_end|>\n<|im_start|>assistant\n", 0)]
    for h in range(hops):
        parts += [(f"<think>I look up {a} ({h}).</think><search>{a}</search>", 1),
                  (f"<information>Doc 1(Title: {a}) {a} was born near {b} in {1900 + i}.</information>", 0)]
    parts.append((f"<answer>{b}</answer><|im_end|>", 1))
    ids, mask = [], []
    for text, m in parts:
        piece = tok(text, add_special_tokens=False)["input_ids"]
        ids += piece
        mask += [m] * len(piece)
    return {"id": f"q{i}", "token_ids": ids, "loss_mask": mask, "question": f"Where was {a} born?"}


def write_files(folder: Path, actor: list, refiner: list) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, rows in (("actor.jsonl", actor), ("refiner.jsonl", refiner)):
        (folder / name).write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
        paths.append(folder / name)
    return paths


@pytest.fixture(scope="module")
def files(tok, tmp_path_factory):
    """Ten records of three lengths in two files."""
    folder = tmp_path_factory.mktemp("data")
    return write_files(folder, [make_record(tok, i, hops=1 + i % 3) for i in range(7)],
                       [make_record(tok, i, hops=2) for i in range(7, 10)])


def _logged_steps(live_dir: Path) -> list[int]:
    """The step column of dvclive's loss curve."""
    header, *rows = (live_dir / "plots/metrics/loss.tsv").read_text().splitlines()
    col = header.split("\t").index("step")
    return [int(r.split("\t")[col]) for r in rows]


def _weights(model_dir: Path) -> dict:
    return load_model(model_dir).state_dict()


# ------------------------------------------------------------------------------------------- loss

def _reference_labels(records):
    """Unshifted labels for ``lm(input_ids, labels=...)``: the token itself where it is learnt."""
    width = max(len(r["token_ids"]) for r in records)
    labels = torch.full((len(records), width), IGNORE)
    for row, r in enumerate(records):
        for t, (tid, m) in enumerate(zip(r["token_ids"], r["loss_mask"])):
            if m:
                labels[row, t] = tid
    return labels


def _as_records(rows, path=Path("x.jsonl")):
    return load_sft_data([_rows_file(rows, path)], vocab_size=10_000, max_seq_len=10_000).records


def _rows_file(rows, path):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_masked_head_loss_equals_the_full_logits_loss(base, tok, tmp_path):
    rows = [make_record(tok, 0, hops=1), make_record(tok, 1, hops=3), make_record(tok, 2, hops=2)]
    batch = collate(_as_records(rows, tmp_path / "r.jsonl"))
    assert batch["attention_mask"].sum(1).tolist() == [len(r["token_ids"]) for r in rows]   # right padding

    lm = load_model(base)
    masked = MaskedLMLoss(lm)(**batch) / (batch["labels"] != IGNORE).sum()
    masked.backward()
    grads = {n: p.grad.clone() for n, p in lm.named_parameters()}
    lm.zero_grad()
    reference = lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   labels=_reference_labels(rows)).loss
    reference.backward()
    assert masked.item() == pytest.approx(reference.item(), rel=1e-5)
    for n, p in lm.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, rtol=1e-4, atol=1e-6, msg=n)


def test_a_step_weighs_every_loss_token_equally(base, tok, tmp_path):
    """Two micro-batches of very different loss-token counts give the gradient of their joint mean loss."""
    from accelerate import Accelerator

    short, long_ = make_record(tok, 0, hops=1), make_record(tok, 1, hops=4)
    records = _as_records([short, long_], tmp_path / "r.jsonl")
    lm = load_model(base)
    stats = backward_step(Accelerator(cpu=True), MaskedLMLoss(lm), [collate(records[:1]), collate(records[1:])])
    grads = {n: p.grad.clone() for n, p in lm.named_parameters()}
    lm.zero_grad()
    batch = collate(records)
    reference = lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   labels=_reference_labels([short, long_])).loss
    reference.backward()
    assert stats["loss"] == pytest.approx(reference.item(), rel=1e-5)
    assert stats["loss_tokens"] == sum(sum(r["loss_mask"]) for r in (short, long_))
    assert stats["tokens"] == len(short["token_ids"]) + len(long_["token_ids"])
    for n, p in lm.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, rtol=1e-4, atol=1e-6, msg=n)


def test_refiner_decisions_weigh_refiner_loss_weight(base, tok, tmp_path):
    """Tokens a record lists in ``decisions`` weigh decision_weight, every other learnt token 1: the step's
    loss is sum(w * ce) / sum(w) over the loss tokens, also when the decision ends an Actor record."""
    from accelerate import Accelerator

    actor, refiner = make_record(tok, 0, hops=3), make_record(tok, 1, hops=1)
    refiner["loss_mask"] = [0] * (len(refiner["token_ids"]) - 1) + [1]
    refiner["decisions"] = [len(refiner["token_ids"]) - 1]
    actor["decisions"] = [max(i for i, m in enumerate(actor["loss_mask"]) if m)]   # its last learnt token
    paths = write_files(tmp_path, [actor], [refiner])
    data = load_sft_data(paths, vocab_size=len(tok), max_seq_len=4096, decision_weight=7.0)
    lm = load_model(base)
    batch = collate(data.records)
    with torch.no_grad():
        hidden = lm.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        ce = F.cross_entropy(lm.lm_head(hidden).transpose(1, 2), batch["labels"], ignore_index=IGNORE, reduction="none")
    keep = batch["labels"] != IGNORE
    weights = torch.ones_like(ce)
    for row, r in enumerate((actor, refiner)):
        weights[row, r["decisions"][0] - 1] = 7.0     # position t - 1 predicts token t
    assert torch.equal(batch["loss_weights"][keep], weights[keep])
    stats = backward_step(Accelerator(cpu=True), MaskedLMLoss(lm), [batch])
    assert stats["loss"] == pytest.approx(float((ce * weights)[keep].sum() / weights[keep].sum()), rel=1e-5)
    assert stats["loss_tokens"] == int(keep.sum())
    # passes: the refiner file's records are listed (trained) that many times an epoch
    thrice = load_sft_data(paths, vocab_size=len(tok), max_seq_len=4096, passes={paths[1]: 3})
    assert thrice.counts() == {"actor.jsonl": 1, "refiner.jsonl": 3}
    assert [r.id for r in thrice.records] == [actor["id"]] + [refiner["id"]] * 3
    with pytest.raises(ValueError, match="not read"):
        load_sft_data(paths, vocab_size=len(tok), max_seq_len=4096, passes={tmp_path / "other.jsonl": 2})
    # a decision must be a learnt token of its record
    refiner["decisions"] = [0]
    bad = write_files(tmp_path / "bad", [actor], [refiner])
    with pytest.raises(InputError, match=r"refiner.jsonl:1: field 'decisions': position 0 is not a learnt token"):
        load_sft_data(bad, vocab_size=len(tok), max_seq_len=4096)


def test_micro_batches_change_order_each_epoch_and_follow_the_seed():
    rng = torch.Generator().manual_seed(0)
    lengths = torch.randint(20, 400, (300,), generator=rng).tolist()
    plan = plan_micro_batches(lengths, max_tokens=1024, seed=1)
    data = MicroBatches([], plan, seed=1)
    data.set_epoch(0)
    first = list(data.order)
    data.set_epoch(1)
    assert data.order != first and sorted(data.order) == sorted(first)
    data.set_epoch(0)
    assert data.order == first


# ------------------------------------------------------------------------------------- validation

def _bad(record_update=None, drop=None, raw=None):
    def make(tok):
        if raw is not None:
            return raw
        r = make_record(tok, 1)
        r.update(record_update or {})
        if drop:
            del r[drop]
        return r
    return make


BAD = {
    "missing token_ids": (_bad(drop="token_ids"), "token_ids", "missing"),
    "missing loss_mask": (_bad(drop="loss_mask"), "loss_mask", "missing"),
    "missing id": (_bad(drop="id"), "id", "missing"),
    "token_ids not a list": (_bad({"token_ids": "1 2 3"}), "token_ids", "expected list"),
    "token id a string": (_bad({"token_ids": [1, "2", 3], "loss_mask": [0, 1, 1]}), "token_ids", "item 1 is '2'"),
    "mask a bool": (_bad({"token_ids": [1, 2, 3], "loss_mask": [0, True, 1]}), "loss_mask", "item 1 is True"),
    "lengths differ": (_bad({"token_ids": [1, 2, 3], "loss_mask": [0, 1]}), "loss_mask", "has 2 entries"),
    "mask value 2": (_bad({"token_ids": [1, 2, 3], "loss_mask": [0, 2, 1]}), "loss_mask", "0 or 1; position 1"),
    "no loss token": (_bad({"token_ids": [1, 2, 3], "loss_mask": [0, 0, 0]}), "loss_mask", "no token to learn"),
    "loss on first token": (_bad({"token_ids": [1, 2, 3], "loss_mask": [1, 1, 1]}), "loss_mask", "first token"),
    "id past the vocab": (_bad({"token_ids": [1, 2, 10**6], "loss_mask": [0, 1, 1]}), "token_ids", "position 2"),
    "negative id": (_bad({"token_ids": [1, -1, 2], "loss_mask": [0, 1, 1]}), "token_ids", "outside"),
    "empty token_ids": (_bad({"token_ids": [], "loss_mask": []}), "token_ids", "is empty"),
    "malformed json": (_bad(raw='{"id": "x", "token_ids": [1, 2'), None, "not valid JSON"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_records_are_named_by_file_line_and_field(case, tok, tmp_path):
    make, field, message = BAD[case]
    # line 1 good, line 2 blank (skipped but counted), line 3 bad: in the refiner file, the second one read
    paths = write_files(tmp_path, [make_record(tok, 0)], [make_record(tok, 2), "", make(tok)])
    with pytest.raises(InputError) as e:
        load_sft_data(paths, vocab_size=len(tok), max_seq_len=4096)
    assert (e.value.path, e.value.line, e.value.field) == (str(paths[1]), 3, field)
    assert str(e.value).startswith(f"{paths[1]}:3: ") and message in str(e.value)


def test_no_records_or_a_missing_file_is_an_error(tok, tmp_path):
    paths = write_files(tmp_path, [], [])
    with pytest.raises(InputError, match="no training records in .*actor.jsonl, .*refiner.jsonl: the files are empty"):
        load_sft_data(paths, vocab_size=len(tok), max_seq_len=4096)
    paths[1].unlink()
    paths[0].write_text(json.dumps(make_record(tok, 0)) + "\n")
    with pytest.raises(InputError, match="refiner.jsonl: file not found"):
        load_sft_data(paths, vocab_size=len(tok), max_seq_len=4096)


def test_long_records_are_skipped_and_counted(tok, tmp_path, capsys):
    short, long_ = make_record(tok, 0, hops=1), make_record(tok, 1, hops=5)
    limit = len(short["token_ids"]) + 1
    data = load_sft_data(write_files(tmp_path, [short, long_, long_], [short]), vocab_size=len(tok), max_seq_len=limit)
    assert [r.id for r in data.records] == ["q0", "q0"] and data.skipped == 2
    assert data.counts() == {"actor.jsonl": 1, "refiner.jsonl": 1}
    assert "skipped 2 record(s) longer than sft.max_seq_len" in capsys.readouterr().err
    with pytest.raises(InputError, match="all 2 are longer than sft.max_seq_len"):
        load_sft_data(write_files(tmp_path, [long_, long_], []), vocab_size=len(tok), max_seq_len=limit)


def test_config_is_validated():
    with pytest.raises(ValueError, match="micro_batch_tokens .* must be >= max_seq_len"):
        replace(CFG, max_seq_len=512, micro_batch_tokens=256)
    with pytest.raises(ValueError, match="mixed_precision must be one of"):
        replace(CFG, mixed_precision="fp8")
    with pytest.raises(ValueError, match="warmup_ratio"):
        replace(CFG, warmup_ratio=1.0)
    with pytest.raises(ValueError, match="refiner_loss_weight"):
        replace(CFG, refiner_loss_weight=0.0)


# -------------------------------------------------------------------------------------- training

def _loss_on(model_dir: Path, data) -> float:
    batch = collate(data.records)
    with torch.no_grad():
        return (MaskedLMLoss(load_model(model_dir))(**batch) / (batch["labels"] != IGNORE).sum()).item()


def test_training_lowers_the_loss_and_writes_a_loadable_model(base, tok, files, tmp_path):
    data = load_sft_data(files, vocab_size=len(tok), max_seq_len=CFG.max_seq_len)
    cfg = replace(CFG, epochs=12, lr=1e-2)
    summary = train_sft(cfg, data, base, tmp_path / "model", tmp_path / "ckpt", live_dir=tmp_path / "live")

    assert summary["steps"] == 12 * -(-summary["micro_batches_per_epoch"] // cfg.grad_accum)
    assert summary["final_loss"] < 0.3 * summary["first_loss"]
    assert _loss_on(tmp_path / "model", data) < 0.3 * _loss_on(base, data)          # the saved weights are the trained ones
    assert summary["records"] == 10 and summary["records_by_file"] == {"actor.jsonl": 7, "refiner.jsonl": 3}
    assert summary["train_tokens"] == 12 * sum(len(r) for r in data.records)
    assert summary["loss_tokens"] == 12 * sum(int(r.mask[1:].sum()) for r in data.records)
    assert summary["resumed_from_step"] == 0 and summary["tokens_per_s"] > 0

    # a complete directory: model, tokenizer (same as the base), provenance; the checkpoint is gone
    assert load_tokenizer(tmp_path / "model")("Mira Tesk")["input_ids"] == tok("Mira Tesk")["input_ids"]
    provenance = json.loads((tmp_path / "model/searchr2_model.json").read_text())
    assert provenance["source"] == "sft" and provenance["sft"]["epochs"] == 12
    assert set(provenance["data"]) == set(map(str, files)) and provenance["base_provenance"]["source"] == "tiny"
    assert list((tmp_path / "ckpt").iterdir()) == []
    # dvclive: one row per optimizer step, and a summary
    assert _logged_steps(tmp_path / "live") == list(range(1, summary["steps"] + 1))
    assert json.loads((tmp_path / "live/metrics.json").read_text())["final_loss"] == pytest.approx(summary["final_loss"])


def test_frozen_layers_and_embeddings_do_not_change(base, tok, files, tmp_path):
    data = load_sft_data(files, vocab_size=len(tok), max_seq_len=CFG.max_seq_len)
    summary = train_sft(replace(CFG, epochs=1, freeze_layers=1), data, base, tmp_path / "model", tmp_path / "ckpt")
    assert summary["trainable_params"] < sum(p.numel() for p in load_model(base).model.layers[1].parameters()) + 100
    before, after = _weights(base), _weights(tmp_path / "model")
    assert torch.equal(before["model.embed_tokens.weight"], after["model.embed_tokens.weight"])
    assert torch.equal(before["model.layers.0.mlp.up_proj.weight"], after["model.layers.0.mlp.up_proj.weight"])
    assert not torch.equal(before["model.layers.1.mlp.up_proj.weight"], after["model.layers.1.mlp.up_proj.weight"])
    with pytest.raises(InputError, match="config.json: field 'num_hidden_layers': sft.freeze_layers=2 would freeze "
                                         "every layer: this model has 2"):
        train_sft(replace(CFG, freeze_layers=2), data, base, tmp_path / "m2", tmp_path / "c2")


class _Killed(BaseException):
    pass


def _kill_after_checkpoint(monkeypatch, n: int):
    """Make the n-th checkpoint save the last thing the run does, like a SIGTERM right after it."""
    import searchr2.sft as sft

    original, calls = sft.save_checkpoint, []

    def save_then_die(accelerator, root, progress):
        path = original(accelerator, root, progress)
        calls.append(progress["step"])
        if len(calls) == n:
            raise _Killed(progress["step"])
        return path

    monkeypatch.setattr(sft, "save_checkpoint", save_then_die)
    return calls


def test_resume_gives_exactly_the_weights_of_an_uninterrupted_run(base, tok, files, tmp_path, monkeypatch):
    data = load_sft_data(files, vocab_size=len(tok), max_seq_len=CFG.max_seq_len)
    whole = train_sft(CFG, data, base, tmp_path / "whole", tmp_path / "ckpt_whole", live_dir=tmp_path / "live_whole")

    with monkeypatch.context() as m:
        calls = _kill_after_checkpoint(m, 3)      # a mid-epoch checkpoint of the second epoch
        with pytest.raises(_Killed):
            train_sft(CFG, data, base, tmp_path / "resumed", tmp_path / "ckpt", live_dir=tmp_path / "live")
    killed_at = calls[-1]
    assert not (tmp_path / "resumed").exists()
    assert [d.name for d in (tmp_path / "ckpt").iterdir()] == [f"step-{killed_at:07d}"]

    summary = train_sft(CFG, data, base, tmp_path / "resumed", tmp_path / "ckpt", live_dir=tmp_path / "live")
    assert 0 < summary["resumed_from_step"] == killed_at < summary["steps"] == whole["steps"]
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "resumed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert summary["final_loss"] == whole["final_loss"] and summary["train_tokens"] == whole["train_tokens"]
    # the curves of the resumed run continue the killed one without repeating a step
    assert _logged_steps(tmp_path / "live") == list(range(1, whole["steps"] + 1))


# ---------------------------------------------------------------------- several processes (CPU)

@pytest.fixture(scope="module")
def two_process_runs(base, files, tmp_path_factory):
    """tests/sft_dist_worker.py on 2 CPU processes, by launcher, each run once: (work dir, rank summaries)."""
    done = {}

    def run_with(launcher: str, *flags: str):
        if (launcher, flags) not in done:
            work = tmp_path_factory.mktemp(f"sft-{launcher}")
            proc = launch_two_processes(launcher, "sft_dist_worker.py", base, files[0].parent, work, *flags)
            assert proc.returncode == 0, proc.stderr[-4000:]
            done[launcher, flags] = work, [json.loads((work / f"rank{r}.json").read_text()) for r in (0, 1)]
        return done[launcher, flags]

    return run_with


@pytest.mark.slow
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_two_process_runs_train_the_same_weights_under_ddp_and_deepspeed(base, two_process_runs, launcher):
    """The repo's launch configs (DDP; DeepSpeed ZeRO-2, ZeRO-3 with the model loaded partitioned and
    gathered to save), 2 processes on CPU: each process trains its share, the loss falls, and every
    launcher ends at the DDP run's weights."""
    work, (summary, other) = two_process_runs(launcher)
    assert other is None                                   # only the main process reports
    assert (summary["processes"], summary["zero_stage"]) == (2, LAUNCHERS[launcher])
    assert summary["steps"] > 0 and summary["final_loss"] < summary["first_loss"]
    assert json.loads((work / "out/searchr2_model.json").read_text())["source"] == "sft"
    assert_trained_alike(_weights(work / "out"), _weights(two_process_runs("ddp")[0] / "out"), _weights(base))


@pytest.mark.slow
def test_zero3_and_ddp_take_the_same_gradient_steps(base, two_process_runs):
    """With SGD and no clip the update is lr x the gradient, so a gradient that ZeRO-3 scaled or averaged
    differently from DDP (which AdamW's update would hide) shows here; measured: equal to ~4e-9."""
    work, _ = two_process_runs("deepspeed-zero3", "--sgd")
    assert_trained_alike(_weights(work / "out"), _weights(two_process_runs("ddp", "--sgd")[0] / "out"),
                         _weights(base), tolerance=1e-4)


@pytest.mark.slow
def test_a_killed_zero3_run_resumes_from_its_sharded_checkpoint_to_the_same_weights(base, files, two_process_runs,
                                                                                   tmp_path):
    args = (base, files[0].parent, tmp_path)
    assert_killed(launch_two_processes("deepspeed-zero3", "sft_dist_worker.py", *args, "--die-after", "2"))
    assert not (tmp_path / "out").exists() and len(list((tmp_path / "ckpt").iterdir())) == 1
    resumed = launch_two_processes("deepspeed-zero3", "sft_dist_worker.py", *args)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    summary = json.loads((tmp_path / "rank0.json").read_text())
    whole_work, (whole, _) = two_process_runs("deepspeed-zero3")
    assert 0 < summary["resumed_from_step"] < summary["steps"] == whole["steps"]
    assert summary["final_loss"] == whole["final_loss"]
    a, b = _weights(whole_work / "out"), _weights(tmp_path / "out")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _logged_steps(tmp_path / "live") == list(range(1, whole["steps"] + 1))


def test_a_stale_checkpoint_is_discarded(base, tok, files, tmp_path, monkeypatch, capsys):
    data = load_sft_data(files, vocab_size=len(tok), max_seq_len=CFG.max_seq_len)
    with monkeypatch.context() as m:
        _kill_after_checkpoint(m, 1)
        with pytest.raises(_Killed):
            train_sft(CFG, data, base, tmp_path / "model", tmp_path / "ckpt")
    assert len(list((tmp_path / "ckpt").iterdir())) == 1
    capsys.readouterr()

    summary = train_sft(replace(CFG, lr=1e-3), data, base, tmp_path / "model", tmp_path / "ckpt")
    err = capsys.readouterr().err
    assert "discarding the checkpoint at step 2" in err and "resuming" not in err
    assert summary["resumed_from_step"] == 0


# ----------------------------------------------------------------------------------------- stage

def _prepare_stage(repo: Path, tok_rows: list, sft: dict) -> None:
    """The smoke profile with ``sft`` overrides, a tiny base model and the two input files in the copy."""
    params = yaml.safe_load((repo / "configs/smoke.yaml").read_text())
    params["sft"].update(sft)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    make_tiny_model(repo, seed=3, verb="born", out=repo / "data/models/base")
    write_files(repo / "data/sft", *tok_rows)


def test_stage_reports_a_bad_record_in_one_line(repo_copy, tok):
    bad = make_record(tok, 1)
    bad["loss_mask"][0] = 1
    _prepare_stage(repo_copy, ([make_record(tok, 0), bad], [make_record(tok, 2)]), {})
    proc = run([sys.executable, "-m", "stages.sft"], repo_copy, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "data/sft/actor.jsonl:2: field 'loss_mask': the first token cannot carry loss" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (repo_copy / "data/models/sft").exists()


@pytest.mark.slow
def test_stage_killed_after_a_checkpoint_resumes_and_finishes(repo_copy, tok):
    repo = repo_copy
    rows = [make_record(tok, i, hops=1 + i % 2) for i in range(40)]
    _prepare_stage(repo, (rows[:30], rows[30:]), {"epochs": 12, "grad_accum": 1, "micro_batch_tokens": 256,
                                                   "max_seq_len": 256, "save_every_steps": 20})
    # one thread: two threads on a core another process is using run ~30x slower
    env = {**ENV, "OMP_NUM_THREADS": "1"}
    ckpt = repo / "data/checkpoints/sft"
    proc = subprocess.Popen([sys.executable, "-m", "stages.sft"], cwd=repo, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (ckpt.is_dir() and any(d.name.startswith("step-") for d in ckpt.iterdir())):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    # nothing half-written: complete checkpoints only, no temporary directories, no model
    assert [d.name for d in ckpt.iterdir() if not d.name.startswith("step-")] == []
    assert all((d / "progress.json").exists() for d in ckpt.iterdir())
    assert [p.name for p in (repo / "data/models").iterdir()] == ["base"]

    proc = subprocess.run([sys.executable, "-m", "stages.sft"], cwd=repo, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming from step" in proc.stderr
    summary = json.loads((repo / "results/sft.json").read_text())
    assert 0 < summary["resumed_from_step"] < summary["steps"]
    assert summary["profile"] == "smoke" and summary["records"] == 40
    assert summary["final_loss"] < 0.5 * summary["first_loss"]
    model = load_model(repo / "data/models/sft")
    assert model.config.model_type == "qwen2"
    assert load_tokenizer(repo / "data/models/sft").decode(rows[0]["token_ids"]).startswith("<|im_start|>user")
    assert list(ckpt.iterdir()) == []
    assert _logged_steps(repo / "results/sft") == list(range(1, summary["steps"] + 1))
