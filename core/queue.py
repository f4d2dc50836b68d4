"""A fair queue per engine: first come, first served, people before batch photos.

An engine runs one call at a time (:mod:`core.manager`). Instead of a bare lock, each caller takes
a :class:`Ticket` in the engine's :class:`EngineQueue`; the head of the queue runs, the others wait
in order and can say where they stand:

- **Order.** Interactive requests (a person waiting at a page) go before batch photos. Within a
  kind, tickets are served in arrival order; batch photos additionally in the order of their jobs
  (:class:`JobOrder`, shared by every engine of a manager), which a job's owner can change with
  :meth:`JobOrder.move`. A ticket that runs is never pre-empted: the order decides who runs next.
- **Place.** A waiting ticket reports its place (:attr:`Ticket.place`: the requests ahead of it,
  the running one included) and an estimate in seconds: the average of the engine's recent
  service times times that number (None before the first measured call).
- **Cancel.** ``should_cancel()`` is polled while waiting; when it says so the ticket leaves the
  queue at once (the others move up) and :class:`core.errors.Cancelled` is raised. Any exception
  raised in the wait (a page's rerun, an ``on_wait`` callback's error) also takes the ticket out.
- **Length.** At most ``max_waiting`` requests wait per engine; one more is refused with
  :class:`QueueFull` (a :class:`core.errors.UserError`) saying so.

Which kind a call is travels in a :class:`contextvars.ContextVar` (:data:`CURRENT_JOB`), set by the
batch runner with :func:`batch_job`, so operations and engines need no parameter for it. A thread
does not inherit its starter's context: a thread pool working for a batch runs its work through
:func:`in_context` (``contextvars.copy_context().run``).
"""
from __future__ import annotations

import contextlib
import contextvars
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from core.config import DEFAULT_QUEUE_MAX
from core.errors import Cancelled, UserError

INTERACTIVE = 0  # a person waiting at a page: served first
BATCH = 1  # a photo of a batch job
POLL_SECONDS = 0.2  # how often a waiting caller checks should_cancel and reports its place
RECENT = 5  # service times averaged for the estimate

WaitCallback = Callable[[int, int, "float | None"], None]  # (place, ahead, estimate_s)
T = TypeVar("T")


class QueueFull(UserError):
    """Too many requests already wait for an engine; the message says to try again later."""


class UnknownJob(UserError):
    """A batch job that is not (or no longer) in the job order."""


class NotJobOwner(UserError):
    """A batch job that belongs to someone else."""


@dataclass(frozen=True)
class BatchJobRef:
    """What the batch runner puts in :data:`CURRENT_JOB` for its photos: the job, its owner, and the
    job's cancel check (a photo waiting in a queue leaves it when the job is cancelled)."""

    job_id: str
    owner: str
    should_cancel: Callable[[], bool] | None = field(default=None, compare=False)


CURRENT_JOB: contextvars.ContextVar[BatchJobRef | None] = contextvars.ContextVar("inpaint_studio_batch_job",
                                                                                 default=None)


@dataclass(frozen=True)
class JobInfo:
    """One batch job in the job order: its id, its owner and a label (what its owner sees)."""

    job_id: str
    owner: str
    label: str = ""


