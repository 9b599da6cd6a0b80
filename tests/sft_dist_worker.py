"""One process of a 2-process warm-up (SFT) run on CPU, launched by tests/test_sft.py through
conftest.launch_two_processes, with DDP (torchrun, gloo) or a DeepSpeed ZeRO-2/3 config:

    python tests/sft_dist_worker.py <base model dir> <data dir> <work dir> [--die-after N] [--sgd]

It trains on <data dir>/actor.jsonl and refiner.jsonl with tests/test_sft.py's CFG and writes each
rank's summary to <work dir>/rank<r>.json. --die-after N: both processes exit (code 75) right after
the N-th checkpoint is written, as a killed run would. --sgd: plain SGD instead of AdamW, with no
gradient clip, so the weights move by exactly lr x the gradient (AdamW's update would hide a gradient
scaled by a constant factor).
"""
import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]   # the repo, and conftest for tests.test_sft

from tests.distributed_cpu import allow_deepspeed_on_cpu  # noqa: E402

allow_deepspeed_on_cpu()

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import searchr2.sft as sft  # noqa: E402
from searchr2.models import load_tokenizer  # noqa: E402
from tests.distributed_cpu import die_after_checkpoints  # noqa: E402
from tests.test_sft import CFG  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("paths", nargs=3, type=Path)
    parser.add_argument("--die-after", type=int)
    parser.add_argument("--sgd", action="store_true")
    args = parser.parse_args()
    base, data_dir, work = args.paths
    torch.set_num_threads(1)
    cfg = CFG
    if args.die_after:
        die_after_checkpoints(sft, args.die_after)
    if args.sgd:
        sft.make_optimizer = lambda lm, lr, weight_decay: torch.optim.SGD(
            [p for p in lm.parameters() if p.requires_grad], lr=lr)
        cfg = replace(CFG, max_grad_norm=1e9)
    data = sft.load_sft_data([data_dir / "actor.jsonl", data_dir / "refiner.jsonl"],
                             vocab_size=len(load_tokenizer(base)), max_seq_len=cfg.max_seq_len)
    summary = sft.train_sft(cfg, data, base, work / "out", work / "ckpt", live_dir=work / "live")
    (work / f"rank{dist.get_rank()}.json").write_text(json.dumps(summary))


if __name__ == "__main__":
    main()
