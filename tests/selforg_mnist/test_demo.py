"""The browser demo (`python -m experiments.demo`), driven in a real headless Chromium.

The page's JavaScript CA must compute what `nca.model` computes: the same states for the same fire
masks and noise, and the same majority labels after 100 steps of its own randomness.
"""

from __future__ import annotations

import functools
import http.client
import http.server
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO_ROOT, SHARED_MNIST

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

pytestmark = pytest.mark.slow
if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
    pytest.skip(
        f"needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )
webdriver = pytest.importorskip(
    "selenium.webdriver", reason="needs selenium (pip install selenium)"
)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from selenium.common.exceptions import JavascriptException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

from nca import data  # noqa: E402
from nca.selforg_mnist import adversarial, demo, model, pretrained  # noqa: E402

MODEL = "distill_l2_noise"
ADVERSARY = "distill_adversary_eight"
SURE_DIGITS = (0, 3, 8, 21, 30)  # MNIST test digits the model classifies with full agreement


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_command(*flags: str) -> list[str]:
    return [sys.executable, "-m", "experiments.demo", *flags]


@pytest.fixture(scope="module")
def mnist_folder(mnist_dir) -> Path:
    """The real MNIST if present, else the tiny synthetic one (the page only needs some digits)."""
    return SHARED_MNIST if SHARED_MNIST.is_dir() else mnist_dir


@pytest.fixture(scope="module")
def server(mnist_folder):
    """`python -m experiments.demo` on a free port, default host: its base URL."""
    port = free_port()
    proc = subprocess.Popen(
        demo_command(f"--port={port}", f"--mnist_dir={mnist_folder}"),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = proc.stdout.readline()  # the server prints one line once it listens
        assert line.startswith("serving"), line + proc.stdout.read()
        assert f"http://127.0.0.1:{port}/" in line
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def driver():
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 "--window-size=1000,760"):  # fmt: skip
        options.add_argument(flag)
    profile = Path(tempfile.mkdtemp(prefix="nca-demo-chromium-"))
    options.add_argument(f"--user-data-dir={profile}")
    browser = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    browser.set_script_timeout(60)
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


def open_page(driver, url: str, expect_ready: bool = True) -> None:
    driver.get(url)
    deadline = time.time() + 20
    while time.time() < deadline:
        ready, error = driver.execute_script(
            "const d = window.ncaDemo; return d ? [d.ready, d.error] : [false, null];"
        )
        if ready or error:
            break
        time.sleep(0.05)
    assert bool(ready) == expect_ready, f"page ready={ready}, error={error}"
    if ready:
        driver.execute_script("window.ncaDemo.setRunning(false);")


@pytest.fixture(scope="module")
def page(driver, server):
    """The demo page, loaded and paused: (driver, grid height, grid width)."""
    open_page(driver, server)
    h, w = driver.execute_script("return window.ncaDemo.gridSize();")
    assert h >= 56 and w >= 56
    return driver, h, w


@pytest.fixture(scope="module")
def shipped():
    return pretrained.load(MODEL)


def centred(images: np.ndarray, h: int, w: int) -> np.ndarray:
    """`(B, 28, 28)` grey -> `(B, h, w)`, centred as the page places digits."""
    top, left = (h - images.shape[1]) // 2, (w - images.shape[2]) // 2
    out = np.zeros((len(images), h, w), np.float32)
    out[:, top : top + images.shape[1], left : left + images.shape[2]] = images
    return out


def stroke_digit() -> np.ndarray:
    """A hand-drawn-looking 7 (anti-aliased strokes), 28x28 grey, for when MNIST is absent."""
    yy, xx = np.mgrid[0:28, 0:28] + 0.5

    def segment(p, q, width=1.6):
        p, q = np.array(p, float), np.array(q, float)
        t = np.clip(
            ((xx - p[0]) * (q - p)[0] + (yy - p[1]) * (q - p)[1]) / ((q - p) ** 2).sum(), 0, 1
        )
        d = np.hypot(xx - p[0] - t * (q - p)[0], yy - p[1] - t * (q - p)[1])
        return np.clip(width + 0.5 - d, 0, 1)

    return np.maximum(segment((7, 6), (21, 6)), segment((21, 6), (12, 23))).astype(np.float32)


def real_digits(indices) -> tuple[np.ndarray, np.ndarray]:
    images, labels = data.load_mnist("test", str(SHARED_MNIST))
    return data.to_grey(images[list(indices)]), labels[list(indices)]


def set_grey(driver, grey: np.ndarray) -> None:
    h, w = grey.shape
    driver.execute_script(
        "window.ncaDemo.setGrey(arguments[0], arguments[1], arguments[2]);",
        grey.ravel().tolist(), h, w,
    )  # fmt: skip


def page_state(driver, h: int, w: int) -> np.ndarray:
    flat = driver.execute_script("return Array.from(window.ncaDemo.getState());")
    return np.asarray(flat, np.float32).reshape(h, w, model.NUM_CHANNELS)


def test_server_serves_only_its_files_on_localhost(server):
    port = int(server.rsplit(":", 1)[1].strip("/"))

    def get(path: str, host: str = "127.0.0.1") -> int:
        conn = http.client.HTTPConnection(host, port, timeout=5)
        conn.request("GET", path)  # sent as is: http.client does not normalise ".."
        status = conn.getresponse().status
        conn.close()
        return status

    for path in ("/", "/index.html", "/ca.js", "/style.css", "/params.json", "/digits.json",
                 "/adversary.json", "/ca.js?v=1"):  # fmt: skip
        assert get(path) == 200, path
    for path in ("/../pyproject.toml", "/etc/passwd", "//etc/passwd", "/%2e%2e/pyproject.toml",
                 "/../../../../etc/passwd", "/nca/demo/ca.js", "/__init__.py", "/nca/",
                 "/experiments/demo.py", "/index.html/", "/.git/config"):  # fmt: skip
        assert get(path) == 404, path
    # Bound to 127.0.0.1 only: another loopback address of this machine is refused.
    with pytest.raises(OSError):
        get("/", host="127.0.0.2")


def test_exported_params_are_the_models(server, shipped):
    _, params = shipped
    conn = http.client.HTTPConnection("127.0.0.1", int(server.rsplit(":", 1)[1].strip("/")))
    conn.request("GET", "/params.json")
    doc = json.loads(conn.getresponse().read())
    conn.close()
    assert doc["fire_rate"] == 0.5 and doc["noise_std"] == 0.02
    assert sum(len(layer["data"]) for layer in doc["layers"]) == 22_499
    for layer in doc["layers"]:
        name, leaf = layer["name"].split("/")
        want = np.asarray(params[name][leaf], np.float32)
        assert tuple(layer["shape"]) == want.shape
        np.testing.assert_array_equal(np.asarray(layer["data"], np.float32), want.ravel())


def test_params_shapes_are_checked_before_export(shipped):
    config, params = shipped
    bad = {k: dict(v) for k, v in params.items()}
    bad["hidden"]["kernel"] = np.zeros((80, 81), np.float32)
    with pytest.raises(demo.DemoError, match="hidden/kernel.*shape"):
        demo.params_json(bad, 0.5, 0.02, "bad")
    del bad["hidden"]
    with pytest.raises(demo.DemoError, match="no 'hidden/kernel'"):
        demo.params_json(bad, 0.5, 0.02, "bad")
    # images of the wrong size for the page's digits
    with pytest.raises(demo.DemoError, match=r"expected \(N, 28, 28\)"):
        demo.digits_json(np.zeros((4, 32, 32), np.uint8), np.zeros(4, int))


def test_js_step_matches_jax(page, shipped):
    """stepWith(fire mask, noise) gives model.step's states to 1e-4, and setGrey mutates as
    model.mutate does."""
    driver, h, w = page
    config, params = shipped
    first, second = (real_digits([0, 1])[0] if SHARED_MNIST.is_dir() else
                     np.stack([stroke_digit(), stroke_digit()[:, ::-1]]))  # fmt: skip
    first, second = centred(np.stack([first, second]), h, w)

    @jax.jit
    def jax_step(state, key):
        fire_mask, noise = model.draw_step_randomness(
            key, state.shape, config.model.fire_rate, config.model.noise_std
        )
        ds = model.update(params, model.perceive(params, state)) + noise
        return model.apply_residual(state, ds, fire_mask), fire_mask, noise

    set_grey(driver, np.zeros((h, w), np.float32))  # drops the state of the page's first digit
    set_grey(driver, first)
    state = model.seed_state(first[None])
    np.testing.assert_array_equal(page_state(driver, h, w), np.asarray(state[0]))
    key = jax.random.PRNGKey(0)
    for t in range(8):
        if t == 5:  # the drawing changes: states survive where the new digit is alive
            set_grey(driver, second)
            state = model.mutate(state, second[None])
        state, fire_mask, noise = jax_step(state, jax.random.fold_in(key, t))
        driver.execute_script(
            "window.ncaDemo.stepWith(arguments[0], arguments[1]);",
            np.asarray(fire_mask).ravel().tolist(), np.asarray(noise).ravel().tolist(),
        )  # fmt: skip
        np.testing.assert_allclose(page_state(driver, h, w), np.asarray(state[0]), atol=1e-4)
    alive = np.asarray(model.alive_mask(state[0]))[..., 0]
    assert np.abs(np.asarray(state[0])[alive, 1:]).max() > 0.1  # the steps did change states
    labels = np.asarray(driver.execute_script("return window.ncaDemo.labels();"))
    want = np.where(alive, np.asarray(model.cell_labels(state[0])), -1)
    np.testing.assert_array_equal(labels.reshape(h, w), want)


def drag(driver, canvas, w: int, start: tuple[float, float], moves) -> None:
    """A left-button stroke on the canvas: from `start` (cells from its centre), by each move
    (cells)."""
    cell = canvas.size["width"] / w  # pixels per cell; offsets are from the canvas' centre
    actions = ActionChains(driver, duration=10)
    actions.move_to_element_with_offset(canvas, int(start[0] * cell), int(start[1] * cell))
    actions.click_and_hold()
    for dx, dy in moves:
        for _ in range(5):
            actions.move_by_offset(int(dx * cell / 5), int(dy * cell / 5))
    actions.release().perform()


def adversary_mask(driver, h: int, w: int) -> np.ndarray:
    return np.asarray(driver.execute_script("return window.ncaDemo.adversaryMask();"),
                      bool).reshape(h, w)  # fmt: skip


def canvas_pixels(driver) -> np.ndarray:
    """The grid canvas as `(height, width, 4) uint8`."""
    flat = driver.execute_script(
        "const c = document.getElementById('grid');"
        "return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);"
    )
    size = int(np.sqrt(len(flat) // 4))
    return np.asarray(flat, np.uint8).reshape(size, size, 4)


def test_drawing_with_the_mouse(page):
    driver, h, w = page
    driver.find_element(By.ID, "clear").click()
    assert driver.execute_script("return window.ncaDemo.majorityLabel();") == -1
    # an empty drawing steps without error and stays empty
    driver.execute_script("for (let i = 0; i < 5; i++) window.ncaDemo.step();")
    assert driver.execute_script("return window.ncaDemo.error;") in (None, "")
    assert not np.any(page_state(driver, h, w))
    canvas = driver.find_element(By.ID, "grid")
    drag(driver, canvas, w, (-7, -10), [(14, 0), (-5, 10), (-4, 10)])  # a 7: bar, diagonal
    labels = np.asarray(driver.execute_script("return window.ncaDemo.labels();")).reshape(h, w)
    alive = labels >= 0
    assert 60 < alive.sum() < 0.3 * h * w
    ys, xs = np.nonzero(alive)
    assert ys.min() < h // 2 - 5 and ys.max() > h // 2 + 5 and xs.max() - xs.min() > 10
    driver.execute_script("for (let i = 0; i < 30; i++) window.ncaDemo.step();")
    labels = np.asarray(driver.execute_script("return window.ncaDemo.labels();")).reshape(h, w)
    assert ((labels >= 0) == alive).all()  # drawing decides who is alive, steps never do
    assert set(np.unique(labels[alive])) <= set(range(10))
    majority = driver.execute_script("return window.ncaDemo.majorityLabel();")
    assert majority == np.bincount(labels[alive], minlength=10).argmax()
    legend = driver.find_element(By.CSS_SELECTOR, f"#legend-{majority}")
    assert "top" in legend.get_attribute("class")
    shares = [float(e.text.rstrip("%")) for e in driver.find_elements(By.CSS_SELECTOR, ".share")]
    assert abs(sum(shares) - 100) <= 10  # rounded percentages


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason=f"needs real MNIST in {SHARED_MNIST}")
def test_majority_labels_match_jax(page, shipped):
    """5 test digits, 100 steps of the page's own randomness: the same majority label as the JAX
    model's rollout. The random numbers differ, so these are digits the model is sure of: in 20
    JAX rollouts of 100 steps each, every alive cell of every one of them voted for the true
    label (7, 0, 5, 6, 3); digits like test digit 1 (a 2, voted 0 in 60 % of rollouts) would
    make this test flaky."""
    from nca.selforg_mnist import fast

    driver, h, w = page
    config, params = shipped
    images, true_labels = real_digits(SURE_DIGITS)
    grey = centred(images, h, w)
    rollout = fast.get_rollout("conv")
    final, _ = rollout(
        params, model.seed_state(grey), jax.random.PRNGKey(1), 100,
        config.model.fire_rate, config.model.noise_std,
    )  # fmt: skip
    labels, alive = (
        np.asarray(model.cell_labels(final)),
        np.asarray(model.alive_mask(final))[..., 0],
    )
    jax_majority = [
        int(np.bincount(lab[a], minlength=10).argmax())
        for lab, a in zip(labels, alive, strict=True)
    ]
    page_majority = []
    for digit in grey:
        set_grey(driver, np.zeros((h, w), np.float32))
        set_grey(driver, digit)
        page_majority.append(driver.execute_script(
            "for (let i = 0; i < 100; i++) window.ncaDemo.step();"
            "return window.ncaDemo.majorityLabel();"
        ))  # fmt: skip
    assert page_majority == jax_majority == true_labels.tolist()


def test_js_mixed_step_matches_jax(page, shipped):
    """With adversaries marked, stepWith gives `adversarial.mixed_step`'s states to 1e-4: the
    marked cells follow the adversary's rule, the others the model's."""
    driver, h, w = page
    config, params = shipped
    _, other = pretrained.load(ADVERSARY)
    grey = centred((real_digits([0])[0] if SHARED_MNIST.is_dir() else stroke_digit()[None]), h, w)
    mask = np.random.default_rng(0).random((1, h, w, 1)) < 0.3
    set_grey(driver, np.zeros((h, w), np.float32))
    set_grey(driver, grey[0])
    driver.execute_script("window.ncaDemo.setAdversaries(arguments[0]);", mask.ravel().tolist())
    np.testing.assert_array_equal(adversary_mask(driver, h, w), mask[0, ..., 0])
    state = model.seed_state(grey)
    fire_rate, noise_std = config.model.fire_rate, config.model.noise_std
    step = jax.jit(
        functools.partial(
            adversarial.mixed_step,
            fire_rate=fire_rate,
            noise_std=noise_std,
            other=other,
            mask=jnp.asarray(mask),
        )
    )
    plain = jax.jit(functools.partial(model.step, fire_rate=fire_rate, noise_std=noise_std))
    for t in range(6):
        key = jax.random.PRNGKey(t)
        fire_mask, noise = model.draw_step_randomness(key, state.shape, fire_rate, noise_std)
        state, original = step(params, state, key), state
        driver.execute_script(
            "window.ncaDemo.stepWith(arguments[0], arguments[1]);",
            np.asarray(fire_mask).ravel().tolist(), np.asarray(noise).ravel().tolist(),
        )  # fmt: skip
        np.testing.assert_allclose(page_state(driver, h, w), np.asarray(state[0]), atol=1e-4)
    # the adversary's cells did differ from what the model alone would have done
    alone = plain(params, original, key)
    moved = np.asarray(model.alive_mask(state))[0, ..., 0] & mask[0, ..., 0]
    assert moved.sum() > 10
    assert np.abs(np.asarray(alone - state)[0][moved]).max() > 1e-2
    driver.execute_script("window.ncaDemo.removeAdversaries();")
    assert not adversary_mask(driver, h, w).any()


def test_adversary_pen_outline_and_remove_button(page):
    """The adversaries pen marks the cells under the stroke, which get a black outline and leave
    the votes; the button removes them, and the model's cells keep their states."""
    driver, h, w = page
    driver.find_element(By.ID, "clear").click()
    grey = np.zeros((h, w), np.float32)
    grey[h // 2 - 12 : h // 2 + 12, w // 2 - 3 : w // 2 + 3] = 1.0  # a bar: a 1
    set_grey(driver, grey)
    driver.find_element(By.CSS_SELECTOR, "input[name=mode][value=adversary]").click()
    canvas = driver.find_element(By.ID, "grid")
    drag(driver, canvas, w, (-8, -6), [(16, 0)])  # across the bar's upper half
    mask = adversary_mask(driver, h, w)
    rows, cols = np.nonzero(mask)
    assert 20 < mask.sum() < 200 and rows.max() < h // 2 and cols.max() - cols.min() > 12
    grey_after = page_state(driver, h, w)[..., 0]
    np.testing.assert_array_equal(grey_after, grey)  # the adversaries pen leaves the drawing
    driver.execute_script("window.ncaDemo.step();")  # render
    pixels = canvas_pixels(driver)
    scale = pixels.shape[0] // h
    alive_marked = np.argwhere(mask & (grey > 0.1))
    y, x = alive_marked[len(alive_marked) // 2]
    assert (pixels[y * scale + 1, x * scale + scale // 2, :3] == 0).all()  # the outline: black
    status = driver.find_element(By.ID, "status").text
    assert f"{len(alive_marked)} adversarial" in status
    shares = [float(e.text.rstrip("%")) for e in driver.find_elements(By.CSS_SELECTOR, ".share")]
    assert abs(sum(shares) - 100) <= 10  # the model's cells' votes still sum to 100 %
    before = page_state(driver, h, w)
    driver.find_element(By.ID, "remove").click()
    assert not adversary_mask(driver, h, w).any()
    np.testing.assert_array_equal(page_state(driver, h, w), before)
    driver.execute_script("window.ncaDemo.step();")
    pixels = canvas_pixels(driver)
    assert not (pixels[y * scale + 1, x * scale + scale // 2, :3] == 0).all()
    assert "adversarial" not in driver.find_element(By.ID, "status").text
    driver.find_element(By.CSS_SELECTOR, "input[name=mode][value=draw]").click()


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason=f"needs real MNIST in {SHARED_MNIST}")
def test_scattered_adversaries_turn_digits_into_eights_and_removal_heals(page):
    """The published attack in the page: 10 % adversaries scattered over the grid make the
    model's cells of 5 non-8 digits vote 8 after 200 steps; 200 steps after the removal button,
    most are back to their own label. (In 6 JAX rollouts of these digits each, the majority was
    8 in all 30, and 7, 5 and 3 recovered every time; the 0 never, the 6 in 4 of 6.)"""
    driver, h, w = page
    images, true_labels = real_digits(SURE_DIGITS)
    attacked, healed = [], []
    for digit in centred(images, h, w):
        set_grey(driver, np.zeros((h, w), np.float32))
        set_grey(driver, digit)
        driver.find_element(By.ID, "scatter").click()
        share = adversary_mask(driver, h, w).mean()
        assert 0.07 < share < 0.13
        attacked.append(driver.execute_script(
            "for (let i = 0; i < 200; i++) window.ncaDemo.step();"
            "return window.ncaDemo.majorityLabel();"
        ))  # fmt: skip
        driver.find_element(By.ID, "remove").click()
        healed.append(driver.execute_script(
            "for (let i = 0; i < 200; i++) window.ncaDemo.step();"
            "return window.ncaDemo.majorityLabel();"
        ))  # fmt: skip
    assert attacked == [8] * len(SURE_DIGITS)
    assert sum(a == b for a, b in zip(healed, true_labels.tolist(), strict=True)) >= 3, healed


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """`--export_only` without MNIST: the site, with no digits.json."""
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        demo_command(f"--export_only={out}", f"--mnist_dir={out / 'no_mnist_here'}",
                     "--adversary=none"),
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "no random digits" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == sorted([*demo.STATIC_FILES, demo.PARAMS_FILE])
    return out


@pytest.fixture(scope="module")
def static_server(exported):
    """The exported folder served by the standard library (as a static host would)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(exported))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def test_static_export_without_digits(driver, static_server):
    open_page(driver, static_server)
    assert driver.find_element(By.ID, "random").get_attribute("disabled") is not None
    assert not driver.execute_script("return window.ncaDemo.hasAdversary();")
    for css in ("#scatter", "#remove", "input[name=mode][value=adversary]"):
        assert driver.find_element(By.CSS_SELECTOR, css).get_attribute("disabled") is not None
    with pytest.raises(JavascriptException, match="no adversary.json was served"):
        driver.execute_script("window.ncaDemo.scatterAdversaries(0.1);")
    assert not driver.find_element(By.ID, "error").is_displayed()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda text: text[: len(text) // 2], "not valid JSON"),
        (lambda text: text.replace('"shape":[80,80]', '"shape":[80,40]'), "hidden/kernel"),
        (lambda text: text.replace('"name":"output/bias"', '"name":"output/b"'), "output/bias"),
    ],
)
def test_malformed_params_show_an_error(driver, static_server, exported, damage, message):
    params = exported / demo.PARAMS_FILE
    good = params.read_text()
    try:
        params.write_text(damage(good))
        open_page(driver, static_server, expect_ready=False)
        error = driver.execute_script("return window.ncaDemo.error;")
        assert message in error
        box = driver.find_element(By.ID, "error")
        assert box.is_displayed() and message in box.text
    finally:
        params.write_text(good)
