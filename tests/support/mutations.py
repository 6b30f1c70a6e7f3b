"""Test helper: a Hypothesis strategy that damages valid files the way real uploads get damaged."""

from __future__ import annotations

from hypothesis import strategies as st


@st.composite
def mutated(
    draw,
    seeds: tuple[bytes, ...],
    *,
    max_edits: int = 8,
    header_bytes: int = 64,
    max_delete: int = 256,
    max_insert: int = 64,
    duplicate: bool = False,
) -> bytes:
    """One of ``seeds`` after 1..max_edits edits: byte flips, header flips, deletions, insertions, truncation and,
    with ``duplicate``, a repeated stretch."""
    kinds = ["flip", "header", "delete", "insert", "truncate"] + (["duplicate"] if duplicate else [])
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, max_edits))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(kinds))
        if kind == "flip":
            data[at] = draw(st.integers(0, 255))
        elif kind == "header":  # headers are where sizes, rates and channel counts live
            data[at % header_bytes] = draw(st.integers(0, 255))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, max_delete))]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=max_insert))
        elif kind == "truncate":
            del data[at:]
        else:  # a repeated stretch: confuses frame counters, page sequence numbers, chunk sizes
            data[at:at] = data[at : at + draw(st.integers(1, 4096))]
    return bytes(data)
