"""Old import path, kept for users: the module is now audit.captions.strategies (audit/captions/strategies.py).

Re-exports only what the documentation told users to import from audit.caption_strategies; new code
imports from audit.captions.strategies.
"""

from audit.captions.strategies import register_gn_hook

__all__ = ["register_gn_hook"]
