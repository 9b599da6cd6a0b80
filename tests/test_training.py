"""What both trainers share (searchr2.training): records and micro-batches, optimizer and schedule,
layer freezing, fingerprints, checkpoints and resume, dvclive curves.

The trainers themselves, end to end, are tested in test_sft.py and test_rl.py.
"""
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from conftest import make_tiny_model
from searchr2.io import InputError
from searchr2.models import load_model
from searchr2.rl import RLConfig
from searchr2.sft import SFTConfig
from searchr2.training import (IGNORE, Record, body_attention_mask, check_freeze_layers, clean_checkpoints, collate, fingerprint,
                               freeze_bottom, make_optimizer, open_live, plan_micro_batches, resume, save_checkpoint,
                               trim_live_plots, warmup_factor, warmup_schedule)

CFG = SFTConfig(lr=3e-3, epochs=3, micro_batch_tokens=256, grad_accum=2, warmup_ratio=0.2, weight_decay=0.01,
                max_grad_norm=1.0, seed=0, freeze_layers=0, max_seq_len=256, save_every_steps=2, device="cpu",
                mixed_precision="fp32", refiner_loss_weight=1.0)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("training"), seed=3, verb="born")


def _record(name: str, ids: list[int], mask: list[int], weight: float = 1.0) -> Record:
    return Record(name, "r.jsonl", torch.tensor(ids, dtype=torch.int32), torch.tensor(mask, dtype=torch.bool), weight)


# ----------------------------------------------------------------------------- records and batches

