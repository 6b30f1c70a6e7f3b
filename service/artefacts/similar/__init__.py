"""Similar tracks: a catalog index built from the backfill output, served by ``/similar`` (docs/similar.md).

artefact.py  the index artefact: manifest, file names, normalisation, atomic writes
search.py    the searchers behind one interface: exact (numpy, memory-mapped) and HNSW (usearch, memory-mapped)
build.py     `taggram index build`: backfill output → index directory
serving.py   loading at start-up, hot reload with one reference swap, metrics
routes.py    `POST /similar`, `GET /similar/{track_id}`
"""
