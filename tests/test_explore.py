"""The latent explorer (experiments/explore): its input rules, its static files, its command line,
and the page itself in headless Chromium, whose images must be the models' own decodings.

The browser test is skipped when Chromium or Selenium is missing, except under CI (the CI
environment variable set, as .ci/run does), where that is a failure.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from common.checkpoint import load_for_inference
from experiments.explore import app
from experiments.explore.browser import BrowserUnavailable, chromium
from experiments.explore.models import load_explorer
from experiments.explore.server import MAX_ABS_Z, BadRequest, ExplorerServer, bind, parse_decode, parse_seed, parse_z

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "results" / "models"
CHECKPOINTS = {name: SHIPPED / f"{name}.pt" for name in ("ae", "vae", "cvae")}
LATENT = {"ae": 2, "vae": 2, "cvae": 2}
CONDITIONAL = {"ae": False, "vae": False, "cvae": True}


# ---- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(one_thread) -> Iterator[ExplorerServer]:
    """The explorer on the shipped models, serving from a thread on a free port."""
    served = bind("127.0.0.1", 0)
    served.attach(load_explorer(CHECKPOINTS["ae"], CHECKPOINTS["vae"], CHECKPOINTS["cvae"]))
    thread = threading.Thread(target=served.serve_forever, daemon=True)
    thread.start()
    yield served
    served.shutdown()
    served.server_close()


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.nn.Module]:
    """The same checkpoints loaded by the test itself: what the page must show."""
    return {name: load_for_inference(path, "cpu")[0] for name, path in CHECKPOINTS.items()}


def request(server: ExplorerServer, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """One request with `path` sent exactly as given (http.client neither normalises nor quotes it)."""
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def assert_one_line_error(status: int, headers: dict[str, str], body: bytes, fragment: str = "") -> str:
    assert 400 <= status < 500, (status, body)
    assert headers["Content-Type"] == "application/json"
    text = body.decode()
    assert text.count("\n") == 1 and text.endswith("\n"), text
    reason = json.loads(text)
    assert list(reason) == ["error"] and reason["error"], reason
    assert fragment.lower() in reason["error"].lower(), reason
    return reason["error"]


def assert_still_serving(server: ExplorerServer) -> None:
    status, headers, body = request(server, "/api/decode?model=vae&z=0.5,-1")
    assert status == 200 and headers["Content-Type"] == "image/png" and body.startswith(b"\x89PNG")


# ---- validation as pure functions -----------------------------------------------------------------

@pytest.mark.parametrize("text, fragment", [
    (None, "missing z"), ("", "missing z"), ("  ", "missing z"),
    ("nan,0", "finite"), ("0,NaN", "finite"), ("inf,0", "finite"), ("-Infinity,1", "finite"),
    ("1e999,0", "finite"), ("1001,0", "out of range"), ("0,-1e4", "out of range"),
    ("a,b", "not a number"), ("1,,", "coordinates"), ("1;2", "1 coordinate;"), ("0x1,2", "not a number"),
    ("1", "latent size is 2"), ("1,2,3", "latent size is 2"),
])
def test_parse_z_refuses(text, fragment):
    with pytest.raises(BadRequest, match=fragment) as info:
        parse_z(text, 2)
    assert info.value.status == 400 and "\n" not in str(info.value)


def test_parse_z_accepts_finite_numbers_within_the_limit():
    assert parse_z("1.5,-2", 2) == [1.5, -2.0]
    assert parse_z(f"{MAX_ABS_Z:g},-{MAX_ABS_Z:g}", 2) == [1000.0, -1000.0]
    assert parse_z(" 3e-2 ,+4", 2) == [0.03, 4.0]


@pytest.mark.parametrize("query, fragment", [
    ("z=0,0", "model missing"), ("model=gan&z=0,0", "'gan' is not one of"),
    ("model=ae&z=0,0&digit=3", "not conditional"), ("model=cvae&z=0,0&digit=10", "digit '10'"),
    ("model=cvae&z=0,0&digit=-1", "digit '-1'"), ("model=cvae&z=0,0&digit=x", "digit 'x'"),
    ("model=ae&z=0,0&colour=red", "unknown parameter 'colour'"), ("model=ae&z=0,0&z=1,1", "given twice"),
    ("model=ae&" + "&".join(f"p{i}=1" for i in range(20)), "malformed query"),
])
def test_parse_decode_refuses(query, fragment):
    with pytest.raises(BadRequest, match=fragment):
        parse_decode(query, LATENT, CONDITIONAL)


def test_parse_decode_and_seed_accept():
    assert parse_decode("model=cvae&z=1,2&digit=7", LATENT, CONDITIONAL).digit == 7
    assert parse_decode("model=cvae&z=1,2&digit=all", LATENT, CONDITIONAL).digit is None
    assert parse_decode("model=ae&z=1,2", LATENT, CONDITIONAL).z == [1.0, 2.0]
    assert parse_seed("") is None and parse_seed("seed=0") == 0 and parse_seed("seed=2147483647") == 2**31 - 1
    for bad in ("seed=-1", "seed=x", "seed=2147483648", "seed=1.5", "seed=", "seed=١٢"):
        with pytest.raises(BadRequest, match="seed"):
            parse_seed(bad)


# ---- the server: bad input, paths, methods --------------------------------------------------------

@pytest.mark.parametrize("path, fragment", [
    ("/api/decode?model=ae&z=nan,0", "finite"), ("/api/decode?model=vae&z=0,inf", "finite"),
    ("/api/decode?model=vae&z=1e999,0", "finite"), ("/api/decode?model=ae&z=1e300,0", "out of range"),
    ("/api/decode?model=ae&z=-1001,0", "out of range"), ("/api/decode?model=ae", "missing z"),
    ("/api/decode?model=ae&z=", "missing z"), ("/api/decode?model=ae&z=one,two", "not a number"),
    ("/api/decode?model=ae&z=1,2,3", "latent size is 2"), ("/api/decode?model=vae&z=1", "latent size is 2"),
    ("/api/decode?model=flow&z=0,0", "not one of ae, vae, cvae"), ("/api/decode?z=0,0", "model missing"),
    ("/api/decode?model=cvae&z=0,0&digit=11", "digit '11'"), ("/api/decode?model=ae&z=0,0&digit=1", "not conditional"),
    ("/api/decode?model=ae&z=0,0&x=1", "unknown parameter"), ("/api/decode?model=ae&z=%ff,0", "malformed query"),
    ("/api/sample?seed=-3", "seed"), ("/api/sample?seed=abc", "seed"), ("/api/sample?n=1000000", "unknown parameter"),
    ("/api/nothing", "no such page"), ("/favicon.ico", "no such page"),
])
def test_bad_requests_get_a_4xx_and_a_one_line_json_reason(server, path, fragment):
    assert_one_line_error(*request(server, path), fragment)
    assert_still_serving(server)


@pytest.mark.parametrize("path", [
    "/../README.md", "/%2e%2e/README.md", "/%2E%2E/%2E%2E/etc/passwd", "/..%2f..%2fetc%2fpasswd",
    "/static/../../../../etc/passwd", "/app.js/../../README.md", "/%2e%2e%2fapp.py", "//etc/passwd",
    "/etc/passwd", "/%2fetc%2fpasswd", str(ROOT / "README.md"), "/static/app.js", "/models.py",
    "/..\\..\\README.md", "/%5c..%5cREADME.md", "/index.html%00.js", "/./app.js",
    "http://127.0.0.1/../../etc/passwd",
])
def test_no_path_outside_the_static_files_is_served(server, path):
    status, headers, body = request(server, path)
    assert status == 404, (path, status)
    assert_one_line_error(status, headers, body, "no such page")
    assert b"root:" not in body and b"autoencoder" not in body.lower()


def test_the_static_files_are_served_with_their_types_and_a_strict_policy(server):
    for path, content_type, marker in (("/", "text/html", b"<!doctype html>"), ("/index.html", "text/html", b"<html"),
                                       ("/app.js", "text/javascript", b"LiveDecoder"),
                                       ("/style.css", "text/css", b".plane")):
        status, headers, body = request(server, path)
        assert status == 200 and headers["Content-Type"].startswith(content_type) and marker in body
        assert b"http:" not in body and b"https:" not in body  # nothing is fetched from elsewhere
    assert "default-src 'none'" in request(server, "/")[1]["Content-Security-Policy"]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "HEAD"])
def test_other_methods_are_refused(server, method):
    status, headers, body = request(server, "/api/info", method)
    assert status == 405 and headers["Allow"] == "GET"
    if method != "HEAD":
        assert_one_line_error(status, headers, body, "use GET")
    assert_still_serving(server)


@pytest.mark.parametrize("raw, status", [
    (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", b"414"),  # a request line too long
    (b"GET / HTTP/1.1\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n", b"431"),  # a header too long
])
def test_http_servers_own_errors_are_one_line_json_too(server, raw, status):
    with socket.create_connection(server.server_address[:2], timeout=30) as sock:
        sock.sendall(raw)
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 " + status), head[:100]
    assert body.count(b"\n") == 1 and json.loads(body)["error"]
    assert_still_serving(server)


def test_the_api_answers_what_the_models_decode(server, reference):
    status, _, body = request(server, "/api/decode?model=cvae&z=0.25,-0.5&digit=all")
    assert status == 200
    strip = decode_png(body)
    assert strip.shape == (28, 280)
    want = model_decode(reference["cvae"], [[0.25, -0.5]] * 10, torch.arange(10))[:, 0]
    assert_pixels_match(strip.reshape(28, 10, 28).transpose(1, 0, 2), want)
    info = json.loads(request(server, "/api/info")[2])
    assert info["class_names"] == [str(d) for d in range(10)]
    ae = info["models"]["ae"]
    assert len(ae["codes"]) == len(ae["labels"]) == 2000 and ae["box"][0] < ae["box"][2]
    assert info["models"]["cvae"]["codes"] is None and info["models"]["cvae"]["conditional"]


@torch.inference_mode()
def model_decode(model: torch.nn.Module, z: list[list[float]], y: torch.Tensor | None = None) -> torch.Tensor:
    """What the test expects: the model's own decode(z) of these codes (float32, as the page sent them)."""
    return model.decode(torch.tensor(z, dtype=torch.float32), y)


