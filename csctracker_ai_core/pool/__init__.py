"""The key pool: which key x model serves the next Gemini request (see ``rotator.py``)."""

from .decision import Action, Decision, Failure, FailureKind
from .lease import Lease, Slot
from .rotator import ApiKeyRotator
from .status import PoolStatus, SlotStatus

__all__ = [
    "ApiKeyRotator",
    "Lease",
    "Slot",
    "Decision",
    "Action",
    "Failure",
    "FailureKind",
    "PoolStatus",
    "SlotStatus",
]
