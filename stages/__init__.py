"""The pipeline's DVC stage entry points, one module each (``python -m stages.<name>``; see dvc.yaml)."""
