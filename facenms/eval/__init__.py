"""Judging a selection: baselines to compare against, face verification, and
WebFace-like synthetic embeddings for tests and benchmarks."""
