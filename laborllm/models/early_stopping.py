"""Early stopping on a validation loss, shared by the models that train by epochs."""
from __future__ import annotations

import math
from typing import Any, Callable


class EarlyStopping:
    """Keeps the best validation loss and a copy of the state that had it; says when `patience`
    epochs in a row brought no improvement of at least `min_delta`."""

    def __init__(self, patience: int, min_delta: float = 1e-4):
        self.patience, self.min_delta = patience, min_delta
        self.best, self.best_state, self.bad = math.inf, None, 0

    def update(self, loss: float, snapshot: Callable[[], Any]) -> bool:
        """Record one epoch's validation loss; `snapshot()` copies the state when it is the best so far.
        True when training should stop."""
        if loss < self.best - self.min_delta:
            self.best, self.bad, self.best_state = loss, 0, snapshot()
        else:
            self.bad += 1
        return self.bad >= self.patience
