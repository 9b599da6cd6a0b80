"""Stage `sft`: warm-up fine-tune of the base model on data/sft (loss only on the model's own tokens).

Reads data/sft/actor.jsonl and data/sft/refiner.jsonl (token ids + loss mask) and data/models/base;
writes data/models/sft (a plain Hugging Face directory), results/sft.json (summary metrics) and the
per-step curves in results/sft/ (dvclive). Resumable: data/checkpoints/sft holds the latest training
state while the run is going on. On several GPUs:

    accelerate launch --config_file configs/accelerate/multi-gpu.yaml -m stages.sft
"""
from searchr2.io import write_json
from searchr2.models import load_tokenizer
from searchr2.params import load_params
from searchr2.paths import BASE_MODEL, RESULTS, SFT_ACTOR, SFT_CHECKPOINTS, SFT_REFINER, model_dir
from searchr2.sft import load_sft_data, train_sft
from searchr2.stage import run_stage


def main():
    p = load_params()
    if not (BASE_MODEL / "config.json").exists():
        raise FileNotFoundError(f"{BASE_MODEL}: no base model; run the `model` stage (dvc repro model) first")
    # every record is checked before the model is loaded: a bad line fails in seconds, not after loading 7B
    data = load_sft_data([SFT_ACTOR, SFT_REFINER], len(load_tokenizer(BASE_MODEL)), p.sft.max_seq_len,
                         decision_weight=p.sft.refiner_loss_weight,
                         passes={SFT_REFINER: p.sft.refiner_passes})
    summary = train_sft(p.sft, data, BASE_MODEL, model_dir("sft"), SFT_CHECKPOINTS, live_dir=RESULTS / "sft")
    if summary is not None:    # the main process; the others return None
        write_json(RESULTS / "sft.json", {"profile": p.profile, **summary})


if __name__ == "__main__":
    run_stage("sft", main)