def decode_png(body: bytes) -> np.ndarray:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(body)) as image:
        assert image.mode == "L"
        return np.asarray(image)


def assert_pixels_match(shown: np.ndarray | list[int], want: torch.Tensor) -> None:
    """Pixels shown (0..255) against the model's intensities in [0, 1]: equal up to rounding to 1/255."""
    shown = np.asarray(shown, dtype=np.float64).reshape(want.shape) / 255
    assert np.abs(shown - want.double().numpy()).max() <= 1 / 255 + 1e-6


# ---- the command line ------------------------------------------------------------------------------

def test_a_taken_port_is_a_one_line_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as info:
            app.main(["--port", str(port)])
    message = str(info.value.code)
    assert message == (f"error: port {port} on 127.0.0.1 is already in use (another explorer?); choose another "
                       f"with --port, or --port 0 for any free one")


@pytest.mark.parametrize("flag, name, fragment", [
    ("--ae", "vae", "not an autoencoder"), ("--vae", "ae", "not a variational"),
    ("--vae", "cvae", "holds a conditional VAE; --vae needs a VAE that is not conditional"),
    ("--cvae", "vae", "holds an unconditional VAE; --cvae needs a conditional VAE"),
])
def test_a_checkpoint_of_the_wrong_kind_is_refused_in_one_line(flag, name, fragment):
    with pytest.raises(SystemExit) as info:
        app.main([flag, str(CHECKPOINTS[name]), "--port", "0"])
    message = str(info.value.code)
    assert message.startswith(f"error: {flag}: ") and fragment in message and "\n" not in message


