"""Replays in, shards out: sources, battle generation, parsing, encoding, packing."""
