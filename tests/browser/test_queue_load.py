"""Eight people press Generate at once (Chromium, the tiny models): their requests queue for the one
diffusion engine, each page says where its request stands, and every one of them gets its own result.

Each of the eight sessions opens an example photo (four photos, two sessions each), paints a short
stroke on the Mask page (at one of two places, so that the two sessions of a photo are told apart),
chooses the Fast preset (15 steps of the tiny SD 1.5) and one variant on the Inpaint page, and
waits. When all eight are ready, they press Generate together: one generation each.

A script in each page samples the progress bar's text every 100 ms from the press on Generate to
the result, with the browser's clock (the wall clock the test reads too). From that, per session:

- **places seen**: the N of "Waiting for SD 1.5 inpainting: N requests ahead of yours" (0 for
  "yours is next"), each change once, in order;
- **wait**: from the press on Generate to the first progress text that is not a waiting message,
  the bar's "Step 1 of 15" (or a later step): the request had its turn and ran its first step. So
  it includes the page's own run up to the queue and one step (the bar changes after a step). A
  page starved of the CPU may get its steps in one burst with the result and show none; its wait
  then ends where its waiting message went away (an upper bound), and the figures say on how many;
- **total**: from the press on Generate to the result's caption on the page.

Checked: all eight get a result, on their own photo and where they painted; all but the first
served saw their place, and no session's place ever went up; the waiting pages give an estimate
once the engine has been timed; the server logs no error. Every wait is bounded: the set-up, each
result (RESULT_TIMEOUT_S), and any stretch in which no page's progress changes (STALL_S, a hang).
The figures are printed for the README.
"""
from __future__ import annotations

import asyncio
import io
import os
import re
import statistics
import time

import numpy as np
import pytest
from PIL import Image

from core.images import load_image
from tests.browser.actions import (
    CANVAS,
    CHROMIUM_ARGS,
    EXAMPLES,
    async_choose_example,
    async_go_to,
    async_wait_idle,
    serve_app,
)
from tests.helpers import run_in_own_loop

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(600)]

PHOTOS = {"Chelsea": "chelsea.jpg", "Astronaut": "astronaut.jpg", "Coffee": "coffee.jpg",
          "Rocket": "rocket.jpg"}
# Two strokes, far apart (fractions of the canvas): session i paints STROKES[i // 4] on photo i % 4.
STROKES = ([(0.22, 0.25), (0.32, 0.35)], [(0.68, 0.65), (0.78, 0.75)])
SESSIONS = [(name, stroke) for stroke in range(len(STROKES)) for name in PHOTOS]
WAITING = re.compile(r"^Waiting for (.+?): (?:(\d+) requests? ahead of yours|yours is next)")
RESULT_TEXT = "seed 42 · seam"  # the result's caption
FOOTER = re.compile(r" · total (\d+) ms$")  # the result's footer: the server's time for the edit
SET_UP_TIMEOUT_MS = 120_000  # one step of the set-up (eight pages on two cores)
RESULT_TIMEOUT_S = 300  # from the press to the result, the queue included
# No session's progress text changed for this long: something hangs. The first request loads the
# model meanwhile (no step shows until it is loaded), which on a busy two-core machine took over 60 s.
STALL_S = 150

# Records the progress bar's text (each change, with Date.now()) and the press on Generate.
SAMPLER = """
(() => {
  const samples = [];
  let last = null, lastTick = 0, maxGap = 0, ticks = 0, pressed = null, result = null;
  window.__queueLoad = {samples, pressed: () => pressed, gaps: () => [ticks, maxGap],
                        state: () => ({changes: samples.length, result})};
  document.addEventListener('click', (event) => {
    const button = event.target.closest && event.target.closest('button');
    if (button && button.innerText.trim() === 'Generate' && pressed === null) pressed = Date.now();
  }, true);
  setInterval(() => {
    const now = Date.now();
    if (pressed === null || result !== null) return;  // from the press to the result
    if (lastTick) maxGap = Math.max(maxGap, now - lastTick);
    lastTick = now;
    ticks += 1;
    const bar = document.querySelector('[data-testid=stProgress]');
    const text = bar ? bar.innerText.trim() : '';
    if (text !== last) { samples.push([now, text]); last = text; }
    if (result === null && [...document.querySelectorAll('[data-testid=stCaptionContainer]')]
        .some((caption) => caption.innerText.includes('RESULT_TEXT'))) result = now;
  }, 100);
})();
""".replace("RESULT_TEXT", RESULT_TEXT)


