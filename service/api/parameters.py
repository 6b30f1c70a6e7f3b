"""Query parameters several routes share. A parameter's range is in its type (``service.config``: declared once for
the API and the backfill), inside ``Annotated`` with its ``Query``, so FastAPI both documents the range and refuses
a value outside it (a 422 problem). A ranged type given as ``k: ResultCount = Query(5)`` instead would lose its
range without a word: write new ones in this form."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from service.config import HopSeconds, ResultCount

ModelQuery = Annotated[
    str | None, Query(description="Model name (GET /models lists them); default: TAGGRAM_DEFAULT_MODEL")
]
HopQuery = Annotated[
    HopSeconds | None,
    Query(
        description="Seconds between segment starts, rounded to whole STFT frames "
        "(16 ms); default: one patch (≈2.99 s, no overlap)"
    ),
]
SubgenreCountQuery = Annotated[ResultCount, Query(description="How many subgenres")]
NeighbourCountQuery = Annotated[ResultCount, Query(description="How many neighbours")]
