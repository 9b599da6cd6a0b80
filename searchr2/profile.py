"""Switch the pipeline to another profile: validate it, then copy it over ``params.yaml``.

    python -m searchr2.profile configs/smoke.yaml        # use the smoke profile
    python -m searchr2.profile --check configs/*.yaml    # only validate

DVC reads ``params.yaml``; a profile is a complete alternative to it, so switching is a copy. Use
``git checkout params.yaml`` to go back to the embedded default. Validation first means a profile with
a typo never replaces a working params file.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from searchr2.io import InputError
from searchr2.params import load_params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m searchr2.profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profiles", nargs="+", type=Path, help="profile file(s), e.g. configs/smoke.yaml")
    parser.add_argument("--check", action="store_true", help="validate only; do not touch params.yaml")
    parser.add_argument("--to", type=Path, default=Path("params.yaml"), help="file to write (default params.yaml)")
    args = parser.parse_args(argv)
    if not args.check and len(args.profiles) != 1:
        parser.error("give exactly one profile to switch to (or --check to validate several)")
    for path in args.profiles:
        try:
            params = load_params(path)
        except InputError as e:
            print(f"invalid profile: {e}", file=sys.stderr)
            return 2
        print(f"{path}: ok (profile {params.profile!r})")
    if not args.check:
        shutil.copyfile(args.profiles[0], args.to)
        print(f"{args.to} now holds {args.profiles[0]}; run `dvc repro`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