class JobOrder:
    """The order in which batch jobs' photos are served (shared by every engine of a manager).

    A job joins at the end when it starts (:meth:`add`) and leaves when it ends (:meth:`remove`);
    its owner may move it up or down (:meth:`move`). ``on_change`` runs after each change (the
    queues re-sort their waiting batch photos)."""

    def __init__(self) -> None:
        self._jobs: list[JobInfo] = []
        self._guard = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    def listen(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    def _changed(self) -> None:
        for callback in list(self._listeners):
            callback()

    def add(self, job_id: str, owner: str, label: str = "") -> None:
        """Put job ``job_id`` at the end of the order (nothing when it is there already)."""
        with self._guard:
            if any(job.job_id == job_id for job in self._jobs):
                return
            self._jobs.append(JobInfo(job_id, owner, label))
        self._changed()

    def remove(self, job_id: str) -> None:
        with self._guard:
            self._jobs = [job for job in self._jobs if job.job_id != job_id]
        self._changed()

    def jobs(self) -> list[JobInfo]:
        """The jobs, first served first."""
        with self._guard:
            return list(self._jobs)

    def rank(self, job_id: str | None) -> int:
        """Where ``job_id`` stands (0 = first); a job not in the order goes after all that are."""
        with self._guard:
            for index, job in enumerate(self._jobs):
                if job.job_id == job_id:
                    return index
            return len(self._jobs)

    def move(self, job_id: str, direction: str, owner: str) -> None:
        """Move job ``job_id`` one place ``"up"`` (served sooner) or ``"down"``; only its owner may.

        Raises UnknownJob for a job not in the order, NotJobOwner for someone else's job, UserError
        for another direction. Moving the first job up or the last down changes nothing."""
        if direction not in ("up", "down"):
            raise UserError(f"A batch job moves \"up\" or \"down\", not {direction!r}.")
        with self._guard:
            index = next((i for i, job in enumerate(self._jobs) if job.job_id == job_id), None)
            if index is None:
                raise UnknownJob(f"There is no batch job {job_id!r} waiting on this server (it may have finished).")
            if self._jobs[index].owner != owner:
                raise NotJobOwner("That batch job belongs to someone else; only its owner can move it.")
            other = index - 1 if direction == "up" else index + 1
            if not 0 <= other < len(self._jobs):
                return
            self._jobs[index], self._jobs[other] = self._jobs[other], self._jobs[index]
        self._changed()


class Ticket:
    """One caller's place in an engine's queue."""

    def __init__(self, number: int, priority: int, job: BatchJobRef | None) -> None:
        self.number = number  # arrival order
        self.priority = priority
        self.job = job
        self.place: int | None = None  # requests ahead when last looked at, the running one included (0 = runs)

    def __repr__(self) -> str:
        kind = "interactive" if self.priority == INTERACTIVE else f"batch {self.job.job_id if self.job else ''}"
        return f"Ticket({self.number}, {kind}, place={self.place})"


class EngineQueue:
    """The queue of one engine. ``title``: how messages name the engine; ``max_waiting``: how many
    may wait (the running one not counted); ``jobs``: the batch job order."""

    def __init__(self, title: str, max_waiting: int = DEFAULT_QUEUE_MAX, jobs: JobOrder | None = None,
                 poll: float = POLL_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.title = title
        self.clock = clock  # measures service times
        self.max_waiting = max_waiting
        self.jobs = jobs or JobOrder()
        self.poll = poll
        self._condition = threading.Condition()
        self._running: Ticket | None = None
        self._waiting: list[Ticket] = []
        self._numbers = itertools.count()
        self._times: deque[float] = deque(maxlen=RECENT)

    # --- what it looks like ------------------------------------------------------------------------

    def _key(self, ticket: Ticket) -> tuple:
        job_rank = self.jobs.rank(ticket.job.job_id) if ticket.job is not None else 0
        return (ticket.priority, job_rank if ticket.priority == BATCH else 0, ticket.number)

    def _sorted(self) -> list[Ticket]:
        return sorted(self._waiting, key=self._key)

    def place(self, ticket: Ticket) -> int:
        """Requests ahead of ``ticket`` (the running one included); 0 when it runs."""
        with self._condition:
            return 0 if ticket is self._running else self._line(ticket)[1]

    def average_seconds(self) -> float | None:
        """The average of the recent service times, None before the first."""
        with self._condition:
            return sum(self._times) / len(self._times) if self._times else None

    def estimate(self, place: int) -> float | None:
        """Seconds until a request with ``place`` requests ahead of it runs; None before a measurement."""
        average = self.average_seconds()
        return None if average is None else average * place

    def waiting(self) -> list[Ticket]:
        """The waiting tickets, next served first."""
        with self._condition:
            return self._sorted()

    @property
    def running(self) -> Ticket | None:
        return self._running

    def __len__(self) -> int:
        """Requests in the queue, the running one included."""
        with self._condition:
            return len(self._waiting) + (self._running is not None)

    def record(self, seconds: float) -> None:
        """Count one service time in the estimate."""
        with self._condition:
            self._times.append(seconds)

    def reorder(self) -> None:
        """Wake the waiters to report their new places (the job order changed)."""
        with self._condition:
            self._condition.notify_all()

    # --- taking a turn -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def turn(self, *, on_wait: WaitCallback | None = None,
             should_cancel: Callable[[], bool] | None = None) -> Iterator[Ticket]:
        """Wait for this caller's turn, hold it while the block runs, then hand it on.

        The kind of request comes from :data:`CURRENT_JOB`. While waiting, ``on_wait(place, ahead,
        estimate_s)`` is called every poll interval: ``place`` in the line of waiting requests (1 =
        next), ``ahead`` the requests ahead, the running one included (what the estimate counts), and
        ``estimate_s`` None before the first measured call. Raises QueueFull when ``max_waiting``
        requests wait already, Cancelled when ``should_cancel()`` (or the batch job's cancel) says so
        while waiting. The block's duration is recorded for the estimate (not when it raised)."""
        ticket = self.enter()
        try:
            self.wait(ticket, on_wait=on_wait, should_cancel=should_cancel)
            started = self.clock()
            yield ticket
            self.record(self.clock() - started)
        finally:
            self.leave(ticket)

    def enter(self) -> Ticket:
        """A ticket at the back of its kind (running at once when the engine is free). Raises QueueFull."""
        job = CURRENT_JOB.get()
        with self._condition:
            ticket = Ticket(next(self._numbers), BATCH if job is not None else INTERACTIVE, job)
            if self._running is None and not self._waiting:
                self._running = ticket
                ticket.place = 0
                return ticket
            if len(self._waiting) >= self.max_waiting:
                count = len(self._waiting)
                raise QueueFull(f"{self.title} is busy: {count} request{'s are' if count != 1 else ' is'} waiting. "
                                "Try again in a minute.")
            self._waiting.append(ticket)
            return ticket

    def wait(self, ticket: Ticket, *, on_wait: WaitCallback | None = None,
             should_cancel: Callable[[], bool] | None = None) -> None:
        """Block until ``ticket`` runs (see :meth:`turn`); the caller calls :meth:`leave` after, also
        when this raises."""
        while True:
            with self._condition:
                if self._take(ticket):
                    return
                line, ahead = self._line(ticket)
            if (should_cancel is not None and should_cancel()) or (
                    ticket.job is not None and ticket.job.should_cancel is not None and ticket.job.should_cancel()):
                raise Cancelled(f"The request for {self.title} was cancelled while it waited.")
            if on_wait is not None:  # every poll, not only on a change: a page stays responsive
                on_wait(line, ahead, self.estimate(ahead))
            with self._condition:
                if self._take(ticket):
                    return
                if self._line(ticket) == (line, ahead):
                    self._condition.wait(self.poll)

    def _take(self, ticket: Ticket) -> bool:
        """Whether ``ticket`` runs: it does already (it found the engine free), or the engine is free
        and it is next, and now runs (lock held)."""
        if self._running is ticket:
            return True
        if self._running is None and self._sorted()[0] is ticket:
            self._waiting.remove(ticket)
            self._running = ticket
            ticket.place = 0
            return True
        return False

    def _line(self, ticket: Ticket) -> tuple[int, int]:
        """(place in the line of waiting requests, 1 = next; requests ahead, the running one included)."""
        line = self._sorted().index(ticket) + 1
        ahead = line - 1 + (self._running is not None)
        ticket.place = ahead
        return line, ahead

    def leave(self, ticket: Ticket) -> None:
        """Take ``ticket`` out (running or waiting) and let the next one run."""
        with self._condition:
            if self._running is ticket:
                self._running = None
            elif ticket in self._waiting:
                self._waiting.remove(ticket)
            self._condition.notify_all()


def in_context(function: Callable[..., T]) -> Callable[..., T]:
    """``function`` bound to a copy of the caller's context: what a thread pool working for a batch
    runs, so that :data:`CURRENT_JOB` reaches the tickets taken in its threads."""
    context = contextvars.copy_context()

    def run(*args: Any, **kwargs: Any) -> T:  # a copy per call: one context cannot run in two threads at once
        return context.copy().run(function, *args, **kwargs)

    return run


@contextlib.contextmanager
def batch_job(job_id: str, owner: str, jobs: JobOrder | None = None, label: str = "",
              should_cancel: Callable[[], bool] | None = None) -> Iterator[BatchJobRef]:
    """Mark the calls made in this block (and in threads started through :func:`in_context`) as
    photos of batch job ``job_id`` of ``owner``; with ``jobs``, the job joins that order meanwhile.
    ``should_cancel``: the job's cancel, which takes a waiting photo out of its queue."""
    ref = BatchJobRef(job_id, owner, should_cancel)
    if jobs is not None:
        jobs.add(job_id, owner, label)
    token = CURRENT_JOB.set(ref)
    try:
        yield ref
    finally:
        CURRENT_JOB.reset(token)
        if jobs is not None:
            jobs.remove(job_id)
