"""Stage `world`: the questions and the corpus the agent lives in.

Embedded profile (data.source=world): generate the fictional world from the `world` params.
Paper profiles (data.source=hub|local): load the FlashRAG QA sets and stream the wiki-18 corpus.
Either way the outputs have the same layout: data/qa/<dataset>/<split>.jsonl and
data/corpus/corpus.jsonl with the byte offset of each passage beside it (corpus.offsets.npy: the
indexes refer to passages by row and read them back from this one copy), plus a manifest in results/world.json: for real data, every source file
read (its path as the params give it, bytes, SHA-256, whether DVC watches it because it lies under
data/raw, rows read, kept and dropped with the reason, the schema found).
"""
from searchr2.docstore import write_offsets
from searchr2.io import atomic_dir, write_json
from searchr2.params import load_params
from searchr2.paths import CORPUS, CORPUS_DIR, QA_DIR, RESULTS
from searchr2.stage import run_stage


def main():
    params = load_params()
    with atomic_dir(QA_DIR) as qa_tmp, atomic_dir(CORPUS_DIR) as corpus_tmp:
        corpus_tmp_file = corpus_tmp / CORPUS.name
        if params.data.source == "world":
            from searchr2.world import generate_world, write_world

            manifest = write_world(generate_world(params.world), qa_tmp, corpus_tmp_file)
        else:
            from searchr2.data import prepare_real_data

            manifest = prepare_real_data(params.data, qa_tmp, corpus_tmp_file)
        write_offsets(corpus_tmp_file)
    outputs = {"qa_dir": str(QA_DIR), "corpus": str(CORPUS)}     # what the manifest's relative names refer to
    write_json(RESULTS / "world.json", {"profile": params.profile, "source": params.data.source, "outputs": outputs,
                                        **manifest})


if __name__ == "__main__":
    run_stage("world", main)
