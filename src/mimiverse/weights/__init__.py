"""Model files the embedded llama.cpp runs: a catalog with pinned SHA-256 digests
(catalog.py) and the fetching, checking and finding of those files (fetch.py)."""
