"""Handing freed memory back to the system: the trim itself, and the janitor thread that does it
while the server is idle."""
from __future__ import annotations

import sys
import threading
import time

import pytest

from core.memory import MemoryJanitor, release_memory


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's (Linux)")
def test_release_memory_returns_freed_heap_pages_to_the_system():
    """Blocks below the mmap threshold live on the heap; freed, glibc keeps them (only the top of the
    heap is given back, and the last block pins it) until malloc_trim."""
    release_memory()
    blocks = [bytearray(64 * 1024) for _ in range(3000)]  # about 190 MB in 64 KB blocks
    pin = bytearray(64 * 1024)  # allocated last: on top of the others
    before_free = rss_mb()
    del blocks
    freed_but_kept = rss_mb()
    assert release_memory() is True
    after = rss_mb()
    assert before_free - freed_but_kept < 60, "glibc handed the blocks back by itself: nothing to test"
    assert freed_but_kept - after > 120, (before_free, freed_but_kept, after)
    del pin


def test_the_janitor_releases_at_its_interval_and_not_while_busy():
    calls: list[float] = []
    busy = threading.Event()
    janitor = MemoryJanitor(0.05, busy=busy.is_set, release=lambda: calls.append(time.monotonic())).start()
    try:
        deadline = time.monotonic() + 10
        while len(calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(calls) >= 3 and janitor.runs >= 3
        busy.set()
        time.sleep(0.1)  # let a run that had started finish
        count = len(calls)
        time.sleep(0.3)
        assert len(calls) == count, "released while a generation ran"
        busy.clear()
        deadline = time.monotonic() + 10
        while len(calls) == count and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(calls) > count
    finally:
        janitor.stop()
    stopped_at = len(calls)
    time.sleep(0.2)
    assert len(calls) == stopped_at


def test_the_janitor_outlives_a_failing_release():
    attempts = []

    def flaky() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("no libc here")

    janitor = MemoryJanitor(0.02, release=flaky).start()
    try:
        deadline = time.monotonic() + 10
        while janitor.runs < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        janitor.stop()
    assert len(attempts) >= 3 and janitor.runs >= 2


def test_an_interval_must_be_positive():
    with pytest.raises(ValueError):
        MemoryJanitor(0)


class FakeSession:
    """Stands in for Streamlit's AppSession: an id, and whether it was shut down."""

    def __init__(self, session_id: str) -> None:
        self.id = session_id
        self.shut_down = False

    def shutdown(self) -> None:
        self.shut_down = True


def test_sessions_past_their_reconnect_time_are_shut_down():
    """Streamlit's own session manager and storage: an expired session stays stored (only a write
    would drop it, and without shutting it down) until expire_stored_sessions ends it."""
    from streamlit.runtime.memory_session_storage import MemorySessionStorage
    from streamlit.runtime.session_manager import SessionInfo
    from streamlit.runtime.websocket_session_manager import WebsocketSessionManager

    from ui.sessions import expire_stored_sessions

    storage = MemorySessionStorage(ttl_seconds=0.2)
    manager = WebsocketSessionManager(storage, uploaded_file_manager=None, script_cache=None,
                                      message_enqueued_callback=None)
    left = [FakeSession("left-1"), FakeSession("left-2")]
    for session in left:
        storage.save(SessionInfo(client=None, session=session, script_run_count=1))
    time.sleep(0.3)
    recent = FakeSession("just-left")
    storage._cache._data[recent.id] = SessionInfo(client=None, session=recent, script_run_count=1)  # noqa: SLF001
    storage._cache._expirations[recent.id] = time.monotonic() + 60  # noqa: SLF001
    assert storage.get("left-1") is None and len(storage._cache._data) == 3  # noqa: SLF001 (expired, still held)

    assert expire_stored_sessions(manager) == 2
    assert all(session.shut_down for session in left) and not recent.shut_down
    assert storage.get("just-left") is not None  # a session that may still reconnect is kept
    assert expire_stored_sessions(manager) == 0


def test_an_unknown_session_manager_is_left_alone(caplog):
    from ui.sessions import end_expired_sessions, expire_stored_sessions

    assert expire_stored_sessions(object()) == 0
    assert "left to Streamlit" in caplog.text
    assert end_expired_sessions() == 0  # no server running here
