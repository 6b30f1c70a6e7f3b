"""Real, redistributable music for the tests, the benchmarks and the evaluations: freely licensed game soundtracks
from Debian packages (``corpus.build``: the labelled corpus; ``corpus.music``: one package's tracks for quick runs).
Provenance, licences and what the labels can show: docs/corpus.md."""
