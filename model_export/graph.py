"""A small ONNX graph builder (onnx.helper underneath): the architectures add nodes and weights by name, and the
builder hands back a checked ModelProto. No converter, no tracing: what is written here is the graph.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

OPSET = 18
# IR 10 (onnx 1.16): readable by every ONNX Runtime the service supports (>= 1.18); a newer onnx would otherwise
# stamp its own, newer IR version that older runtimes refuse.
IR_VERSION = 10


class GraphBuilder:
    """Collects nodes and initializers; every value gets a unique, readable name."""

    def __init__(self) -> None:
        self.nodes: list = []
        self.initializers: list = []
        self._used: Counter[str] = Counter()
        self._ints: dict[tuple[str, tuple[int, ...]], str] = {}

    def _unique(self, hint: str) -> str:
        self._used[hint] += 1
        count = self._used[hint]
        return hint if count == 1 else f"{hint}_{count - 1}"

    def weight(self, name: str, array: np.ndarray) -> str:
        """A float32 initializer (copied, C-contiguous)."""
        from onnx import numpy_helper

        unique = self._unique(name)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array, np.float32), unique))
        return unique

    def ints(self, name: str, values: list[int]) -> str:
        """An int64 initializer (axes, shapes, slice bounds); asking again for the same one reuses it."""
        from onnx import numpy_helper

        key = (name, tuple(values))
        if key not in self._ints:
            self._ints[key] = self._unique(name)
            self.initializers.append(numpy_helper.from_array(np.asarray(values, np.int64), self._ints[key]))
        return self._ints[key]

    def op(self, op_type: str, *inputs: str, output: str | None = None, **attributes) -> str:
        """Add one node; returns its (single) output's name, `output` when given (graph outputs keep their names)."""
        from onnx import helper

        name = output if output is not None else self._unique(op_type.lower())
        if output is not None:
            self._used[output] += 1
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], name=name, **attributes))
        return name

    def model(self, name: str, doc: str, inputs: dict[str, list], outputs: dict[str, list]):
        """A float32 model with these graph inputs / outputs (name → shape, symbolic dims as strings)."""
        from onnx import TensorProto, helper

        graph = helper.make_graph(
            self.nodes, name,
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n, shape in inputs.items()],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n, shape in outputs.items()],
            self.initializers,
        )  # fmt: skip
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], doc_string=doc)
        model.ir_version = IR_VERSION
        return model
