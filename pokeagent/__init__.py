"""pokeagent: train a transformer Pokémon Showdown agent on real replays with DeepSpeed.

The layout is the architecture: `showdown/` knows the game and the simulator, `data/` moves
replays to shards, `model/` is the network, `train/` runs DeepSpeed, `eval/` plays battles.
"""

__version__ = "0.1.0"

from pokeagent import native as _native

_native.guard()  # before anything imports a compiled module: a stale build runs from source