def run_explorer(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "experiments.explore", "--port", "0", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_an_unreadable_checkpoint_stops_it_before_serving(tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"PK\x03\x04 not really a checkpoint")
    process = run_explorer("--ae", str(broken))
    out, err = process.communicate(timeout=120)
    assert process.returncode == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"error: --ae: {broken} ")


def test_the_command_serves_and_stops_on_ctrl_c_with_one_line():
    process = run_explorer()
    try:
        line = process.stdout.readline()
        assert line.startswith("explorer: open http://127.0.0.1:"), line
        host, port = line.split()[2].removeprefix("http://").rstrip("/").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        connection.request("GET", "/api/decode?model=ae&z=-10,5")
        response = connection.getresponse()
        assert response.status == 200 and response.read().startswith(b"\x89PNG")
        connection.close()
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGINT
    assert err == "interrupted by SIGINT\n"


# ---- the page in a real browser --------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        with chromium(width=1280, height=1700) as driver:
            yield driver
    except BrowserUnavailable as err:
        if os.environ.get("CI"):
            pytest.fail(f"the browser test must run under CI: {err}")
        pytest.skip(str(err))


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


READ_CANVAS = "return Array.from(arguments[0].getContext('2d').getImageData(0, 0, 28, 28).data);"
READ_IMAGE = """const img = arguments[0], canvas = document.createElement('canvas');
canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
canvas.getContext('2d').drawImage(img, 0, 0);
const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
return [canvas.width, canvas.height, Array.from(data)];"""


