"""One process of a 2-process data-parallel RL run on CPU (gloo), launched by tests/test_rl.py:

    python -m torch.distributed.run --nproc_per_node 2 tests/rl_ddp_worker.py <base model dir> <work dir>

Rank 1 scores every trajectory alike, so its share has nothing to train on while rank 0's has: the
step must still complete (rank 1 joins the gradient all-reduce with a zero gradient).
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import searchr2.rl as rl  # noqa: E402
from searchr2.models import load_tokenizer  # noqa: E402
from searchr2.refiner import RefinerConfig  # noqa: E402
from searchr2.reward import RewardConfig  # noqa: E402
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
    cfg = rl.RLConfig(**{**CFG.__dict__, "questions_per_step": 2, "steps": 2, "val_every": 1})
    summary = rl.train_rl(cfg, ROLLOUT, RefinerConfig(obs_tokens=10), RewardConfig(process=False), _records(12),
                          load_tokenizer(base), WordRetriever(), None, base, work / "out", work / "ckpt",
                          work / "best", work / "live", {"x": "1"})
    policy_sum = sum(float(p.double().sum()) for p in rl.load_model(work / "out").parameters())
    (work / f"rank{dist.get_rank()}.json").write_text(json.dumps({**summary, "out_sum": policy_sum}))


if __name__ == "__main__":
    main()
