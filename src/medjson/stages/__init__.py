"""The pipeline's stages: each module is one ``python -m medjson.stages.<name>`` that dvc.yaml runs."""
