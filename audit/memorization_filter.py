"""Old import path, kept for users: the module is now audit.memorization.training_filter (audit/memorization/training_filter.py).

Re-exports only what the documentation told users to import from audit.memorization_filter; new code
imports from audit.memorization.training_filter.
"""

from audit.memorization.training_filter import MemorizationFilter, filtered_loss

__all__ = ["MemorizationFilter", "filtered_loss"]
