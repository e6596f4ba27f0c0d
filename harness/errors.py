"""User-facing errors: the CLI prints them as one line and exits with code 2."""


class BenchError(Exception):
    """Bad input or an impossible request; the message says what is wrong and what to do."""


class TrainingDiverged(BenchError):
    """A loss became NaN or infinite during training."""
