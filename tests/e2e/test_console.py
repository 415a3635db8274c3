"""The web console in a real browser: Playwright drives Debian's Chromium (headless, `/usr/bin/chromium`,
installed by `make test`) against a real `lawm serve` process of the tiny exported model (with a
controller), API keys on. Each view is used as a person would, its figures are checked against the
API's own answers, a screenshot of it is saved (to docs/img/console-*.png, used in the README, when
LAWM_UPDATE_SCREENSHOTS=1; otherwise to a temporary folder, so a test run leaves the tree clean), and no
test may leave an error in the browser's console (the one exception: the browser's own log line for
an HTTP error status the test provoked on purpose, e.g. the 422 of an invalid upload).
"""

from __future__ import annotations

import base64
import io
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest

from tests.e2e.test_serve import lawm_serve
from tests.service_fixtures import API_KEY, TINY_NAME, TINY_VERSION
from training.data.samples import sample_clips
from training.envs.episodes import record_episode

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra: make setup")

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # a server process and a browser: ~30 s in all on 2 cores

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "docs" / "img" if os.environ.get("LAWM_UPDATE_SCREENSHOTS") == "1" else Path(tempfile.gettempdir()) / "lawm-console"
CHROMIUM = Path(os.environ.get("LAWM_CHROMIUM", "/usr/bin/chromium"))
CARPHONE = sample_clips()["carphone_pristine"]
AUTH = {"Authorization": f"Bearer {API_KEY}"}
WAIT_MS = 60_000  # upper bound for the server's answers on a busy 2-core machine, never a timing check
HTTP_ERROR_LOG = re.compile(r"^Failed to load resource: the server responded with a status of (\d{3})\b")


