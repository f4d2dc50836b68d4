"""The fair queue in front of each engine (core.queue, through core.manager): places reported in
order, estimates from measured calls, cancel while waiting, a bounded length, people before batch
photos, batch jobs in an order their owners change, and the batch marker reaching pool threads.

Deterministic: the head of a queue is held by the test (a ticket it takes and gives back, or an
Event a running block waits on); every wait is bounded; nothing asserts on durations."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from core import operations
from core.batch import BatchModels, run
from core.config import DEFAULT_QUEUE_MAX, SettingsError, load_settings
from core.errors import Cancelled
from core.operations import Edit
from core.operations.inpaint import InpaintParams
from core.queue import (
    BATCH,
    CURRENT_JOB,
    INTERACTIVE,
    EngineQueue,
    JobOrder,
    NotJobOwner,
    QueueFull,
    UnknownJob,
    batch_job,
    in_context,
)
from tests.helpers import FakeEngine, manager_with, remove_recipe, write_photos

LIMIT = 10.0  # seconds: the bound on every wait of these tests (never reached when they pass)


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + LIMIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.002)


class Waiter:
    """A thread that takes a turn in ``queue`` and, once it runs, holds it until ``finish`` is set."""

    def __init__(self, queue: EngineQueue, name: str, *, should_cancel=None, context_job=None, ran=None):
        self.queue, self.name = queue, name
        self.reports: list[tuple[int, int, float | None]] = []
        self.finish = threading.Event()
        self.running = threading.Event()
        self.error: BaseException | None = None
        self.should_cancel, self.context_job, self.ran = should_cancel, context_job, ran
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            if self.context_job is not None:
                with batch_job(*self.context_job, jobs=self.queue.jobs):
                    self._turn()
            else:
                self._turn()
        except BaseException as error:  # noqa: BLE001 (looked at by the test)
            self.error = error

    def _turn(self):
        with self.queue.turn(on_wait=lambda *report: self.reports.append(report), should_cancel=self.should_cancel):
            if self.ran is not None:
                self.ran.append(self.name)
            self.running.set()
            self.finish.wait(LIMIT)

    def start(self) -> Waiter:
        """Start and wait until the ticket is in the queue (so arrival order is the start order)."""
        before = len(self.queue)
        self.thread.start()
        wait_until(lambda: len(self.queue) > before or self.error is not None, f"{self.name} to queue")
        return self

    def last(self):
        return self.reports[-1] if self.reports else None

    def done(self):
        """Wait for its turn (bounded), then let it finish (without an error)."""
        assert self.running.wait(LIMIT), f"{self.name} never ran"
        self.finish.set()
        self.thread.join(LIMIT)
        assert not self.thread.is_alive() and self.error is None


def queue(**options) -> EngineQueue:
    return EngineQueue("SD 1.5 inpainting", poll=0.01, **options)


def test_three_waiters_see_places_one_two_three_and_move_up():
    q = queue()
    head = q.enter()
    assert q.place(head) == 0 and q.running is head
    waiters = [Waiter(q, name).start() for name in "abc"]
    for index, waiter in enumerate(waiters, 1):
        wait_until(lambda w=waiter, i=index: w.last() is not None and w.last()[:2] == (i, i), f"place {index}")
    assert [q.place(ticket) for ticket in q.waiting()] == [1, 2, 3]

    q.leave(head)  # the first waiter runs, the others move up
    waiters[0].running.wait(LIMIT)
    assert waiters[0].running.is_set()
    wait_until(lambda: waiters[1].last()[:2] == (1, 1) and waiters[2].last()[:2] == (2, 2), "the others to move up")
    waiters[0].done()
    wait_until(lambda: waiters[2].last()[:2] == (1, 1), "the last to move up again")
    waiters[1].done()
    waiters[2].done()
    assert len(q) == 0 and all(w.error is None for w in waiters)


def test_no_estimate_before_a_measured_call_then_the_average_times_the_requests_ahead():
    ticks = iter([100.0, 104.0] + [200.0] * 4)  # the first call measured: 4 s, later ones 0 s
    q = queue(clock=lambda: next(ticks))
    head = q.enter()
    first = Waiter(q, "first").start()
    wait_until(lambda: first.last() is not None, "a report")
    assert first.last() == (1, 1, None)
    q.leave(head)
    first.running.wait(LIMIT)
    first.done()  # measured: 4 s
    assert q.average_seconds() == 4.0

    head = q.enter()
    waiters = [Waiter(q, name).start() for name in "ab"]
    wait_until(lambda: all(w.last() is not None and w.last()[1] == i for i, w in enumerate(waiters, 1)), "reports")
    assert [w.last() for w in waiters] == [(1, 1, 4.0), (2, 2, 8.0)]
    q.leave(head)
    for waiter in waiters:
        waiter.running.wait(LIMIT)
        waiter.done()
    assert first.error is None and all(w.error is None for w in waiters)
    assert q.average_seconds() == 4.0 / 3


def test_cancel_while_waiting_leaves_the_queue_at_once_and_the_others_move_up():
    q = queue()
    head = q.enter()
    cancel = threading.Event()
    first = Waiter(q, "first").start()
    leaving = Waiter(q, "leaving", should_cancel=cancel.is_set).start()
    last = Waiter(q, "last").start()
    wait_until(lambda: last.last() is not None and last.last()[:2] == (3, 3), "the last in third place")
    ticket = q.waiting()[1]

    cancel.set()
    leaving.thread.join(LIMIT)
    assert not leaving.thread.is_alive()  # it did not wait for the head
    assert isinstance(leaving.error, Cancelled) and "SD 1.5 inpainting" in str(leaving.error)
    assert ticket not in q.waiting() and len(q.waiting()) == 2
    wait_until(lambda: last.last()[:2] == (2, 2), "the last to move up")
    assert q.running is head

    q.leave(head)
    for waiter in (first, last):
        waiter.running.wait(LIMIT)
        waiter.done()
    assert first.error is None and last.error is None


def test_a_full_queue_refuses_one_more_with_a_clear_message():
    q = queue(max_waiting=2)
    head = q.enter()
    waiters = [Waiter(q, name).start() for name in "ab"]
    with pytest.raises(QueueFull) as refused:
        q.enter()
    assert str(refused.value) == "SD 1.5 inpainting is busy: 2 requests are waiting. Try again in a minute."
    assert isinstance(refused.value, ValueError)  # a UserError
    assert len(q.waiting()) == 2
    q.leave(head)
    for waiter in waiters:
        waiter.running.wait(LIMIT)
        waiter.done()


def test_the_manager_refuses_past_the_queue_max_setting_naming_the_engine():
    models = manager_with(telea=FakeEngine(), settings=replace(manager_with().settings, queue_max=1))
    head = models.queue("telea").enter()
    waiter = Waiter(models.queue("telea"), "a").start()
    with pytest.raises(QueueFull, match="^OpenCV Telea is busy: 1 request is waiting. Try again in a minute.$"):
        with models.hold("telea"):
            pass
    assert not waiter.running.is_set()
    models.queue("telea").leave(head)
    waiter.running.wait(LIMIT)
    waiter.done()
    assert not models.busy


def test_the_queue_max_setting_is_read_and_checked(tmp_path):
    missing = tmp_path / "missing.toml"
    assert load_settings({}, missing).queue_max == DEFAULT_QUEUE_MAX == 20
    assert load_settings({"INPAINT_STUDIO_QUEUE_MAX": "5"}, missing).queue_max == 5
    for bad in ("0", "-3", "many", "2.5"):
        with pytest.raises(SettingsError, match="INPAINT_STUDIO_QUEUE_MAX=.*whole number of at least 1"):
            load_settings({"INPAINT_STUDIO_QUEUE_MAX": bad}, missing)


def test_an_interactive_request_overtakes_a_batch_photo_queued_before_it():
    q = queue()
    ran: list[str] = []
    head = q.enter()
    photo = Waiter(q, "batch photo", context_job=("job-1", "alice"), ran=ran).start()
    person = Waiter(q, "person", ran=ran).start()
    assert [t.priority for t in q.waiting()] == [INTERACTIVE, BATCH]
    wait_until(lambda: photo.last() is not None and photo.last()[:2] == (2, 2), "the photo to move back")
    q.leave(head)
    person.running.wait(LIMIT)
    assert ran == ["person"]
    person.done()
    photo.running.wait(LIMIT)
    photo.done()
    assert ran == ["person", "batch photo"]


def test_batch_jobs_are_served_in_an_order_their_owners_change_and_no_one_else():
    jobs = JobOrder()
    q = queue(jobs=jobs)
    ran: list[str] = []
    head = q.enter()
    alices = Waiter(q, "alice's photo", context_job=("a", "alice"), ran=ran).start()
    bobs = Waiter(q, "bob's photo", context_job=("b", "bob"), ran=ran).start()
    assert [job.job_id for job in jobs.jobs()] == ["a", "b"]
    assert [t.job.job_id for t in q.waiting()] == ["a", "b"]

    with pytest.raises(NotJobOwner, match="belongs to someone else"):
        jobs.move("b", "up", "alice")
    with pytest.raises(UnknownJob, match="no batch job 'zzz'"):
        jobs.move("zzz", "up", "alice")
    jobs.move("b", "up", "bob")
    assert [job.job_id for job in jobs.jobs()] == ["b", "a"]
    assert [t.job.job_id for t in q.waiting()] == ["b", "a"]
    wait_until(lambda: alices.last()[:2] == (2, 2) and bobs.last()[:2] == (1, 1), "the new places reported")
    jobs.move("b", "up", "bob")  # already first: nothing changes
    assert [job.job_id for job in jobs.jobs()] == ["b", "a"]

    q.leave(head)
    bobs.running.wait(LIMIT)
    bobs.done()
    alices.running.wait(LIMIT)
    alices.done()
    assert ran == ["bob's photo", "alice's photo"]
    assert jobs.jobs() == []  # each job left the order when it ended


def test_the_manager_moves_its_jobs_for_their_owners():
    models = manager_with()
    with models.batch_job("a", "alice", label="holiday"), models.batch_job("b", "bob"):
        assert [(job.job_id, job.owner, job.label) for job in models.jobs.jobs()] == [("a", "alice", "holiday"),
                                                                                      ("b", "bob", "")]
        models.move_job("a", "down", "alice")
        assert [job.job_id for job in models.jobs.jobs()] == ["b", "a"]
        with pytest.raises(NotJobOwner):
            models.move_job("a", "up", "bob")
    with pytest.raises(UnknownJob):
        models.move_job("a", "up", "alice")


def test_the_batch_marker_reaches_tickets_taken_in_pool_threads():
    q = queue()
    with batch_job("job-7", "alice"):
        assert CURRENT_JOB.get().job_id == "job-7"
        with ThreadPoolExecutor(2) as pool:
            marked = pool.submit(in_context(q.enter)).result(LIMIT)
            q.leave(marked)
            bare = pool.submit(q.enter).result(LIMIT)  # a pool thread without the copy: not marked
            q.leave(bare)
    assert CURRENT_JOB.get() is None
    assert marked.priority == BATCH and marked.job.job_id == "job-7" and marked.job.owner == "alice"
    assert bare.priority == INTERACTIVE and bare.job is None


def test_the_batch_runner_marks_its_photos_as_batch_requests(tmp_path):
    seen = []

    class Noting(FakeEngine):
        def generate(self, request, progress=None, should_cancel=None):
            seen.append(CURRENT_JOB.get())
            return super().generate(request, progress, should_cancel)

    models = manager_with(telea=Noting())
    write_photos(tmp_path / "in", 2)
    summary = run(remove_recipe(), tmp_path / "in", tmp_path / "out", models=BatchModels(models), job_id="j1",
                  owner="alice")
    assert summary.counts["done"] == 2
    assert [(ref.job_id, ref.owner) for ref in seen] == [("j1", "alice"), ("j1", "alice")]
    assert models.jobs.jobs() == [] and CURRENT_JOB.get() is None


def test_a_cancelled_batch_takes_its_waiting_photo_out_of_the_queue(tmp_path):
    models = manager_with(telea=FakeEngine())
    write_photos(tmp_path / "in", 2)
    head = models.queue("telea").enter()  # someone else's generation runs
    cancel = threading.Event()
    summaries = []
    batch = threading.Thread(target=lambda: summaries.append(
        run(remove_recipe(), tmp_path / "in", tmp_path / "out", models=BatchModels(models),
            should_cancel=cancel.is_set)), daemon=True)
    batch.start()
    wait_until(lambda: len(models.queue("telea").waiting()) == 1, "the first photo to wait")
    cancel.set()
    batch.join(LIMIT)
    assert not batch.is_alive() and models.queue("telea").running is head
    assert summaries[0].counts == {"done": 0, "failed": 0, "skipped": 0, "cancelled": 2}
    assert "cancelled while it waited" in summaries[0].rows[0]["error"]
    models.queue("telea").leave(head)


def test_operations_report_the_wait_and_cancel_it_through_the_manager():
    models = manager_with(telea=FakeEngine())
    photo, mask = Image.new("RGB", (32, 32)), np.ones((32, 32), bool)
    edit = Edit("remove", InpaintParams(engine="telea", steps=1))
    head = models.queue("telea").enter()
    reports, errors, cancel = [], [], threading.Event()

    def call():
        try:
            operations.run(edit, photo, mask, models, on_wait=lambda *r: reports.append(r), should_cancel=cancel.is_set)
        except Cancelled as error:
            errors.append(error)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    wait_until(lambda: reports, "a report")
    assert reports[0] == (1, 1, None) and models.busy  # waiting counts as running for the memory janitor
    cancel.set()
    caller.join(LIMIT)
    assert not caller.is_alive() and len(errors) == 1
    assert models.queue("telea").waiting() == []
    models.queue("telea").leave(head)
    assert not models.busy


def test_an_error_in_the_wait_callback_takes_the_ticket_out():
    q = queue()
    head = q.enter()

    def stop(*report):
        raise KeyboardInterrupt  # what a page's rerun looks like to the queue: any exception

    with pytest.raises(KeyboardInterrupt):
        with q.turn(on_wait=stop):
            pass
    assert q.waiting() == [] and q.running is head
    q.leave(head)
    with q.turn() as ticket:
        assert q.running is ticket
    assert len(q) == 0


def test_the_batch_page_shows_its_own_jobs_with_moves_and_others_without_names():
    from ui.batch_job import order_rows

    jobs = JobOrder()
    for job_id, owner, label in (("a", "alice", "clean: 4 files"), ("b", "bob", "bob's holiday: 9 files"),
                                 ("c", "alice", "relight: 2 files")):
        jobs.add(job_id, owner, label)
    rows = order_rows(jobs.jobs(), "alice")
    assert [(r.place, r.shown, r.mine, r.can_up, r.can_down) for r in rows] == [
        (1, "clean: 4 files", True, False, True),
        (2, "Someone else's batch", False, False, False),
        (3, "relight: 2 files", True, True, False),
    ]
    assert all("holiday" not in r.shown for r in rows)
