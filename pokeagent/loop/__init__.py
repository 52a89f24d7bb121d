"""Loops over the pipeline's stages: `improve` (rounds of the agent's own games, packed and
trained on). It sits above data/, train/ and eval/ (it calls them; none of them imports it)."""
