"""Real-browser plumbing for the tests, the UI benchmark and the screenshots.

Debian's Chromium driven by Playwright (no `playwright install`: nothing is downloaded), a page
watcher that records what a test must check afterwards, a TCP proxy whose connections a test can
cut, and nginx in front of Stepline the way an intranet portal would put it.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import Browser, ConsoleMessage, Frame, Page, Request, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
# The README's pictures.
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NGINX = Path(shutil.which("nginx") or "/usr/sbin/nginx")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# Runs in every page before its own scripts: the statuses each step showed, in order, the steps
# that showed a progress bar with a value (fed by step_progress), and the time (epoch milliseconds,
# the clock the server stamps events with) each step fragment was swapped in after the page loaded.
OBSERVER = """
(() => {
  window.__states = {};
  window.__progress = {};
  window.__swaps = [];
  let loaded = false;
  const record = () => {
    for (const el of document.querySelectorAll('article[id^="step-"]')) {
      const seen = (window.__states[el.id] ||= []);
      const status = el.dataset.status;
      if (seen[seen.length - 1] !== status) seen.push(status);
      if (el.querySelector("progress[value]")) window.__progress[el.id] = true;
    }
  };
  new MutationObserver((mutations) => {
    const now = performance.timeOrigin + performance.now();
    for (const m of mutations) {
      for (const node of m.addedNodes) {
        if (loaded && node.nodeType === 1 && node.matches('article[id^="step-"]')) {
          window.__swaps.push({id: node.id, status: node.dataset.status, at: now});
        }
      }
    }
    record();
  }).observe(document, {subtree: true, childList: true, attributes: true, attributeFilter: ["data-status"]});
  document.addEventListener("DOMContentLoaded", () => { loaded = true; record(); });
})();
"""


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Watcher:
    """Everything a page did that a test asserts on afterwards."""

    page: Page
    console_errors: list[str] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    navigations: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.console_errors.append(f"page error: {error}"))
        self.page.on("request", lambda request: self.requests.append(request))
        self.page.on("framenavigated", self._navigated)
        self.page.on("dialog", self._dialog)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.console_errors.append(f"{message.type}: {message.text}")

    def _navigated(self, frame: Frame) -> None:
        if frame == self.page.main_frame:
            self.navigations.append(frame.url)

    def _dialog(self, dialog: object) -> None:
        self.dialogs.append(str(dialog))
        dialog.dismiss()  # type: ignore[attr-defined]

    def stream_requests(self) -> list[Request]:
        return [r for r in self.requests if "/stream" in urlsplit(r.url).path]

    def assert_clean(self, origins: set[str], *, allowed_errors: tuple[str, ...] = ()) -> None:
        """No console error but those allowed, no dialog, and no request to any other origin."""
        unexpected = [e for e in self.console_errors if not any(re.search(a, e) for a in allowed_errors)]
        assert not unexpected, unexpected
        assert not self.dialogs, self.dialogs
        elsewhere = [r.url for r in self.requests if origin_of(r.url) not in origins]
        assert not elsewhere, elsewhere


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def watched_page(browser: Browser, **context_options: object) -> tuple[Page, Watcher]:
    context = browser.new_context(**context_options)  # type: ignore[arg-type]
    if context_options.get("java_script_enabled", True):
        context.add_init_script(OBSERVER)
    page = context.new_page()
    page.set_default_timeout(20_000)
    return page, Watcher(page)


@dataclass(frozen=True)
class Picture:
    """What a PNG shows, as Chromium decodes it: its size, the colours on a grid of points across it
    (1 for a blank image) and its mean relative luminance (0 black … 1 white)."""

    width: int
    height: int
    colours: int
    luminance: float


# Decodes a PNG in the page and samples it on a GRID × GRID grid of points.
READ_PICTURE = """
async ([src, grid]) => {
  const img = new Image();
  img.src = src;
  await img.decode();
  const canvas = document.createElement("canvas");
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  const context = canvas.getContext("2d");
  context.drawImage(img, 0, 0);
  const colours = new Set();
  const linear = (c) => (c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4);
  const pixels = context.getImageData(0, 0, img.naturalWidth, img.naturalHeight).data;
  let luminance = 0;
  for (let i = 0; i < grid; i++) {
    for (let j = 0; j < grid; j++) {
      const x = Math.floor(((i + 0.5) * img.naturalWidth) / grid);
      const y = Math.floor(((j + 0.5) * img.naturalHeight) / grid);
      const at = (y * img.naturalWidth + x) * 4;
      const [r, g, b] = [pixels[at], pixels[at + 1], pixels[at + 2]];
      colours.add(`${r},${g},${b}`);
      luminance += 0.2126 * linear(r / 255) + 0.7152 * linear(g / 255) + 0.0722 * linear(b / 255);
    }
  }
  return {width: img.naturalWidth, height: img.naturalHeight, colours: colours.size,
          luminance: luminance / (grid * grid)};
}
"""


def read_picture(blank: Page, png: bytes, grid: int = 64) -> Picture:
    """Decode `png` in `blank` (a page of no site, so no policy forbids the image): it fails unless the
    bytes are a PNG Chromium can read."""
    assert png[:8] == PNG_SIGNATURE, png[:8]
    src = "data:image/png;base64," + base64.b64encode(png).decode()
    return Picture(**blank.evaluate(READ_PICTURE, [src, grid]))


# The WCAG contrast ratio (1 to 21) between the body's text colour and the page's background.
TEXT_CONTRAST = r"""
() => {
  const rgb = (value) => value.match(/[\d.]+/g).slice(0, 3).map(Number);
  const linear = (c) => (c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4);
  const luminance = ([r, g, b]) => 0.2126 * linear(r / 255) + 0.7152 * linear(g / 255) + 0.0722 * linear(b / 255);
  const style = getComputedStyle(document.body);
  const [text, background] = [luminance(rgb(style.color)), luminance(rgb(style.backgroundColor))];
  return (Math.max(text, background) + 0.05) / (Math.min(text, background) + 0.05);
}
"""


def text_contrast(page: Page) -> float:
    return page.evaluate(TEXT_CONTRAST)


def resume_point(request: Request) -> int:
    """Where a stream request asked to resume: its Last-Event-ID header, else its query."""
    # Only all_headers() holds what the network stack added, Last-Event-ID included.
    header = request.all_headers().get("last-event-id")
    if header:
        return int(header)
    match = re.search(r"last_event_id=(\d+)", request.url)
    return int(match.group(1)) if match else 0


class TcpProxy:
    """Forwards a local port to `target_port`; `drop()` cuts every open connection at once."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                return
            with self._lock:
                self._open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def drop(self) -> int:
        with self._lock:
            cut, self._open = self._open, []
        for sock in cut:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        return len(cut) // 2

    def close(self) -> None:
        self.listener.close()
        self.drop()


