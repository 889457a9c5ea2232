"""Training infrastructure shared by every task (see trainer/loop.py for the entry point)."""
from trainer.loop import NonFiniteLossError
from trainer.loop import RunResult
from trainer.loop import train_and_evaluate

__all__ = ["NonFiniteLossError", "RunResult", "train_and_evaluate"]
