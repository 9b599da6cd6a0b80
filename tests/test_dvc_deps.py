"""dvc.yaml lists exactly the project code each stage runs.

A stage's code is its entry point (``python -m stages.<name>``) and every project module that one
imports, directly or through another project module, at the top of a file or inside a function (a
lazy import runs as surely as an eager one). The closure is read from the source with ``ast``, so
nothing is imported and nothing runs.

Not followed: the config dataclasses that :func:`searchr2.params.load_params` imports by name
(``searchr2.params.SECTIONS``) to validate the whole params file. Every stage validates every
section, so following them would make every module a dependency of every stage, and a change to the
RL code would rerun the world and the indexes. A stage reads those modules only to type-check the
params; a changed check can make it refuse a params file, never change what it writes.
The one exception is stage ``params``, whose whole job is that check: it lists the section modules
(and what they import), so a changed check reruns it, and its stamp tells every other stage to wait for it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("searchr2", "stages")


def module_file(name: str) -> Path | None:
    """The file of a project module (``searchr2.x`` -> searchr2/x.py, a package -> its __init__.py), or
    None for anything else."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = ROOT / name.replace(".", "/")
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.exists():
            return path
    return None


def imported_modules(path: Path) -> set[str]:
    """Every module named by an import statement anywhere in ``path`` (``from a import b`` gives ``a`` and,
    when ``a.b`` is a module, ``a.b``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def code_closure(entry: str) -> set[str]:
    """Repo-relative paths of the entry module and every project module it imports, transitively, with
    the packages' ``__init__.py`` that importing them runs."""
    todo, seen = [entry], set()
    while todo:
        name = todo.pop()
        # importing a.b.c first runs the packages a and a.b
        todo += [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
        path = module_file(name)
        if path is None or path in seen:
            continue
        seen.add(path)
        todo += sorted(imported_modules(path))
    return {str(p.relative_to(ROOT)) for p in seen}


def stages() -> dict[str, dict]:
    """dvc.yaml's stages, a ``foreach`` stage once (its deps are the same code for every item)."""
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def listed_code(stage: dict) -> set[str]:
    body = stage.get("do", stage)
    return {d for d in body.get("deps", []) if d.endswith(".py")}


def entry_module(stage: dict) -> str:
    cmd = stage.get("do", stage)["cmd"].split()
    assert cmd[:2] == ["python", "-m"], cmd
    return cmd[2]


def stage_code(name: str, stage: dict) -> set[str]:
    """What a stage runs: its entry point's closure; for stage ``params`` also the section modules'."""
    runs = code_closure(entry_module(stage))
    if name == "params":
        from searchr2.params import SECTIONS
        for target in SECTIONS.values():
            runs |= code_closure(target.split(":")[0])
    return runs


@pytest.mark.parametrize("name", sorted(stages()))
def test_each_stage_lists_exactly_the_code_it_runs(name):
    stage = stages()[name]
    runs, listed = stage_code(name, stage), listed_code(stage)
    assert not runs - listed, f"dvc.yaml stage {name!r} runs these files but does not list them as deps: " \
                              f"{sorted(runs - listed)}"
    assert not listed - runs, f"dvc.yaml stage {name!r} lists code it never imports: {sorted(listed - runs)}"


def test_the_closure_follows_lazy_and_indirect_imports(tmp_path):
    # stages/rl.py imports searchr2.rl, which imports searchr2.grpo, which imports searchr2.training
    closure = code_closure("stages.rl")
    assert {"stages/rl.py", "searchr2/rl.py", "searchr2/grpo.py", "searchr2/training.py"} <= closure
    assert {"stages/__init__.py", "searchr2/__init__.py"} <= closure          # the packages run first
    # stages/world.py imports searchr2.world inside main()
    assert "searchr2/world.py" in code_closure("stages.world")
    # the params' section modules are not followed (see the module docstring)
    assert "searchr2/rl.py" not in code_closure("stages.world")


def test_every_stage_waits_for_the_params_check():
    # a wrong param must stop `dvc repro` before DVC removes any stage's outputs (stages/params.py)
    for name, stage in stages().items():
        deps = stage.get("do", stage)["deps"]
        assert name == "params" or "data/params.ok" in deps, f"stage {name!r} does not depend on data/params.ok"
    assert stages()["params"]["params"] == [{"params.yaml": None}]     # every param, not a chosen few