# What every nginx here shares: one process in the foreground, its files in {tmp}; servers follow.
NGINX_HTTP = """
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    default_type text/html;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
"""

NGINX_CONF = NGINX_HTTP + """
    # Stepline under a prefix the proxy strips, with nginx's default buffering.
    server {{
        listen 127.0.0.1:{port};
        location {prefix}/ {{
            proxy_pass http://127.0.0.1:{app_port}/;
        }}
    }}
    # A portal on another origin that embeds Stepline in an iframe.
    server {{
        listen 127.0.0.1:{portal_port};
        root {tmp}/portal;
    }}
}}
"""

# The portal signs its users in: every request under the prefix is first checked by its sign-in service
# (`auth_request`), whose answer names the user and groups Stepline is told in X-Forwarded-User and
# X-Forwarded-Groups. These replace whatever a client sent under those names. nginx reaches Stepline
# from `proxy_address`, the one address Stepline trusts those headers from.
SIGNED_IN_NGINX_CONF = NGINX_HTTP + """
    server {{
        listen 127.0.0.1:{port};
        location = /portal/sign-in {{
            proxy_pass http://127.0.0.1:{auth_port}/sign-in;
        }}
        location = /_portal_check {{
            internal;
            proxy_pass http://127.0.0.1:{auth_port}/check;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
        }}
        location {prefix}/ {{
            auth_request /_portal_check;
            auth_request_set $portal_user $upstream_http_x_auth_user;
            auth_request_set $portal_groups $upstream_http_x_auth_groups;
            proxy_set_header X-Forwarded-User $portal_user;
            proxy_set_header X-Forwarded-Groups $portal_groups;
            proxy_bind {proxy_address};
            proxy_pass http://127.0.0.1:{app_port}/;
        }}
    }}
    # A portal on another origin that embeds Stepline in an iframe.
    server {{
        listen 127.0.0.1:{portal_port};
        root {tmp}/portal;
    }}
}}
"""

PORTAL_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Portal</title><link rel="icon" href="data:,"></head>
<body><h1>Intranet portal</h1>
<iframe src="{src}" title="Stepline" width="1100" height="900"></iframe>
</body></html>
"""


@dataclass
class Nginx:
    process: subprocess.Popen[bytes]
    port: int
    portal_port: int
    prefix: str
    tmp: Path

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.origin + self.prefix

    @property
    def portal(self) -> str:
        return f"http://127.0.0.1:{self.portal_port}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_nginx(
    tmp: Path,
    app_port: int,
    prefix: str,
    *,
    port: int | None = None,
    portal_port: int | None = None,
    template: str = NGINX_CONF,
    **values: object,
) -> Nginx:
    """nginx with `template` (NGINX_CONF, or SIGNED_IN_NGINX_CONF with `auth_port` and `proxy_address`)."""
    port, portal_port = port or free_port(), portal_port or free_port()
    (tmp / "portal").mkdir(parents=True, exist_ok=True)
    src = f"http://127.0.0.1:{port}{prefix}/?embed=1"
    (tmp / "portal" / "index.html").write_text(PORTAL_PAGE.format(src=src))
    conf = tmp / "nginx.conf"
    conf.write_text(
        template.format(tmp=tmp, port=port, portal_port=portal_port, app_port=app_port, prefix=prefix, **values)
    )
    process = subprocess.Popen(
        [str(NGINX), "-c", str(conf), "-p", str(tmp), "-e", str(tmp / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    nginx = Nginx(process, port, portal_port, prefix, tmp)
    deadline = time.monotonic() + 10
    while True:
        if process.poll() is not None:
            raise AssertionError(f"nginx exited: {(tmp / 'error.log').read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5), socket.create_connection(
                ("127.0.0.1", portal_port), timeout=0.5
            ):
                return nginx
        except OSError:
            if time.monotonic() > deadline:
                nginx.stop()
                raise AssertionError("nginx did not listen within 10s") from None
            time.sleep(0.05)


def assert_picture(blank: Page, page: Page, png: bytes) -> None:
    """A full-page screenshot of `page`: a PNG as wide and as tall as the page, and not blank."""
    picture = read_picture(blank, png)
    size = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
    assert [picture.width, picture.height] == size, (picture, size)
    assert picture.colours >= 8, picture  # text, panels, badges: a blank or one-colour page has 1


def screenshot_folder(tmp_path: Path) -> Path:
    """docs/screenshots/ (the README's pictures) with STEPLINE_WRITE_SCREENSHOTS=1, else `tmp_path`,
    so that running the tests leaves the tree as it was."""
    folder = SCREENSHOTS if os.environ.get("STEPLINE_WRITE_SCREENSHOTS") == "1" else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder
