"""Finding the uids MoEngage refuses in a batch it answered 400 for, naming its members (or no field).

MoEngage refuses a request as a whole when one member is invalid, so one bad uid would stop every
other uid of its batch. The batch is split and its halves tried until the refused uids are alone;
every other uid still arrives in the same run. A part known to hold a refused uid (a refused
request, or the other half of one whose first half was accepted) is never sent whole again: its
first half is sent, and a part of one uid that is known to be refused is refused without a
request. The halves whose standing is unknown (the second half of a refused first half) wait and
go out together in one request at the end, bisected in turn if that is refused. One refused uid in
a batch of n therefore costs log2(n) + 1 requests beyond the batch itself (bench/bench_refused.py).

Each request is a batch of its own in the state (written down as pending, then settled or
refused), so a kill half-way leaves exact bookkeeping: settled parts are members, the part in
flight is pending, the parts not yet sent are neither and the next plan sends them again.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from reconciler.common.errors import CohortApiError, MembersRefused

log = logging.getLogger(__name__)
MAX_REFUSED = 100  # uids one cohort's run may refuse: past it MoEngage likely refuses the requests as a whole

Uids = tuple[str, ...]


class Bisection:
    """One refused batch bisected; `send` raises MembersRefused for a refused part and returns when
    it is accepted (any other error ends the bisection, as it would end the batch); `refuse` keeps
    a uid found refused, with MoEngage's error."""

    def __init__(self, cohort: str, send: Callable[[Uids], None], refuse: Callable[[str, str], None], *,
                 limit: int = MAX_REFUSED) -> None:
        self.cohort, self.send, self.refuse, self.limit = cohort, send, refuse, limit
        self.refused = 0
        self.requests = 0

    def run(self, uids: Sequence[str], error: MembersRefused) -> int:
        """Bisect `uids` (a refused request's) until every uid is accepted or refused; the refused count."""
        log.info("cohort %s: %d uids refused together (%s); bisecting", self.cohort, len(uids), error)
        known_bad: list[tuple[Uids, MembersRefused]] = [(tuple(uids), error)]
        unknown: list[Uids] = []
        while known_bad or unknown:
            if not known_bad:
                merged = tuple(sorted(u for part in unknown for u in part))
                unknown = []
                self._try(merged, known_bad)
                continue
            part, cause = known_bad.pop()
            if len(part) == 1:
                self._refuse(part[0], cause)
                continue
            first, second = part[:len(part) // 2], part[len(part) // 2:]
            if self._try(first, known_bad):
                known_bad.append((second, cause))  # the refusal was in the second half
            else:
                unknown.append(second)
        return self.refused

    def _try(self, part: Uids, known_bad: list[tuple[Uids, MembersRefused]]) -> bool:
        """Send a part; True when accepted, else it joins the parts known to hold a refused uid."""
        self.requests += 1
        try:
            self.send(part)
            return True
        except MembersRefused as exc:
            known_bad.append((part, exc))
            return False

    def _refuse(self, uid: str, cause: MembersRefused) -> None:
        if self.refused >= self.limit:
            raise CohortApiError(
                f"MoEngage refused more than {MAX_REFUSED} uids of this cohort in one run ({cause}): it may be "
                "refusing the requests as a whole; the refused uids found are kept (cohortsync refused), "
                "the rest is sent by the next run", status=cause.status, request_id=cause.request_id,
                attribute=cause.attribute)
        self.refused += 1
        log.warning("cohort %s: uid %r refused by MoEngage: %s", self.cohort, uid, cause)
        self.refuse(uid, str(cause))