def grey(rgba: list[int]) -> np.ndarray:
    """RGBA bytes of a grey opaque image -> its grey levels."""
    pixels = np.asarray(rgba).reshape(-1, 4)
    assert (pixels[:, 3] == 255).all() and (pixels[:, 0] == pixels[:, 1]).all() and (pixels[:, 1] == pixels[:, 2]).all()
    return pixels[:, 0]


def point_at(driver: Any, name: str, fx: float, fy: float, touch: bool = False) -> tuple[list[float], list[float]]:
    """Move the real pointer to (fx, fy) of plane `name` (fractions of its half-size from the centre,
    y down), or with `touch` drag a finger there from the plane's centre, wait for the page to show
    that point's digit, and return the z it decoded and the z this position is, worked out here from
    the plane's view and size."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions import interaction
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput
    from selenium.webdriver.common.by import By

    overlay = driver.find_element(By.CSS_SELECTOR, f'.plane[data-model="{name}"] canvas.overlay')
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", overlay)
    rect = driver.execute_script("return arguments[0].getBoundingClientRect().toJSON();", overlay)
    before = driver.execute_script("return window.explorer.shown(arguments[0]);", name)
    dx, dy = round(fx * rect["width"] / 2), round(fy * rect["height"] / 2)
    if touch:
        finger = ActionBuilder(driver, mouse=PointerInput(interaction.POINTER_TOUCH, "finger"), duration=20)
        finger.pointer_action.move_to(overlay, 0, 0).pointer_down().move_to(overlay, dx // 2, dy // 2) \
            .move_to(overlay, dx, dy).pointer_up()
        finger.perform()
    else:
        ActionChains(driver, duration=20).move_to_element_with_offset(overlay, dx, dy).perform()
    shown = wait_for(lambda: driver.execute_script(
        "const n = arguments[0], s = window.explorer.shown(n);"
        "return window.explorer.settled(n) && s !== null && s.moved !== arguments[1] ? s : null;",
        name, before["moved"]), f"the {name} plane to show the new point")
    assert driver.execute_script("return window.explorer.pointerType;") == ("touch" if touch else "mouse")
    x0, x1, y0, y1 = driver.execute_script("return window.explorer.info.models[arguments[0]].view;", name)
    expected = [x0 + (0.5 + dx / rect["width"]) * (x1 - x0), y1 - (0.5 + dy / rect["height"]) * (y1 - y0)]
    return [float(v) for v in shown["text"].split(",")], expected


def test_the_page_shows_each_models_own_decodings(browser, server, reference):
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get(server.url)
    wait_for(lambda: driver.execute_script("return window.explorer && window.explorer.ready;"), "the page")
    assert not driver.find_element(By.ID, "status").get_attribute("class")  # no error on the page

    # 1. two points of each plane, and a third reached by dragging a finger: the shown digit is the
    # model's decode(z) at the pointer's z
    for name in ("ae", "vae"):
        canvas = driver.find_element(By.CSS_SELECTOR, f'canvas.digit[data-model="{name}"]')
        pixel = None
        for fx, fy, touch in ((-0.4, 0.3, False), (0.35, -0.45, False), (0.6, 0.1, True)):
            z, expected = point_at(driver, name, fx, fy, touch)
            view = driver.execute_script("return window.explorer.info.models[arguments[0]].view;", name)
            per_pixel = (view[1] - view[0]) / driver.execute_script(
                "return window.explorer.planes[arguments[0]].width;", name)
            assert np.allclose(z, expected, atol=1.5 * per_pixel), (name, z, expected)
            shown = grey(driver.execute_script(READ_CANVAS, canvas))
            assert_pixels_match(shown, model_decode(reference[name], [z]))
            assert [float(v) for v in canvas.get_attribute("data-z").split(",")] == z
            coords = driver.find_element(By.CSS_SELECTOR, f'output.coords[data-model="{name}"]').text
            assert coords.startswith("z = (") and f"{z[0]:.{1 if name == 'ae' else 2}f}" in coords
            assert pixel is None or not np.array_equal(pixel, shown)  # another point, another digit
            pixel = shown

    # 2. the prior draw: three 4 x 4 grids, each the decodings of the codes the page marked
    driver.find_element(By.ID, "sample").click()
    sample = wait_for(lambda: driver.execute_script("return window.explorer.sample;"), "the prior draw")
    for key, name in (("ae", "ae"), ("vae", "vae"), ("gmm", "ae")):
        width, height, rgba = driver.execute_script(READ_IMAGE, driver.find_element(By.ID, f"grid-{key}"))
        assert (width, height) == (112, 112)
        z = sample["grids"][key]["z"]
        assert np.shape(z) == (16, 2)
        want = model_decode(reference[name], z)[:, 0]  # (16, 28, 28), shown as 4 rows of 4
        grid = grey(rgba).reshape(4, 28, 4, 28).transpose(0, 2, 1, 3).reshape(16, 28, 28)
        assert_pixels_match(grid, want)
    assert sample["grids"]["ae"]["z"] == sample["grids"]["vae"]["z"]  # the same draws for both
    marks = driver.execute_script("return window.explorer.planes.vae.marks[0].points.length;")
    assert marks == 16

    # 3. the conditional VAE: ten digits in the style under the pointer; the buttons pick the large one
    for fx, fy in ((-0.5, -0.3), (0.3, 0.2)):
        z, expected = point_at(driver, "cvae", fx, fy)
        assert np.allclose(z, expected, atol=0.05), (z, expected)
        want = model_decode(reference["cvae"], [z] * 10, torch.arange(10))
        for digit, canvas in enumerate(driver.find_elements(By.CSS_SELECTOR, "#row canvas")):
            assert_pixels_match(grey(driver.execute_script(READ_CANVAS, canvas)), want[digit])
    big = driver.find_element(By.CSS_SELECTOR, 'canvas.digit[data-model="cvae"]')
    assert_pixels_match(grey(driver.execute_script(READ_CANVAS, big)), want[0])  # 0 is picked at the start
    for digit in (7, 2):
        driver.find_element(By.CSS_SELECTOR, f'#digit-buttons button[data-digit="{digit}"]').click()
        assert_pixels_match(grey(driver.execute_script(READ_CANVAS, big)), want[digit])
        picked = [c.get_attribute("data-digit") for c in driver.find_elements(By.CSS_SELECTOR, "#row canvas.picked")]
        assert picked == [str(digit)]
        assert driver.find_element(By.CSS_SELECTOR, f'#digit-buttons button[data-digit="{digit}"]'
                                   ).get_attribute("aria-pressed") == "true"
    severe = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert not severe, severe
