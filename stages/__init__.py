"""The pipeline's DVC stage entry points, one module each (``python -m stages.<name>``; see dvc.yaml).

Importing the package first applies the stage layer's offline environment defaults
(:mod:`searchr2.stage`), so they are in place before any stage module loads a Hugging Face library.
"""
import searchr2.stage  # noqa: F401
