"""`pokeagent bench ...`: throughput figures, printed (tests check correctness, benchmarks speed)."""
