"""INT8 rescue: per-layer comparison (debug), float fallback, cross-layer equalization."""
