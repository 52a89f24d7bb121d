"""What a run tells: `metrics.jsonl` records, TensorBoard scalars and console lines, from rank 0.

Records are full-precision figures (what resume-exactness checks, `pokeagent status` and plots
read); TensorBoard gets the interval's averages; the console a line per log interval.
"""

from __future__ import annotations

from pokeagent.run_dir import RunDir


class RunLog:
    """The three sinks of a run. On ranks other than 0 every call does nothing."""

    def __init__(self, run: RunDir, enabled: bool):
        self.run, self.enabled = run, enabled
        self._writer = None

    def record(self, row: dict) -> None:
        """A line of metrics.jsonl."""
        if self.enabled:
            self.run.append_metrics(row)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """TensorBoard scalars at `step`, flushed."""
        if not self.enabled:
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.run.tensorboard))
        for name, value in values.items():
            self._writer.add_scalar(name, value, step)
        self._writer.flush()

    def say(self, text: str) -> None:
        """A console line."""
        if self.enabled:
            print(text, flush=True)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