async def paint(page, path: list[tuple[float, float]]) -> None:
    """A brush stroke through ``path`` on the Mask page's canvas; waits for the page to take it."""
    canvas = page.locator(CANVAS)
    await canvas.wait_for()
    box = await canvas.bounding_box()
    points = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in path]
    await page.mouse.move(*points[0])
    await page.mouse.down()
    for point in points[1:]:
        await page.mouse.move(*point, steps=3)
    await page.mouse.up()
    await page.wait_for_timeout(600)  # the canvas debounces what it sends
    await async_wait_idle(page, SET_UP_TIMEOUT_MS)
    await page.get_by_text("Mask covers").wait_for()


async def session(browser, url: str, name: str, stroke: int, ready: asyncio.Event, go: asyncio.Event,
                  activity: dict) -> dict:
    """One person: photo, stroke, Fast preset, one variant; on ``go`` press Generate; the samples and
    the download. ``activity["last"]``: when any session's progress text last changed (monotonic)."""
    context = await browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    context.set_default_timeout(SET_UP_TIMEOUT_MS)
    await context.add_init_script(SAMPLER)
    page = await context.new_page()
    step = "set-up"
    try:
        await async_choose_example(page, url, name, PHOTOS[name], SET_UP_TIMEOUT_MS)
        await async_go_to(page, "Mask", SET_UP_TIMEOUT_MS)
        await paint(page, STROKES[stroke])
        await async_go_to(page, "Inpaint", SET_UP_TIMEOUT_MS)
        await page.get_by_test_id("stButtonGroup").get_by_text("Fast", exact=True).click()
        await async_wait_idle(page, SET_UP_TIMEOUT_MS)
        await page.get_by_test_id("stSlider").filter(has_text="Variants").get_by_role("slider").focus()
        await page.keyboard.press("Home")  # one variant instead of two: half the work
        await async_wait_idle(page, SET_UP_TIMEOUT_MS)
        ready.set()
        await go.wait()
        step = "generation"
        await page.get_by_role("button", name="Generate").click()
        deadline, changes = time.monotonic() + RESULT_TIMEOUT_S, 0
        while (state := await page.evaluate("window.__queueLoad.state()"))["result"] is None:
            if state["changes"] != changes:
                changes, activity["last"] = state["changes"], time.monotonic()
            assert time.monotonic() < deadline, f"no result {RESULT_TIMEOUT_S} s after pressing Generate"
            await page.wait_for_timeout(250)
        activity["last"] = time.monotonic()
        done_ms = state["result"]
        await async_wait_idle(page, RESULT_TIMEOUT_S * 1000)
        pressed = await page.evaluate("window.__queueLoad.pressed()")
        samples = await page.evaluate("window.__queueLoad.samples")
        ticks, max_gap = await page.evaluate("window.__queueLoad.gaps()")
        footer = await page.get_by_text(FOOTER).first.inner_text()  # also: the result is on the page
        step = "download"
        async with page.expect_download() as download_info:
            await page.get_by_role("button", name="Download PNG").click()
        data = (await (await download_info.value).path()).read_bytes()
        image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    except Exception as error:
        try:
            text = await page.get_by_test_id("stMain").inner_text(timeout=5000)
        except Exception:  # noqa: BLE001 (the page is gone: the error says enough)
            text = "(unreadable)"
        raise AssertionError(f"{name} (stroke {stroke}), {step}: {error}\nThe page says: {text[:1500]}") \
            from error
    finally:
        await context.close()
    return {"name": name, "stroke": stroke, "pressed": pressed, "done": done_ms, "samples": samples,
            "ticks": ticks, "max_gap": max_gap, "image": image,
            "edit": int(FOOTER.search(footer).group(1)) / 1000}


def figures(record: dict) -> dict:
    """Places seen, wait and total (seconds) of one session, from its samples (see the docstring)."""
    pressed = record["pressed"]
    places, estimates, first_step, turn, begun = [], [], None, None, False
    for when, text in record["samples"]:
        if when < pressed:
            continue
        if text == "Starting…":
            begun = True
            continue
        waiting = WAITING.match(text)
        if waiting:
            begun = True
            place = int(waiting.group(2) or 0)
            if not places or places[-1] != place:
                places.append(place)
            if "about" in text:
                estimates.append(text.rsplit("about ", 1)[1].rstrip("."))
            turn = None
        elif text.startswith("Step ") and first_step is None:
            first_step = when
        elif begun and turn is None:
            turn = when  # what followed the last waiting message (or the start)
    # On a starved machine a page may get all its steps in one burst with the result, and show none:
    # its wait then ends where its waiting message went away (the turn and the run, an upper bound).
    assert first_step is not None or turn is not None, \
        f"{record['name']}: its turn was not seen: {record['samples']}"
    ended = first_step if first_step is not None else turn
    return {**record, "places": places, "estimates": estimates, "first_step": ended,
            "steps_seen": first_step is not None, "wait": (ended - pressed) / 1000,
            "total": (record["done"] - pressed) / 1000}