def test_collate_shifts_labels_to_the_predicting_position():
    batch = collate([_record("a", [5, 6, 7, 8], [0, 1, 0, 1]), _record("b", [9, 10], [0, 1], weight=3.0)])
    assert batch["labels"].tolist() == [[6, IGNORE, 8, IGNORE], [10, IGNORE, IGNORE, IGNORE]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch["loss_weights"].tolist() == [[1, 0, 1, 0], [3, 0, 0, 0]]     # the record's weight where it learns


def test_a_right_padded_batch_runs_without_its_mask_and_the_real_tokens_come_out_the_same(base):
    lm = load_model(base)
    assert lm.config._attn_implementation == "sdpa"
    batch = collate([_record("a", list(range(5, 25)), [0] * 10 + [1] * 10), _record("b", [7, 8, 9, 10, 11], [0, 0, 1, 1, 1]),
                     _record("c", list(range(30, 42)), [0] * 6 + [1] * 6)])
    mask = batch["attention_mask"]
    assert mask.sum(1).tolist() == [20, 5, 12]                       # right-padded: ones, then zeros
    assert body_attention_mask(lm, mask) is None
    with torch.no_grad():
        masked = lm.base_model(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state
        causal = lm.base_model(input_ids=batch["input_ids"], attention_mask=None).last_hidden_state
    real = mask.bool()
    assert torch.equal(masked[real], causal[real])                   # to the bit, at every real token
    assert not torch.equal(masked[~real], causal[~real])             # only the pads (never read) differ

    # anything else keeps its mask: left padding, a hole, an empty first column, a flash-attention model
    for other in ([[0, 1, 1], [1, 1, 1]], [[1, 0, 1], [1, 1, 1]], [[0, 0, 0], [1, 1, 0]]):
        other = torch.tensor(other)
        assert body_attention_mask(lm, other) is other
    lm.config._attn_implementation = "flash_attention_2"
    assert body_attention_mask(lm, mask) is mask


def test_micro_batches_fit_the_budget_group_lengths_and_follow_the_seed():
    rng = torch.Generator().manual_seed(0)
    lengths = torch.randint(20, 400, (300,), generator=rng).tolist()
    plan = plan_micro_batches(lengths, max_tokens=1024, seed=1)
    assert sorted(i for b in plan for i in b) == list(range(300))                  # every record once
    assert all(len(b) * max(lengths[i] for i in b) <= 1024 for b in plan)           # within budget
    padded = sum(len(b) * max(lengths[i] for i in b) for b in plan)
    assert padded < 1.15 * sum(lengths)                                             # similar lengths together
    assert plan == plan_micro_batches(lengths, 1024, seed=1) != plan_micro_batches(lengths, 1024, seed=2)


# ------------------------------------------------------------------ optimizer, schedule, freezing

def test_weight_decay_applies_to_matrices_only():
    lm = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    lm[1].weight.requires_grad_(False)
    groups = make_optimizer(lm, lr=0.1, weight_decay=0.5).param_groups
    assert [(g["weight_decay"], [tuple(p.shape) for p in g["params"]]) for g in groups] == \
        [(0.5, [(4, 3)]), (0.0, [(4,), (4,)])]                                     # the frozen norm weight is left out
    assert all(g["lr"] == 0.1 for g in groups)


@pytest.mark.parametrize("decay", [True, False])
def test_warmup_then_decay_or_constant(decay):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = warmup_schedule(optimizer, warmup_steps=2, processes=1, total_steps=8 if decay else None)
    rates = []
    for _ in range(8):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[:3] == [0.0, 0.5, 1.0]                                             # 2 warm-up steps
    assert rates[3:] == ([5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6] if decay else [1.0] * 5)


def test_a_prepared_schedule_is_sized_for_every_process():
    # Accelerate steps a prepared scheduler once per process: with 2 processes it is stepped twice a step
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = warmup_schedule(optimizer, warmup_steps=2, processes=2, total_steps=8)
    rates = []
    for _ in range(8):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
        schedule.step()
    assert rates[:3] == [0.0, 0.5, 1.0] and rates[-1] == pytest.approx(1 / 6)


@pytest.mark.parametrize("total", [8, None])
def test_the_warmup_factor_gives_the_schedules_rates_to_the_bit(total):
    for lr, warmup in ((1.0, 2), (3e-4, 3), (1e-5, 0)):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
        schedule = warmup_schedule(optimizer, warmup_steps=warmup, processes=1, total_steps=total)
        for position in range(10):
            assert lr * warmup_factor(position, warmup, total) == optimizer.param_groups[0]["lr"], (lr, position)
            optimizer.step()
            schedule.step()


def test_freezing_names_the_stage_param(base):
    lm = load_model(base)
    freeze_bottom(lm, 1, "rl")
    assert not lm.get_input_embeddings().weight.requires_grad
    assert not any(p.requires_grad for p in lm.model.layers[0].parameters())
    assert all(p.requires_grad for p in lm.model.layers[1].parameters())
    with pytest.raises(ValueError, match=r"rl\.freeze_layers=2 would freeze every layer: the model has 2"):
        freeze_bottom(load_model(base), 2, "rl")
    with pytest.raises(InputError, match=r"config.json: field 'num_hidden_layers': rl\.freeze_layers=5 would freeze"):
        check_freeze_layers(5, Path(base), "rl")
    check_freeze_layers(1, Path(base), "rl")                                        # one layer left to train


# ------------------------------------------------------------------------------------- checkpoints

def test_fingerprint_follows_params_data_base_model_and_processes(base, tmp_path):
    data = {"a.jsonl": "0" * 64}
    ref = fingerprint(CFG, data, base, 1)
    assert fingerprint(replace(CFG, save_every_steps=99), data, base, 1) == ref      # does not change the result
    assert fingerprint(replace(CFG, lr=1e-4), data, base, 1) != ref
    assert fingerprint(replace(CFG, refiner_loss_weight=50.0), data, base, 1) != ref
    assert fingerprint(CFG, {"a.jsonl": "1" * 64}, base, 1) != ref
    assert fingerprint(CFG, data, base, 2) != ref
    other = tmp_path / "base"
    shutil.copytree(base, other)
    assert fingerprint(CFG, data, other, 1) == ref
    (other / "generation_config.json").write_text("{}")
    assert fingerprint(CFG, data, other, 1) != ref


def test_fingerprint_takes_the_rl_config_too(base):
    cfg = RLConfig()
    ref = fingerprint(cfg, {}, base, 1)
    assert fingerprint(replace(cfg, save_every_steps=7), {}, base, 1) == ref
    assert fingerprint(replace(cfg, refiner_weight=0.5), {}, base, 1) != ref


def test_cleanup_keeps_only_the_latest_complete_checkpoint(tmp_path):
    root = tmp_path / "ckpt"
    for name, complete in (("step-0000002", True), ("step-0000004", True), (".step-0000006.tmp", False),
                           ("step-0000008", False)):
        (root / name).mkdir(parents=True)
        (root / name / "model.bin").write_text("x")
        if complete:
            (root / name / "progress.json").write_text(json.dumps({"step": int(name[5:]), "fingerprint": "f"}))
    clean_checkpoints(root, "f", "sft")
    # the interrupted save is gone; step-8 has no progress file, so it is incomplete and ignored
    assert sorted(d.name for d in root.iterdir()) == ["step-0000004", "step-0000008"]


def test_resume_loads_this_runs_checkpoint_and_discards_another_runs(tmp_path, capsys):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    linear = torch.nn.Linear(2, 2)
    model, optimizer = accelerator.prepare(linear, torch.optim.SGD(linear.parameters(), lr=1.0))
    fresh = {"step": 0, "fingerprint": "run-a"}
    assert resume(accelerator, tmp_path, "run-a", fresh, "rl") == (fresh, False)     # nothing saved yet

    with torch.no_grad():
        model.weight.fill_(3.0)
    save_checkpoint(accelerator, tmp_path, {"step": 5, "fingerprint": "run-a"})
    with torch.no_grad():
        model.weight.fill_(0.0)
    progress, resumed = resume(accelerator, tmp_path, "run-a", fresh, "rl")
    assert resumed and progress == {"step": 5, "fingerprint": "run-a"}
    assert torch.all(model.weight == 3.0)                                            # the saved state is back

    assert resume(accelerator, tmp_path, "run-b", fresh, "rl") == (fresh, False)     # another run's: discarded
    assert "[rl] discarding the checkpoint at step 5" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_a_checkpoint_of_tied_embeddings_is_saved_quietly_and_loads_them_tied_again(base, tmp_path, caplog):
    """The tied output head is written once, without Accelerate's "Removed shared tensor" warning (the
    file is what Accelerate wrote before, when it dropped the copy itself), and comes back tied."""
    from accelerate import Accelerator
    from safetensors.torch import load_file

    from searchr2.sft import MaskedLMLoss

    accelerator = Accelerator(cpu=True)
    lm = load_model(base)
    assert lm.lm_head.weight is lm.get_input_embeddings().weight                    # tied
    model, _ = accelerator.prepare(MaskedLMLoss(lm), make_optimizer(lm, 1e-3, 0.0))
    with caplog.at_level("WARNING"):
        path = save_checkpoint(accelerator, tmp_path, {"step": 1, "fingerprint": "f"})
    assert "Removed shared tensor" not in caplog.text and "shared" not in caplog.text
    saved = load_file(str(path / "model.safetensors"))
    assert "lm.lm_head.weight" not in saved and "lm.model.embed_tokens.weight" in saved
    assert len(saved) == len({id(p) for p in model.state_dict(keep_vars=True).values()})
    assert not accelerator._save_model_state_pre_hook                               # the hook was removed again
    original = lm.lm_head.weight.detach().clone()
    with torch.no_grad():
        lm.get_input_embeddings().weight.zero_()
    resume(accelerator, tmp_path, "f", {"step": 0, "fingerprint": "f"}, "sft")
    assert lm.lm_head.weight is lm.get_input_embeddings().weight and torch.equal(lm.lm_head.weight, original)


# ------------------------------------------------------------------------------------------ dvclive

def _steps(tsv: Path) -> list[int]:
    header, *rows = tsv.read_text().splitlines()
    col = header.split("\t").index("step")
    return [int(row.split("\t")[col]) for row in rows]


def _log_losses(live, losses: dict[int, float]) -> None:
    """Log ``loss`` at each step as the trainers do (step set explicitly), then close the logger."""
    for step, loss in losses.items():
        live.step = step
        live.log_metric("loss", loss)
        live.next_step()
    live.end()


def test_a_resumed_run_continues_its_curves_without_the_killed_runs_extra_rows(tmp_path):
    _log_losses(open_live(tmp_path, 0), {step: float(step) for step in range(1, 5)})
    tsv = tmp_path / "plots" / "metrics" / "loss.tsv"
    assert _steps(tsv) == [1, 2, 3, 4]

    live = open_live(tmp_path, 2)                       # the checkpoint was at step 2: rows 3 and 4 go
    assert _steps(tsv) == [1, 2]
    _log_losses(live, {3: 30.0})
    assert _steps(tsv) == [1, 2, 3]


def test_trimming_leaves_an_empty_curve_file_alone(tmp_path):
    (tmp_path / "plots" / "metrics").mkdir(parents=True)
    (tmp_path / "plots" / "metrics" / "empty.tsv").write_text("")
    trim_live_plots(tmp_path, 1)
    assert (tmp_path / "plots" / "metrics" / "empty.tsv").read_text() == ""


def test_a_run_killed_while_dvclive_wrote_its_files_still_resumes(tmp_path):
    # SIGTERM can land while dvclive rewrites metrics.json (not atomic) or appends a row
    _log_losses(open_live(tmp_path, 0), {step: float(step) for step in range(1, 4)})
    tsv = tmp_path / "plots" / "metrics" / "loss.tsv"
    tsv.write_text(tsv.read_text() + "1700000000\t4")       # a row cut short by the kill
    (tmp_path / "metrics.json").write_text("")               # the summary emptied by the kill
    live = open_live(tmp_path, 2)
    assert _steps(tsv) == [1, 2] and json.loads((tmp_path / "metrics.json").read_text())["step"] == 2
    _log_losses(live, {3: 30.0})
    assert _steps(tsv) == [1, 2, 3] and json.loads((tmp_path / "metrics.json").read_text())["loss"] == 30.0
