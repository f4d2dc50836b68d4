"""Ending the sessions of people who have left, so that their photos, uploads and results are freed.

When a browser tab closes, Streamlit keeps its session for ``server.disconnectedSessionTTL``
seconds (two minutes by default) so that a reconnect finds it. After that the session is invisible,
but its storage only drops it on the next write (the next person to connect or leave), and then
without shutting it down, which is what frees the session's uploaded files and media. A server
everyone has left would keep the last sessions' photos and results until someone came back.
:func:`end_expired_sessions` does what the storage leaves undone; the memory janitor
(``ui.resources.memory_janitor``) calls it.

This reaches into Streamlit's session manager (``_session_storage``, ``_storage_lock``), so it is
written to do nothing, and say so once in the log, when those are not as expected.
"""
from __future__ import annotations

import asyncio
import logging

LOGGER = logging.getLogger(__name__)
_warned = False


def end_expired_sessions(timeout: float = 10.0) -> int:
    """Shut down the sessions whose reconnect time has passed; how many. Safe from any thread: the
    work runs on Streamlit's event loop, where the session manager does its own."""
    from streamlit import runtime

    if not runtime.exists():
        return 0
    instance = runtime.get_instance()
    manager = getattr(instance, "_session_mgr", None)
    objects = getattr(instance, "_async_objs", None)
    if objects is None:  # the server has not started (or has stopped)
        return 0
    loop = objects.eventloop
    if loop.is_closed():
        return 0

    async def on_the_loop() -> int:
        return expire_stored_sessions(manager)

    return asyncio.run_coroutine_threadsafe(on_the_loop(), loop).result(timeout)


def expire_stored_sessions(manager) -> int:
    """Remove the expired sessions from ``manager``'s storage and shut each down; how many."""
    cache = getattr(getattr(manager, "_session_storage", None), "_cache", None)
    lock = getattr(manager, "_storage_lock", None)
    if cache is None or not callable(getattr(cache, "expire", None)) or lock is None:
        _warn_once(manager)
        return 0
    with lock:
        removed = cache.expire()
    for _, info in removed:
        info.session.shutdown()
    return len(removed)


def _warn_once(manager) -> None:
    global _warned
    if not _warned:
        _warned = True
        LOGGER.warning("Sessions that ended are left to Streamlit to free (its session manager, %s, is not the "
                       "one this app knows).", type(manager).__name__)