def test_eight_sessions_queue_for_one_engine(tiny_models, tmp_path, chromium_path):
    from playwright.async_api import async_playwright

    settings = {f"INPAINT_STUDIO_MODEL_{role.upper()}": str(path) for role, path in tiny_models.items()}
    settings["MALLOC_ARENA_MAX"] = "2"  # as scripts/serve.sh, the Dockerfile and `make run` serve the app
    with serve_app(settings, tmp_path / "streamlit.log") as url:

        async def run_all():
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
                ready = [asyncio.Event() for _ in SESSIONS]
                go = asyncio.Event()
                activity = {"last": time.monotonic()}
                tasks = [asyncio.create_task(session(browser, url, name, stroke, event, go, activity))
                         for (name, stroke), event in zip(SESSIONS, ready)]
                # Everyone ready, then all press Generate; a session that fails in its set-up ends the test.
                set_up = time.perf_counter()
                while not all(event.is_set() for event in ready):
                    failed = [task for task in tasks if task.done()]
                    if failed or time.perf_counter() - set_up > SET_UP_TIMEOUT_MS / 1000 * 2:
                        for task in tasks:
                            task.cancel()
                        await asyncio.gather(*tasks, return_exceptions=True)
                        await browser.close()
                        if failed:
                            failed[0].result()  # raises its error
                        raise AssertionError(f"not ready after {SET_UP_TIMEOUT_MS / 500:.0f} s")
                    await asyncio.sleep(0.2)
                set_up = time.perf_counter() - set_up
                activity["last"] = time.monotonic()
                go.set()
                # A hang fails fast: while the requests are served, some page's progress text changes
                # every step (or place); none changing for STALL_S seconds ends the test.
                while not all(task.done() for task in tasks):
                    if time.monotonic() - activity["last"] > STALL_S:
                        for task in tasks:
                            task.cancel()
                        await asyncio.gather(*tasks, return_exceptions=True)
                        await browser.close()
                        raise AssertionError(f"no session's progress changed for {STALL_S} s: a hang")
                    await asyncio.sleep(0.5)
                results = await asyncio.gather(*tasks, return_exceptions=True)
                await browser.close()
                return results, set_up

        results, set_up = run_in_own_loop(run_all)
    # (serve_app has checked the server's log: no error in it.)

    errors = [result for result in results if isinstance(result, BaseException)]
    assert not errors, "\n\n".join(map(str, errors))
    sessions = sorted((figures(record) for record in results), key=lambda record: record["first_step"])
    assert len(sessions) == len(SESSIONS)  # every request completed with a result

    presses = [record["pressed"] for record in sessions]
    spread = (max(presses) - min(presses)) / 1000
    for record in sessions:
        label = f"{record['name']} (stroke {record['stroke']})"
        places = record["places"]
        assert places == sorted(places, reverse=True), f"{label}: its place went up: {places}"
        # Sampled often: 100 ms apart, the page's renderer allowing (a starved one skips a beat).
        # (inside a full test run a starved renderer averaged 336 ms; 1 s still gives the waits meaning)
        interval = (record["done"] - record["pressed"]) / max(record["ticks"], 1)
        assert interval < 1000, f"{label}: its page was sampled only every {interval:.0f} ms"
        # Its own photo, edited where it painted, not where the other session on that photo did.
        original = np.asarray(load_image(EXAMPLES / PHOTOS[record["name"]]))
        image = record["image"]
        assert image.shape == original.shape, f"{label} got someone else's photo"
        ys, xs = np.nonzero((image != original).any(axis=-1))
        assert len(xs), f"{label}: its photo was not edited"
        height, width = original.shape[:2]
        for stroke, path in enumerate(STROKES):
            (x0, y0), (x1, y1) = path
            x, y = (x0 + x1) / 2 * width, (y0 + y1) / 2 * height
            inside = xs.min() <= x <= xs.max() and ys.min() <= y <= ys.max()
            assert inside == (stroke == record["stroke"]), f"{label}: the edit is not where it painted"
    # One request runs at a time, so all but the first served wait: each of them was told its place
    # (the presses fall within a second or two, well within one generation: see `spread`).
    # (Counted, not taken from the order served, which a page's late rendering could blur.)
    unplaced = [f"{r['name']} (stroke {r['stroke']})" for r in sessions if not r["places"]]
    assert len(unplaced) <= 1, f"waited without seeing their place: {unplaced} (presses {spread:.1f} s apart)"
    assert sum(1 for record in sessions if any(place >= 1 for place in record["places"])) >= 6
    assert max(max(record["places"], default=0) for record in sessions) >= 4
    # Once the engine has been timed, the waiting pages say about how long: all from the third served.
    assert sum(not r["estimates"] for r in sessions) <= 2, [r["estimates"] for r in sessions]

    waits = [record["wait"] for record in sessions]
    elapsed = (max(record["done"] for record in sessions) - min(presses)) / 1000
    seen = " | ".join(",".join(map(str, record["places"])) or "-" for record in sessions)
    sampled = statistics.median((r["done"] - r["pressed"]) / max(r["ticks"], 1) for r in sessions)
    print(f"\nqueue load: {len(sessions)} sessions, all completed in {elapsed:.0f} s; waits median "
          f"{statistics.median(waits):.1f} s, 95th percentile {np.percentile(waits, 95):.1f} s; places seen "
          f"(requests ahead, in the order served) {seen}; totals {min(r['total'] for r in sessions):.1f}"
          f"–{max(r['total'] for r in sessions):.1f} s; one edit "
          f"{statistics.median(r['edit'] for r in sessions):.1f} s (median, server side)")
    print(f"  presses within {spread:.1f} s after a {set_up:.0f} s set-up; pages sampled every "
          f"{sampled:.0f} ms "
          f"(median; longest gap {max(r['max_gap'] for r in sessions)} ms); machine load average "
          f"{os.getloadavg()[0]:.1f}; steps not shown (wait to the end of the waiting message) on "
          f"{sum(not r['steps_seen'] for r in sessions)} page(s)")
    for record in sessions:
        estimates = record["estimates"][:1] + record["estimates"][-1:]
        print(f"  {record['name']:<9} stroke {record['stroke']}: wait {record['wait']:5.1f} s, total "
              f"{record['total']:5.1f} s (the edit {record['edit']:4.1f} s), places {record['places']}, "
              f"first and last estimate {estimates}")
