"""Stage `evaluate_refiner@<model>`: how well one model's Meta-Refiner finds the first flawed step.

    python -m stages.evaluate_refiner sft      # base | sft | rl

Reads the held-out labelled trajectories data/sft/refiner_heldout.jsonl (stage sft_data: meta prompts
whose first flawed step is known, never trained on) and the model data/models/<model>. Writes
results/refiner/<model>.json: exact first-flawed-step accuracy, accept/reject agreement, recall on
flawed and acceptance of clean trajectories, AUC between the two, the revise rate, the number of
examples and the seconds taken (searchr2.refiner.accuracy), and the dtype used (evaluate.dtype);
`{}` when there are no held-out examples.

A stage of its own, apart from `evaluate@<model>`, so that scoring a model's answers never waits for the
warm-up data: `dvc repro evaluate@base` builds no SFT data. Stage `metrics` merges the three files.
"""
from searchr2.evaluation import load_labelled_meta_prompts, score_refiner
from searchr2.io import write_json
from searchr2.models import load_model, load_tokenizer, pick_device, resolve_dtype
from searchr2.params import load_params
from searchr2.paths import MODEL_NAMES, REFINER_EVAL_DIR, SFT_REFINER_HELDOUT, model_dir
from searchr2.stage import run_stage, stage_parser


def main(model_name: str):
    p = load_params()
    heldout = load_labelled_meta_prompts(SFT_REFINER_HELDOUT)
    result = {}
    if heldout:
        path, device = model_dir(model_name), pick_device(p.evaluate.device)
        dtype = resolve_dtype(p.evaluate.dtype, device)
        model, tok = load_model(path, dtype, device, inference=True), load_tokenizer(path)
        result = {**score_refiner(model, tok, heldout, p.refiner, p.refiner.batch_size), "dtype": dtype}
        print(f"[evaluate_refiner] {model_name}: {result}")
    else:
        print(f"[evaluate_refiner] {SFT_REFINER_HELDOUT} holds no examples (sft_data.refiner_heldout: 0); nothing to score")
    write_json(REFINER_EVAL_DIR / f"{model_name}.json", result)


if __name__ == "__main__":
    parser = stage_parser()
    parser.add_argument("model", choices=MODEL_NAMES, help="the model whose Meta-Refiner is scored")
    args = parser.parse_args()
    run_stage(f"evaluate_refiner@{args.model}", lambda: main(args.model), args)
