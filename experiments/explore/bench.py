"""Measure the explorer as a user meets it: the time to a usable page, and the pointer-to-image
round trip while dragging over a plane, in headless Chromium.

    python -m experiments.explore.bench
    python -m experiments.explore.bench --screenshot results/explorer.png

The browser is started first (a user's browser is already open). Then the clock starts and
`python -m experiments.explore --port 0` runs in a process of its own; "usable" is when the page
loaded from it has drawn its planes and shown its first three decodings. Then, on each plane,
--moves real pointer moves (WebDriver actions, --move-ms apart, along a closed curve over most of
the plane) drag the marker around. The page times each update itself: performance.now() at the
pointer move, and again when that position's digit is drawn (the newest position wins, so
positions overtaken while a request is in flight are never drawn, and not counted). Printed: the
median and 95th percentile of that round trip, the updates drawn per second while dragging, and
the goals (p95 <= 50 ms, >= 20 updates/s, usable <= 5 s). With --screenshot it also draws from
the prior and saves a picture of the whole page.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from experiments.explore.browser import chromium
from experiments.explore.models import NumberRange, ProjectError, exit_on_error

ROOT = Path(__file__).resolve().parents[2]
PLANES = ("ae", "vae", "cvae")
GOALS = {"p95_ms": 50.0, "updates_per_s": 20.0, "usable_s": 5.0}
START_TIMEOUT_S = 60.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m experiments.explore.bench",
                                     description="Time the explorer in headless Chromium: start-up and the "
                                                 "pointer-to-image round trip while dragging.")
    parser.add_argument("--planes", nargs="+", choices=PLANES, default=list(PLANES),
                        help="planes to drag over, one after the other (default: ae vae cvae)")
    parser.add_argument("--moves", type=NumberRange(int, 2, 100_000), default=240,
                        help="pointer moves per plane, 2 to 100000 (default: 240)")
    parser.add_argument("--move-ms", type=NumberRange(int, 0, 10_000), default=16,
                        help="time each pointer move takes, in ms, 0 to 10000: 16 is a 60 Hz mouse (default: 16)")
    parser.add_argument("--screenshot", type=Path, help="also save a PNG of the page after a prior draw here")
    parser.add_argument("--explorer-args", default="",
                        help="more arguments for python -m experiments.explore, e.g. '--vae my.pt' (default: none)")
    return parser.parse_args(argv)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear between the nearest ranks (numpy's default)."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def start_explorer(extra: list[str]) -> tuple[subprocess.Popen, str]:
    """`python -m experiments.explore --port 0` in a process of its own, and the address it printed."""
    process = subprocess.Popen([sys.executable, "-m", "experiments.explore", "--port", "0", *extra], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()  # the explorer prints its address once it is listening, or exits
    if not line.startswith("explorer: open "):
        process.wait(timeout=START_TIMEOUT_S)
        raise ProjectError(f"the explorer did not start: {process.stderr.read().strip() or line.strip()}")
    return process, line.split()[2]


def wait_for(driver: Any, script: str, what: str, timeout: float = START_TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.01)
    raise ProjectError(f"timed out after {timeout:g} s waiting for {what}")


def drag(driver: Any, name: str, moves: int, move_ms: int) -> dict[str, float]:
    """`moves` pointer moves over plane `name` along a Lissajous curve; the page's own timings."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    overlay = driver.find_element(By.CSS_SELECTOR, f'.plane[data-model="{name}"] canvas.overlay')
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", overlay)
    half = driver.execute_script("return arguments[0].getBoundingClientRect().width / 2;", overlay) * 0.85
    wait_for(driver, f"return window.explorer.settled('{name}');", f"the {name} plane to settle")
    first = driver.execute_script(f"return [window.explorer.stats.{name}.length, window.explorer.moves.{name}];")
    actions = ActionChains(driver, duration=move_ms)
    for i in range(moves):
        t = 2 * math.pi * i / moves
        actions.move_to_element_with_offset(overlay, round(half * math.sin(3 * t)), round(half * math.sin(2 * t + 0.5)))
    started = driver.execute_script("return performance.now();")
    actions.perform()
    wait_for(driver, f"return window.explorer.settled('{name}');", f"the {name} plane to settle")
    stats, seen = driver.execute_script(f"return [window.explorer.stats.{name}, window.explorer.moves.{name}];")
    drawn = [s for s in stats[first[0]:] if s["moved"] >= started]
    if not drawn:
        raise ProjectError(f"no update was drawn on the {name} plane while dragging")
    latencies = [s["drawn"] - s["moved"] for s in drawn]
    span_s = (max(s["drawn"] for s in drawn) - started) / 1000
    return {"moves_seen": seen - first[1], "updates": len(drawn), "median_ms": statistics.median(latencies),
            "p95_ms": percentile(latencies, 95), "moves_per_s": (seen - first[1]) / span_s,
            "updates_per_s": len(drawn) / span_s, "drag_s": span_s}


