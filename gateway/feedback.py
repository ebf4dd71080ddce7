"""Feedback through the gateway: a user rates only their own turns.

The gateway remembers the turns it served lately (``TurnBook``: turn id -> user, LLM), and asks the graph for
older ones (``GraphStore.turn_owners``), so a turn id of another user, or one that does not exist, is refused
the same way (404, telling nothing about the other user). A pairwise preference names the other turn; the LLMs
of both come from the same lookup.
"""

from __future__ import annotations

from collections import OrderedDict
from threading import Lock
from typing import Callable

from prefstream.events import Feedback, Pairwise, Score, Thumbs, now_ms
from gateway.chat import FeedbackRequest

Owners = Callable[[list[str]], dict[str, tuple[str, str]]]  # turn ids -> {turn id: (user id, llm id)}


class TurnBook:
    """The last ``size`` turns this gateway served: turn id -> (user id, LLM id)."""

    def __init__(self, size: int = 100_000):
        self.size = size
        self._turns: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._lock = Lock()

    def add(self, turn_id: str, user_id: str, llm_id: str) -> None:
        with self._lock:
            self._turns[turn_id] = (user_id, llm_id)
            self._turns.move_to_end(turn_id)
            while len(self._turns) > self.size:
                self._turns.popitem(last=False)

    def owners(self, turn_ids: list[str], elsewhere: Owners | None = None) -> dict[str, tuple[str, str]]:
        """Owners of ``turn_ids``: from this book, the rest from ``elsewhere`` (the graph)."""
        with self._lock:
            found = {t: self._turns[t] for t in turn_ids if t in self._turns}
        missing = [t for t in turn_ids if t not in found]
        if missing and elsewhere is not None:
            found.update(elsewhere(missing))
        return found


class NotYours(LookupError):
    """The turn does not exist or belongs to another user (the same answer for both)."""


def feedback_event(fb: FeedbackRequest, user_id: str, owners: dict[str, tuple[str, str]], event_id: str) -> Feedback:
    """The Feedback event for a validated request whose turns' ``owners`` were looked up.

    Raises NotYours for a turn that is not the user's, ValueError for an impossible signal."""
    turns = [fb.turn_id] + ([fb.preferred_over] if fb.preferred_over else [])
    for t in turns:
        if owners.get(t, ("", ""))[0] != user_id:
            raise NotYours(f"no turn {t!r} of user {user_id!r}")
    kind = fb.kind()
    if kind == "thumbs":
        signal = Thumbs(up=bool(fb.thumbs_up))
    elif kind == "score":
        signal = Score(score=float(fb.score), scale_min=float(fb.scale[0]), scale_max=float(fb.scale[1]))
    else:
        signal = Pairwise(preferred_llm_id=owners[fb.turn_id][1], rejected_llm_id=owners[fb.preferred_over][1],
                          rejected_turn_id=fb.preferred_over, tie=fb.tie)
    return Feedback(event_id=event_id, user_id=user_id, turn_id=fb.turn_id, timestamp=now_ms(), signal=signal)
