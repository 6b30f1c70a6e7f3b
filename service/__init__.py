"""taggram service: decode → patch → batch → run → pool → cache → respond."""