def save_screenshot(driver: Any, path: Path) -> Path:
    """Draw from the prior, put the pointer on the VAE's plane, and save the whole page as a PNG."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    driver.execute_script("window.scrollTo(0, 0);")
    driver.find_element(By.ID, "sample").click()
    wait_for(driver, "return window.explorer.sample;", "the prior draw")
    overlay = driver.find_element(By.CSS_SELECTOR, '.plane[data-model="vae"] canvas.overlay')
    ActionChains(driver, duration=50).move_to_element_with_offset(overlay, 40, -60).perform()
    wait_for(driver, "return window.explorer.settled('vae');", "the vae plane to settle")
    height, chrome = driver.execute_script("return [document.documentElement.scrollHeight, "
                                           "window.outerHeight - window.innerHeight];")
    driver.set_window_size(driver.get_window_size()["width"], height + chrome)  # the whole page in view
    png = driver.get_screenshot_as_png()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(png)
    os.replace(temporary, path)  # never a half-written picture
    return path


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    with exit_on_error(), chromium(width=1280, height=1000) as driver:
        started = time.perf_counter()
        process, url = start_explorer(args.explorer_args.split())
        listening_s = time.perf_counter() - started
        try:
            driver.get(url)
            wait_for(driver, "return window.explorer && window.explorer.ready;", "the page to be usable")
            usable_s = time.perf_counter() - started
            results = {name: drag(driver, name, args.moves, args.move_ms) for name in args.planes}
            shot = save_screenshot(driver, args.screenshot) if args.screenshot else None
        finally:
            process.send_signal(signal.SIGINT)
            _, stderr = process.communicate(timeout=START_TIMEOUT_S)
        load = os.getloadavg()[0]
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {load:.1f} (1 min) "
              f"{'- busy: timings are pessimistic' if load > 0.5 * (os.cpu_count() or 1) else ''}".rstrip())
        print(f"browser: Chromium {driver.capabilities.get('browserVersion', '?')} headless")
        print(f"start: listening after {listening_s:.2f} s, page usable after {usable_s:.2f} s "
              f"(goal <= {GOALS['usable_s']:g} s)")
        print(f"{'plane':<6} {'moves':>6} {'moves/s':>8} {'updates':>8} {'updates/s':>10} {'median ms':>10} "
              f"{'p95 ms':>8}")
        for name, r in results.items():
            print(f"{name:<6} {r['moves_seen']:>6} {r['moves_per_s']:>8.1f} {r['updates']:>8} "
                  f"{r['updates_per_s']:>10.1f} {r['median_ms']:>10.1f} {r['p95_ms']:>8.1f}")
        print(f"goals: p95 <= {GOALS['p95_ms']:g} ms, >= {GOALS['updates_per_s']:g} updates/s while dragging "
              f"(at most one update per pointer move: updates/s cannot exceed moves/s)")
        print(f"stopped with Ctrl-C: exit status {process.returncode}, stderr {stderr.strip()!r}")
        if shot:
            print(f"screenshot: {shot}")
    return {"usable_s": usable_s, "listening_s": listening_s, "planes": results}


if __name__ == "__main__":
    main()
