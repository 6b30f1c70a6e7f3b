"""The export's noise filters (model_export/quiet.py) drop exactly torch's known notices, and only while active.

The logger name is checked against the installed torch: if torch moves its op registry, the filter would silently
stop matching and the noise would come back, so the test fails instead.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import re
import warnings

from model_export.quiet import (
    LEAFSPEC_MESSAGE,
    LEAFSPEC_MODULE,
    TORCHVISION_LOGGER,
    TORCHVISION_NOTICE,
    export_noise_filtered,
)


def test_the_filtered_logger_is_torchs_onnx_op_registry():
    # torch is in the export extra that `make test` installs: importing it must work (no skip).
    registry = importlib.import_module(TORCHVISION_LOGGER)
    assert registry.logger.name == TORCHVISION_LOGGER
    source = importlib.util.find_spec(TORCHVISION_LOGGER).loader.get_source(TORCHVISION_LOGGER)
    assert TORCHVISION_NOTICE.strip() in source, "torch no longer logs the notice this filter drops"


def test_the_filtered_future_warning_is_torchs_pytree_deprecation():
    source = importlib.util.find_spec("torch.utils._pytree").loader.get_source("torch.utils._pytree")
    assert re.search(LEAFSPEC_MESSAGE, source), "torch no longer warns this; drop the filter"


def test_torchvision_notices_are_dropped_only_inside_the_export(caplog):
    logger = logging.getLogger(TORCHVISION_LOGGER)
    with caplog.at_level(logging.WARNING, logger=TORCHVISION_LOGGER):
        with export_noise_filtered():
            logger.warning("torchvision is not installed. Skipping %s", "torchvision::nms")
            logger.warning("Failed to register '%s'. Skipped", "aten::foo")  # a real problem: still shown
        logger.warning("torchvision is not installed. Skipping %s", "torchvision::roi_align")
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "Failed to register 'aten::foo'. Skipped",
        "torchvision is not installed. Skipping torchvision::roi_align",
    ]


def emit_from(module: str, message: str, category: type[Warning]) -> None:
    """warnings.warn attributed to `module`, as torch's pytree warning is attributed to copyreg."""
    exec(
        compile(f"import warnings\nwarnings.warn({message!r}, {category.__name__})", module, "exec"),
        {"__name__": module, category.__name__: category},
    )


def test_only_the_leafspec_future_warning_from_copyreg_is_ignored():
    leafspec = "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)` instead."
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with export_noise_filtered():
            emit_from(LEAFSPEC_MODULE, leafspec, FutureWarning)
            emit_from(LEAFSPEC_MODULE, "something else is deprecated", FutureWarning)
            emit_from("torch.somewhere", leafspec, FutureWarning)
        emit_from(LEAFSPEC_MODULE, leafspec, FutureWarning)
    assert [str(w.message) for w in caught] == ["something else is deprecated", leafspec, leafspec]
