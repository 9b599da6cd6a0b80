"""Stage `params`: check the whole params file before any other stage runs.

Reads params.yaml (every section, against the config dataclass that documents it); writes
data/params.ok, a stamp whose content never depends on the values. Every other stage lists the stamp
as a dependency, so `dvc repro` runs this stage first whenever a param changed. A wrong param (a typo,
a value of the wrong type or out of range) stops the pipeline here, with the file, line and field
named, before DVC has removed any other stage's outputs: the previous results survive, and fixing
params.yaml is all it takes to get a clean `dvc status` again (`dvc checkout` restores the stamp).
Because the stamp does not change when a param does, a valid change reruns only the stages that read
that param.
"""
from searchr2.io import atomic_file
from searchr2.params import SECTIONS, load_params
from searchr2.paths import PARAMS_OK
from searchr2.stage import run_stage


def main():
    load_params()
    with atomic_file(PARAMS_OK) as f:
        f.write("params.yaml passed searchr2.params.load_params: sections "
                       + ", ".join(SECTIONS) + "\n")
    print(f"[params] params.yaml is valid ({len(SECTIONS)} sections)")


if __name__ == "__main__":
    run_stage("params", main)
