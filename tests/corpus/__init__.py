"""The bad-input corpus: generated at test time by make_corpus.py (no binaries are committed)."""
