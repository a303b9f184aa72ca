"""Evaluation: batched greedy generation, answer extraction and scoring, forgetting."""
