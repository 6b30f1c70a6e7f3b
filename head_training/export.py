"""The head artefact: ``<name>.onnx`` (embedding [batch, dim] → probabilities [batch, classes]) and its manifest.

The graph is built by hand from the folded layers (MatMul + Add, Relu between layers, Sigmoid at the end): the
calibrated heads trained here are dense layers, and a hand-built graph of those is exact and has no converter
dependency (skl2onnx would turn the calibrated scikit-learn objects into more nodes computing the same thing).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from head_training.head import Head
from service.artefacts.durable import atomic_write

HEAD_FORMAT = 1  # bump when the manifest's meaning changes (service/artefacts/heads.py checks it)
OPSET = 17
INPUT_NAME = "embedding"
OUTPUT_NAME = "scores"


def build_graph(head: Head, name: str):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    dim = head.layers[0][0].shape[0]
    classes = head.layers[-1][0].shape[1]
    nodes, initializers = [], []
    current = INPUT_NAME
    for i, (weights, bias) in enumerate(head.layers):
        initializers += [
            numpy_helper.from_array(np.ascontiguousarray(weights, np.float32), f"W{i}"),
            numpy_helper.from_array(np.ascontiguousarray(bias, np.float32), f"b{i}"),
        ]
        nodes += [
            helper.make_node("MatMul", [current, f"W{i}"], [f"z{i}"]),
            helper.make_node("Add", [f"z{i}", f"b{i}"], [f"a{i}"]),
        ]
        current = f"a{i}"
        if i < len(head.layers) - 1:
            nodes.append(helper.make_node("Relu", [current], [f"h{i}"]))
            current = f"h{i}"
    nodes.append(helper.make_node("Sigmoid", [current], [OUTPUT_NAME]))
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", dim])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", classes])],
        initializers,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="taggram-train-head")
    model.ir_version = 8  # readable by every ONNX Runtime the service supports (>= 1.18)
    onnx.checker.check_model(model)
    return model


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_atomically(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_artefact(head: Head, name: str, output: Path, manifest: dict) -> tuple[Path, Path]:
    """DIR/NAME.onnx then DIR/NAME.json (the manifest last: a manifest always describes a complete graph)."""
    output.mkdir(parents=True, exist_ok=True)
    data = build_graph(head, name).SerializeToString()
    onnx_path, json_path = output / f"{name}.onnx", output / f"{name}.json"
    write_atomically(onnx_path, data)
    document = {
        "format": HEAD_FORMAT,
        "name": name,
        **manifest,
        "onnx": {
            "file": onnx_path.name,
            "sha256": sha256_bytes(data),
            "opset": OPSET,
            "input": INPUT_NAME,
            "output": OUTPUT_NAME,
        },
    }
    write_atomically(json_path, (json.dumps(document, indent=1) + "\n").encode())
    return onnx_path, json_path
