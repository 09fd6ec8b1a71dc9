"""The project's exceptions, classified by what the caller does next.

Library exceptions (requests, SQLAlchemy, yaml) are wrapped into these where they are caught,
so callers never handle a dependency's types. The CLI turns each into one actionable sentence.
"""
from __future__ import annotations


class CohortSyncError(Exception):
    """Base of every error cohortsync reports to a user."""


class ConfigError(CohortSyncError):
    """The operator config is unusable; names the file and the key."""

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None) -> None:
        self.file, self.field, self.message = file, field, message
        where = ": ".join(p for p in (file, field) if p)
        super().__init__(f"{where}: {message}" if where else message)


class SpecError(CohortSyncError):
    """One problem in one cohort spec; a spec can have several, reported together."""

    def __init__(self, file: str, field: str, message: str, line: int | None = None) -> None:
        self.file, self.field, self.message, self.line = file, field, message, line
        loc = f"{file}:{line}" if line else file
        super().__init__(f"{loc}: {field}: {message}" if field else f"{loc}: {message}")


class SpecErrors(CohortSyncError):
    """Every problem found in a set of specs, so one run reports them all."""

    def __init__(self, errors: list[SpecError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


class SourceError(CohortSyncError):
    """A cohort's source could not be read: that cohort fails, nothing is removed."""

    def __init__(self, cohort_id: str, message: str) -> None:
        self.cohort_id, self.message = cohort_id, message
        super().__init__(f"cohort {cohort_id}: {message}")


class StateError(CohortSyncError):
    """The state database is unreachable or not ours."""


class SnapshotError(StateError):
    """A cohort's warehouse snapshot cannot be trusted, reached or written: that cohort fails, and
    no diff computed against it is sent."""


class SnapshotMoved(SnapshotError):
    """The snapshot was written by someone else since this writer last saw it (its generation moved)."""


class LeaseHeld(CohortSyncError):
    """Another writer holds the state lease."""


class LeaseLost(CohortSyncError):
    """This process no longer holds the lease a write was made under: that cohort stops, nothing is written.

    Not a StateError: the database answered; another replica (or an `apply`) owns the cohort now.
    """

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        super().__init__(f"lease {name}: {message}")


class Interrupted(CohortSyncError):
    """A shutdown was asked for: stop between batches, nothing half-done."""

    maybe_applied = False  # True when an attempt of the batch in hand got no answer before the shutdown


class Yielded(Interrupted):
    """More urgent work waits: a long routine cohort stops between batches and resumes after it."""


class ApiError(CohortSyncError):
    """An answer from MoEngage (or no answer at all) that was not a success.

    `maybe_applied` says whether MoEngage may have applied the batch all the same: False for a
    definite refusal (4xx), True when no answer came (timeout, dropped connection) or the answer
    was a server error (MoEngage may have applied it before failing).
    """

    maybe_applied = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        request_id: str | None = None,
        attribute: str | None = None,
    ) -> None:
        self.status, self.request_id, self.attribute, self.message = status, request_id, attribute, message
        parts = [f"HTTP {status}" if status else "no response", message]
        if attribute:
            parts.append(f"(attribute {attribute})")
        if request_id:
            parts.append(f"[request_id {request_id}]")
        super().__init__(" ".join(parts))


class TemporaryApiError(ApiError):
    """Retry later: 429, 5xx, a dropped connection, a timeout."""

    def __init__(self, message: str, *, delay: float | None = None, **kw: object) -> None:
        self.delay = delay
        super().__init__(message, **kw)  # type: ignore[arg-type]


class PayloadTooLarge(ApiError):
    """413: the batch must be split."""


class CohortApiError(ApiError):
    """Fails this cohort's run (400, an unsendable uid); other cohorts go on."""


class MembersRefused(CohortApiError):
    """A 400 naming the members (or no field): some uid of the batch is refused, the batch is bisected
    to find which (running/bisecting.py); where it cannot be, it fails the cohort like any 400."""


class FatalApiError(ApiError):
    """401/403: nothing more can succeed in this run."""


def short_message(exc: BaseException) -> str:
    """A driver's own message, first line, without SQLAlchemy's statement and parameter dump."""
    orig = getattr(exc, "orig", None) or exc
    return (str(orig).strip().splitlines() or [type(orig).__name__])[0]
