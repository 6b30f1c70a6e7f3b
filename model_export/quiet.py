"""Third-party noise of the ONNX export, filtered at its source, only while the export runs.

`torch.onnx.export(dynamo=True)` prints, per model, 4 log lines "torchvision is not installed. Skipping
torchvision::nms" (its op registry looks for torchvision's custom ops; the musicnn graphs use none of them, and
torchvision is deliberately not a dependency) and one `FutureWarning` about `LeafSpec` from torch's own pytree
code (attributed to `copyreg`). Neither is actionable by whoever runs `make`, and together they buried the
progress lines. Only these exact messages are dropped, only from the logger / module that emits them, and only
inside `export_noise_filtered()`: any other warning from torch still shows.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

# The module-level logger of torch's ONNX op registry (logging.getLogger(__name__) there).
TORCHVISION_LOGGER = "torch.onnx._internal.exporter._registration"
TORCHVISION_NOTICE = "torchvision is not installed. Skipping "
# torch.utils._pytree's deprecation, raised while the exporter copies tree specs; the frame it names is copyreg.
LEAFSPEC_MESSAGE = r"`isinstance\(treespec, LeafSpec\)` is deprecated"
LEAFSPEC_MODULE = "copyreg"


class SkipTorchvisionNotice(logging.Filter):
    """Drops the registry's "torchvision is not installed" notices; passes every other record."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(TORCHVISION_NOTICE)


@contextlib.contextmanager
def export_noise_filtered() -> Iterator[None]:
    logger = logging.getLogger(TORCHVISION_LOGGER)
    notice_filter = SkipTorchvisionNotice()
    logger.addFilter(notice_filter)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=LEAFSPEC_MESSAGE, category=FutureWarning, module=LEAFSPEC_MODULE)
            yield
    finally:
        logger.removeFilter(notice_filter)
