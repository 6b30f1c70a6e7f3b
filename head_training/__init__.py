"""Training of classification heads on a base model's embeddings (`taggram train-head`), offline only.

The service never imports this package: it meets the heads it trains only through the exported files
(``<name>.onnx`` + ``<name>.json``), validated at start-up by ``service/artefacts/heads.py``. Dependencies
(scikit-learn, onnx) come from the optional extra ``train``.
"""
