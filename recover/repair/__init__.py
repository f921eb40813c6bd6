"""Repair: plan (pure, from judgements) then apply (re-verify, publish, journal), and undo.

The machinery is here and knows no generation: actions as data (plan.py), the journal and undo
(journal.py), the lock and the primitives every action acts through (apply.py), the filesystem
steps (files.py).  What to repair in a root, and how to re-verify each target, is the root's
generation's (its `repairer`, recover/generations/*/repair.py).
"""

from .apply import (
                    KILL_TIMEOUT_S,
                    Applier,
                    CannotWrite,
                    Refused,
                    Skip,
                    apply_plan,
                    default_journal,
                    kill_refusal,
                    lock_path,
                    own_procfs,
                    take_lock,
                    write_refusal,
)
from .files import FAULT_ENV, free_name, move_tree, read_small
from .journal import Journal, NotAJournal, Reverted, read_journal, undo
from .plan import NONE, Action, Options, Repairer, Result, run

__all__ = ["FAULT_ENV", "KILL_TIMEOUT_S", "NONE", "Action", "Applier", "CannotWrite", "Journal", "NotAJournal",
           "Options", "Refused", "Repairer", "Result", "Reverted", "Skip", "apply_plan", "default_journal",
           "free_name", "kill_refusal", "lock_path", "move_tree", "own_procfs", "read_journal", "read_small", "run",
           "take_lock", "undo", "write_refusal"]