@pytest.fixture(scope="module")
def server(tiny_model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    args = ["--repo", str(tiny_model_repo), "--model", TINY_NAME, "--version", str(TINY_VERSION),
            "--runtime", "onnxruntime", "--api-key", API_KEY]
    with lawm_serve(args, {}, tmp_path_factory.mktemp("console") / "serve.log") as (_, url):
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.is_file():
        message = f"Chromium not found at {CHROMIUM}: `make chromium` installs Debian's (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield browser
        browser.close()


class BrowserLog:
    """Everything the page logged as an error, every URL it requested, and the HTTP error statuses a
    test provokes on purpose (the browser logs each as "Failed to load resource: ... status of N")."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.urls: list[str] = []
        self.expected: set[int] = set()

    def expect_status(self, status: int) -> None:
        self.expected.add(status)

    def unexpected(self) -> list[str]:
        out = []
        for text in self.errors:
            m = HTTP_ERROR_LOG.match(text)
            if m is None or int(m.group(1)) not in self.expected:
                out.append(text)
        return out


@pytest.fixture
def page(browser: Any, server: str) -> Iterator[tuple[Any, BrowserLog]]:
    """A fresh tab (its own sessionStorage) on the console; asserts afterwards that it logged no error
    and that the API key never appeared in a URL."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, base_url=server)
    tab = context.new_page()
    log = BrowserLog()
    tab.on("console", lambda m: log.errors.append(f"{m.text} [{m.location.get('url')}]") if m.type == "error" else None)
    tab.on("pageerror", lambda e: log.errors.append(f"uncaught: {e}"))
    tab.on("request", lambda r: log.urls.append(r.url))
    yield tab, log
    context.close()
    assert log.unexpected() == [], "the browser logged errors"
    assert not [u for u in log.urls if API_KEY in u], "the API key leaked into a URL"


def open_console(tab: Any, view: str) -> None:
    """Open the console on `view` in a tab whose session already holds the key (typed earlier in this
    tab: test_upload_an_mp4_and_see_its_latent_actions types it), so no request goes out without it."""
    tab.goto("/static/favicon.svg")  # the console's origin, to reach its sessionStorage
    tab.evaluate("(key) => sessionStorage.setItem('lawm.apiKey', key)", API_KEY)
    tab.goto(f"/#{view}")
    assert tab.input_value("#apikey") == API_KEY


def shot(tab: Any, name: str, settle_ms: int = 0) -> None:
    """Save SHOTS/console-NAME.png; `settle_ms` lets a video player's loading animation fade first
    (cosmetic: nothing is asserted on time)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    tab.wait_for_timeout(settle_ms)
    tab.screenshot(path=str(SHOTS / f"console-{name}.png"), full_page=True)


def upload_latents(server: str, name: str, data: bytes, fresh: bool = False) -> httpx.Response:
    headers = {**AUTH, "Cache-Control": "no-cache"} if fresh else AUTH  # no-cache: computed again, not cached
    return httpx.post(server + "/v1/latent-actions", headers=headers, timeout=60, files={"file": (name, data, "video/mp4")})


# ----------------------------------------------------------------------------- the console's own routes
def test_page_is_open_but_its_data_needs_the_key(server: str) -> None:
    page = httpx.get(server + "/")
    assert page.status_code == 200 and '<script type="module" src="/static/js/app.js">' in page.text
    for asset in ("/static/js/app.js", "/static/console.css", "/static/js/views/planner.js"):
        assert httpx.get(server + asset).status_code == 200, asset
    for data in ("/console/samples", "/console/episodes", "/console/samples/carphone_pristine", "/v1/models"):
        assert httpx.get(server + data).status_code == 401, data
    assert httpx.get(server + "/v1/models", headers=AUTH).status_code == 200  # the API is where it was
    assert httpx.get(server + "/metrics").status_code == 200


def test_sample_clips_are_served_as_shipped(server: str) -> None:
    listed = httpx.get(server + "/console/samples", headers=AUTH).json()["samples"]
    by_name = {s["name"]: s for s in listed}
    assert set(by_name) == set(sample_clips())
    carphone = by_name["carphone_pristine"]
    assert (carphone["width"], carphone["height"], carphone["codec"]) == (176, 144, "h264")
    body = httpx.get(server + carphone["url"], headers=AUTH)
    assert body.headers["content-type"] == "video/mp4" and body.content == CARPHONE.read_bytes()
    ranged = httpx.get(server + carphone["url"], headers={**AUTH, "Range": "bytes=100-199"})  # players seek
    assert ranged.status_code == 206 and ranged.content == CARPHONE.read_bytes()[100:200]
    missing = httpx.get(server + "/console/samples/nope", headers=AUTH)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_sample"


def test_episodes_are_the_recorded_ones_at_the_model_size(server: str) -> None:
    meta = httpx.get(server + "/console/episodes", headers=AUTH).json()
    assert meta["image_size"] == 32 and meta["model_action_dim"] == 3
    assert {e["name"]: e["action_dim"] for e in meta["environments"]} == {"navigation": 3, "manipulation": 4}
    ep = httpx.get(server + "/console/episodes/navigation/5", headers=AUTH).json()
    truth = record_episode("navigation", 5, ep["steps"], image_size=32)
    np.testing.assert_array_equal(np.asarray(ep["actions"], dtype=np.float32), truth.actions)
    np.testing.assert_allclose(ep["poses"], truth.action_poses)
    assert len(ep["frames"]) == ep["steps"] + 1
    for k in (0, ep["horizon"]):  # PNG is lossless: the very frames the planner evaluation uses
        png = base64.b64decode(ep["frames"][k].split(",", 1)[1])
        with av.open(io.BytesIO(png)) as container:
            frame = next(container.decode(video=0)).to_ndarray(format="rgb24")
        np.testing.assert_array_equal(frame, truth.action_frames[k])
    bad = httpx.get(server + "/console/episodes/kitchen/1", headers=AUTH)
    assert bad.status_code == 404 and "navigation" in bad.json()["error"]["hint"]


# ----------------------------------------------------------------------------- the views, in Chromium
def test_upload_an_mp4_and_see_its_latent_actions(page: tuple[Any, BrowserLog], server: str) -> None:
    tab, log = page
    log.expect_status(401)
    tab.goto("/#latents")  # no key yet: the API's 401 is shown as a readable message
    error = tab.locator("#latents-error")
    error.wait_for(state="visible")
    assert "missing API key" in error.inner_text() and "API key field" in error.inner_text()

    tab.fill("#apikey", API_KEY)
    tab.click("#apikey-save")
    error.wait_for(state="hidden")
    assert tab.evaluate("sessionStorage.getItem('lawm.apiKey')") == API_KEY
    assert tab.evaluate("localStorage.length") == 0

    tab.set_input_files("#latents-upload", str(CARPHONE))
    tab.wait_for_selector("#latents-norm circle.pt", timeout=WAIT_MS)
    expected = upload_latents(server, CARPHONE.name, CARPHONE.read_bytes()).json()  # the same call, outside
    steps = expected["steps"]
    assert steps == 7  # 4 s at 4 fps: 16 frames, 8 states
    assert tab.locator("#latents-norm circle.pt").count() == steps
    assert tab.locator("#latents-pca circle.pca-pt").count() == steps
    assert tab.get_attribute("#latents-summary", "data-steps") == str(steps)
    norms = [float(t.split(": ")[1]) for t in tab.locator("#latents-norm circle.pt title").all_text_contents()]
    np.testing.assert_allclose(norms, np.linalg.norm(expected["latents"], axis=1), rtol=1e-3)

    tab.hover("#latents-norm circle.pt >> nth=3")  # the two states latent 3 lies between
    tab.wait_for_function("document.getElementById('latents-to-cap').textContent.startsWith('state 4')")
    assert tab.inner_text("#latents-from-cap") == f"state 3 · {expected['start_s'][3]:.2f} s"
    tab.wait_for_function("""() => {  // the frame under the cursor is drawn (not a blank canvas)
        const c = document.getElementById('latents-to');
        const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        return px.some((v, i) => i % 4 !== 3 && v > 0);
    }""")
    tab.wait_for_function("document.getElementById('latents-video').readyState >= 3")  # the upload plays here
    shot(tab, "latents", settle_ms=2000)


def test_pca_in_the_browser_matches_numpy(page: tuple[Any, BrowserLog]) -> None:
    tab, _ = page
    open_console(tab, "model")
    rng = np.random.default_rng(0)
    cases = [rng.normal(size=(7, 16)), rng.normal(size=(30, 128)) * rng.uniform(0.1, 3, size=128),
             rng.normal(size=(2, 5)), np.tile(rng.normal(size=(1, 8)), (4, 1)), rng.normal(size=(1, 4))]
    for x in cases:
        got = tab.evaluate("async (rows) => (await import('/static/js/pca.js')).pca(rows, 2)", x.tolist())
        centred = x - x.mean(0)
        u, s, _ = np.linalg.svd(centred, full_matrices=False)
        scores = u * s  # [n, min(n, d)]
        total = float((s**2).sum())
        for c in range(2):
            want = scores[:, c] if c < scores.shape[1] and s[c] > 1e-9 * max(1.0, s[0]) else np.zeros(len(x))
            have = np.asarray(got["projection"])[:, c]
            sign = 1.0 if np.dot(want, have) >= 0 else -1.0  # components are defined up to sign
            np.testing.assert_allclose(have, sign * want, atol=1e-8 * max(1.0, float(np.abs(want).max())))
            ratio = s[c] ** 2 / total if total > 0 and c < len(s) else 0.0
            assert got["explained"][c] == pytest.approx(ratio, abs=1e-9)
        np.testing.assert_allclose(got["mean"], x.mean(0), atol=1e-12)


METRICS_THEN = """# HELP lawm_requests_total HTTP requests answered.
# TYPE lawm_requests_total counter
lawm_requests_total{endpoint="/v1/plan",method="POST",status="200"} 10
lawm_requests_total{endpoint="/metrics",method="GET",status="200"} 3
lawm_request_duration_seconds_bucket{endpoint="/v1/plan",le="0.1"} 2
lawm_request_duration_seconds_bucket{endpoint="/v1/plan",le="0.5"} 5
lawm_request_duration_seconds_bucket{endpoint="/v1/plan",le="1.0"} 9
lawm_request_duration_seconds_bucket{endpoint="/v1/plan",le="+Inf"} 10
lawm_request_duration_seconds_bucket{endpoint="/metrics",le="0.1"} 3
lawm_request_duration_seconds_bucket{endpoint="/metrics",le="0.5"} 3
lawm_request_duration_seconds_bucket{endpoint="/metrics",le="1.0"} 3
lawm_request_duration_seconds_bucket{endpoint="/metrics",le="+Inf"} 3
lawm_queue_depth{component="encoder"} 0
lawm_queue_depth{component="we \\"quote\\""} 0
lawm_inflight_requests 1
"""


def test_metrics_figures_in_the_browser(page: tuple[Any, BrowserLog]) -> None:
    """The model panel's parser and histogram_quantile, on a known scrape pair: 30 more plan requests in
    10 s, all between 0.1 and 0.5 s, while /metrics' own scrapes (left out) grow too."""
    tab, _ = page
    open_console(tab, "model")
    now = (METRICS_THEN.replace("} 10\n", "} 40\n").replace('le="0.5"} 5', 'le="0.5"} 35')
           .replace('le="1.0"} 9', 'le="1.0"} 39').replace('le="+Inf"} 10', 'le="+Inf"} 40')
           .replace('"/metrics",method="GET",status="200"} 3', '"/metrics",method="GET",status="200"} 9')
           .replace('queue_depth{component="encoder"} 0', 'queue_depth{component="encoder"} 12'))
    got = tab.evaluate("""async ([then, now]) => {
        const m = await import('/static/js/prom.js');
        const a = {t: 100, samples: m.parseMetrics(then)}, b = {t: 110, samples: m.parseMetrics(now)};
        const plan = (l) => l.endpoint === '/v1/plan';
        const bk = m.buckets(a.samples, 'lawm_request_duration_seconds', plan);
        return {live: m.liveFigures(b, a), first: m.liveFigures(a, null),
                q: [0.3, 0.5, 0.9, 0.95].map((q) => m.quantile(q, bk)),
                labels: a.samples.filter((s) => s.name === 'lawm_queue_depth').map((s) => s.labels.component)};
    }""", [METRICS_THEN, now])
    # histogram_quantile over buckets (0.1: 2, 0.5: 5, 1: 9, +Inf: 10): linear inside the bucket, and the
    # last finite bound for ranks in +Inf.
    assert got["q"] == pytest.approx([0.1 + 0.4 * (3 - 2) / 3, 0.5, 1.0, 1.0])
    assert got["labels"] == ["encoder", 'we "quote"']
    live = got["live"]
    assert live["requestsPerS"] == pytest.approx(3.0)  # (40 - 10) / 10 s; /metrics' own 6 left out
    assert live["p95S"] == pytest.approx(0.1 + 0.4 * 0.95) and live["p95Since"] == "window"  # all 30 in (0.1, 0.5]
    assert live["queued"] == 12 and live["inflight"] == 0  # the scrape itself is not counted
    assert got["first"]["requestsPerS"] is None and got["first"]["p95Since"] == "start"


def test_transfer_renders_and_plays(page: tuple[Any, BrowserLog], server: str) -> None:
    tab, _ = page
    open_console(tab, "transfer")
    tab.wait_for_function("document.querySelectorAll('#transfer-source option').length >= 2")
    tab.select_option("#transfer-source", "sample:bikes")
    tab.select_option("#transfer-target", "sample:carphone_pristine")
    tab.click("#transfer-submit")
    tab.wait_for_function("document.getElementById('transfer-render').readyState >= 2", timeout=WAIT_MS)
    job_id = tab.get_attribute("#transfer-render", "data-job")
    result = httpx.get(f"{server}/v1/jobs/{job_id}/result?format=json", headers=AUTH).json()
    render = result["metrics"]["render"]
    # The H.264 MP4 of encode_mp4 plays in Debian's Chromium as it is (no WebM needed).
    ready, duration = tab.evaluate("(() => { const v = document.getElementById('transfer-render');"
                                   " return [v.readyState, v.duration]; })()")
    assert ready >= 2 and duration == pytest.approx(render["frames"] / render["fps"], abs=0.3)
    assert "done" in tab.inner_text("#transfer-state")
    table = tab.inner_text("#transfer-metrics")
    assert f"{result['metrics']['cycle']['latent_cosine']:.3f}" in table and f"{render['frames']} frames" in table
    tab.wait_for_function("document.getElementById('transfer-render').readyState === 4")  # no spinner in the shot
    shot(tab, "transfer", settle_ms=2000)
    tab.click("#transfer-play")
    tab.wait_for_function("document.getElementById('transfer-render').currentTime > 0", timeout=WAIT_MS)
    assert tab.evaluate("document.getElementById('transfer-render').error") is None


def plan_body(episode: dict[str, Any], start: int) -> dict[str, Any]:
    h = episode["horizon"]
    return {"observation": episode["frames"][start], "goal": episode["frames"][start + h], "preset": episode["preset"],
            "action_low": episode["action_low"], "action_high": episode["action_high"], "overrides": {}}


def titles(tab: Any, selector: str) -> np.ndarray:
    """Values of the plotted points, from their tooltips ("planned forward step 0: 0.123")."""
    return np.asarray([float(t.rsplit(": ", 1)[1]) for t in tab.locator(selector).all_text_contents()])


def test_plan_shows_actions_over_the_ground_truth(page: tuple[Any, BrowserLog], server: str) -> None:
    tab, log = page
    open_console(tab, "planner")
    tab.wait_for_selector("#planner-strip img")
    assert tab.input_value("#planner-env") == "navigation"  # the environment the controller's size fits
    tab.fill("#planner-seed", "2")
    tab.dispatch_event("#planner-seed", "change")
    tab.wait_for_function("document.getElementById('planner-strip').dataset.episode === 'navigation/2'")
    tab.locator("#planner-strip img").nth(1).click()  # start from frame 1
    assert tab.input_value("#planner-start") == "1"
    tab.click("#planner-run")
    tab.wait_for_selector("#planner-actions circle.planned", timeout=WAIT_MS)

    episode = httpx.get(server + "/console/episodes/navigation/2", headers=AUTH).json()
    h = episode["horizon"]
    plan = httpx.post(server + "/v1/plan", headers=AUTH, json=plan_body(episode, 1), timeout=60).json()
    assert tab.locator("#planner-actions circle.planned").count() == h * 3
    assert tab.locator("#planner-actions circle.truth").count() == h * 3
    # Points are drawn dimension by dimension: planned[:, d] then the next d.
    np.testing.assert_allclose(titles(tab, "#planner-actions circle.planned title"),
                               np.asarray(plan["actions"]).T.ravel(), rtol=2e-3, atol=1e-3)
    truth = record_episode("navigation", 2, episode["steps"], image_size=32).actions[1 : 1 + h]
    np.testing.assert_allclose(titles(tab, "#planner-actions circle.truth title"), truth.T.ravel(), rtol=2e-3, atol=1e-3)
    bars = tab.locator("#planner-timing .bar .name").all_inner_texts()
    assert bars[0] == "decode" and bars[-1] == "total" and "· world model" in bars
    assert tab.locator("#planner-path path.planned").count() == 1
    shot(tab, "planner")

    # Manipulation takes 4-d actions; this model's controller takes 3: the API's own 422 is shown.
    log.expect_status(422)
    tab.select_option("#planner-env", "manipulation")
    tab.wait_for_function("document.getElementById('planner-info').textContent.startsWith('manipulation')")
    tab.click("#planner-run")
    error = tab.locator("#planner-error")
    error.wait_for(state="visible", timeout=WAIT_MS)
    manipulation = httpx.get(server + "/console/episodes/manipulation/2", headers=AUTH).json()
    refused = httpx.post(server + "/v1/plan", headers=AUTH, json=plan_body(manipulation, 0), timeout=60)
    assert refused.status_code == 422
    assert refused.json()["error"]["message"] in error.inner_text()
    assert "wrong_action_dim" in error.inner_text()
    assert tab.locator("#planner-actions circle").count() == 0  # no stale plot under the error


def test_an_invalid_file_shows_the_api_error(page: tuple[Any, BrowserLog], server: str) -> None:
    tab, log = page
    log.expect_status(422)
    open_console(tab, "latents")
    tab.wait_for_function("document.querySelectorAll('#latents-sample option').length > 1")
    junk = b"this is a text file, not a video\n" * 8
    tab.set_input_files("#latents-upload", files=[{"name": "holiday.mp4", "mimeType": "video/mp4", "buffer": junk}])
    error = tab.locator("#latents-error")
    error.wait_for(state="visible", timeout=WAIT_MS)
    api = upload_latents(server, "holiday.mp4", junk).json()["error"]
    text = error.inner_text()
    assert api["code"] == "unreadable_media"
    assert api["message"] in text and api["hint"] in text and "HTTP 422" in text
    assert tab.locator("#latents-norm circle").count() == 0
    shot(tab, "error")


def test_model_panel_shows_the_model_and_live_figures(page: tuple[Any, BrowserLog], server: str) -> None:
    tab, _ = page
    open_console(tab, "model")
    tab.wait_for_selector("#model-components tr[data-component]", timeout=WAIT_MS)
    (info,) = httpx.get(server + "/v1/models", headers=AUTH).json()["models"]
    assert tab.inner_text("#model-title") == f"{TINY_NAME} v{TINY_VERSION}"
    assert "onnxruntime" in tab.inner_text("#model-info") and "3-d real actions" in tab.inner_text("#model-info")
    for name, component in info["components"].items():
        row = tab.locator(f"#model-components tr[data-component='{name}']")
        chips = [int(c) for c in row.locator(".chip").all_text_contents()]
        assert chips == component["warm_batch_sizes"], name

    for _ in range(3):  # traffic for the live figures to count
        assert upload_latents(server, CARPHONE.name, CARPHONE.read_bytes(), fresh=True).status_code == 200
    # The panel scrapes /metrics every few seconds; wait (bounded) until a window saw the requests.
    tab.wait_for_function("Number(document.getElementById('live-rps').textContent) > 0", timeout=WAIT_MS)
    assert tab.inner_text("#live-p95") not in ("", "–")
    # one row per component, and one for the upload decode stage once it has decoded something
    rows = tab.locator("#live-components tr td:first-child").all_text_contents()
    assert set(info["components"]) <= set(rows) <= set(info["components"]) | {"decode"}
    assert len(rows) == len(set(rows))
    tab.wait_for_selector("#live-spark path.spark-line", timeout=WAIT_MS)  # from the third scrape on
    shot(tab, "model")
