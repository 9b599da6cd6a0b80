"""One process of a 2-process data-parallel RL run on CPU, launched by tests/test_rl.py through
conftest.launch_two_processes, with DDP (torchrun, gloo) or a DeepSpeed ZeRO-2/3 config (DeepSpeed's
CPU accelerator, gloo):

    python tests/rl_dist_worker.py <base model dir> <work dir> [<checkpoints before dying>]

With ``RL_ENGINE=vllm`` in the environment the rollouts run on vLLM (rollout.engine: vllm), one engine
per process (the base model then needs heads vLLM's CPU build takes).

Rank 1 scores every trajectory alike, so its share has nothing to train on while rank 0's has: the
step must still complete (rank 1 joins the gradient all-reduce with a zero gradient; under ZeRO-3 it
also repeats that micro-batch until rank 0 is through its several). With a third argument n, both
processes exit (code 75) right after the n-th checkpoint is written, as a killed run would.
"""
import dataclasses
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.distributed_cpu import allow_deepspeed_on_cpu  # noqa: E402

allow_deepspeed_on_cpu()

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

import searchr2.rl as rl  # noqa: E402
from searchr2.models import load_tokenizer  # noqa: E402
from searchr2.refiner import RefinerConfig  # noqa: E402
from searchr2.reward import RewardConfig  # noqa: E402
from tests.distributed_cpu import die_after_checkpoints  # noqa: E402
from tests.test_rl import CFG, ROLLOUT, fake_score  # noqa: E402
from tests.test_teacher import WordRetriever, _records  # noqa: E402


def score(records, trajectories, cfg, judge=None):
    rows = fake_score(records, trajectories, cfg, judge)
    if dist.get_rank() == 1:
        rows = [{**r, "reward": 1.0} for r in rows]
    return rows


def main():
    base, work = Path(sys.argv[1]), Path(sys.argv[2])
    torch.set_num_threads(1)
    rl.score = score
    if len(sys.argv) > 3:
        die_after_checkpoints(rl, int(sys.argv[3]))
    # one row per micro-batch: rank 0 runs several micro-batches a step, idle rank 1 one (ZeRO-3 must pad)
    cfg = rl.RLConfig(**{**CFG.__dict__, "questions_per_step": 2, "steps": 2, "val_every": 1, "micro_batch_tokens": 64})
    rollout_cfg = dataclasses.replace(ROLLOUT, engine=os.environ.get("RL_ENGINE", "hf"))
    summary = rl.train_rl(cfg, rollout_cfg, RefinerConfig(obs_tokens=10), RewardConfig(process=False), _records(12),
                          load_tokenizer(base), WordRetriever(), None, base, work / "out", work / "ckpt",
                          work / "best", work / "live", {"x": "1"})
    # read from the file: under ZeRO-3 a model loaded in this process would come back partitioned
    policy_sum = sum(float(t.double().sum()) for t in load_file(str(work / "out/model.safetensors")).values())
    (work / f"rank{dist.get_rank()}.json").write_text(json.dumps({**summary, "out_sum": policy_sum}))


if __name__ == "__main__":
    main()
