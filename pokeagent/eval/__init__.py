"""Evaluation: offline metrics on held-out shards, the agent in live battles, ratings, reports."""
