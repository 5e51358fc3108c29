"""A minimal W3C WebDriver client over the standard library, for the browser tests:
Debian's chromium-driver speaks the protocol over HTTP, so no selenium is needed."""
import base64
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find():
    """(browser, driver) paths, or (None, why not)."""
    browser = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    driver = shutil.which("chromedriver")
    if browser is None:
        return None, "no Chromium on PATH (apt-get install chromium chromium-driver)"
    if driver is None:
        return None, "no chromedriver on PATH (apt-get install chromium-driver)"
    return (browser, driver), None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    """One headless Chromium session: Browser(browser, driver, (1280, 800))."""

    def __init__(self, browser, driver, size=(1280, 800), timeout=60, scripts=True):
        self.port = _free_port()
        self.proc = subprocess.Popen([driver, "--port=%d" % self.port],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.base = "http://127.0.0.1:%d" % self.port
        self.timeout = timeout
        try:
            self._wait_ready()
            args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=%d,%d" % size, "--hide-scrollbars"] + (
                [] if scripts else ["--blink-settings=scriptEnabled=false"])
            caps = {"browserName": "chrome", "goog:loggingPrefs": {"browser": "ALL"},
                    "goog:chromeOptions": {"binary": browser, "args": args}}
            r = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})
            self.session = "/session/" + r["sessionId"]
            self.viewport(*size)
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            raise

    def viewport(self, width, height):
        """Make the page area (not the window around it) width x height."""
        for _ in range(3):
            w, h = self.js("return [window.innerWidth, window.innerHeight]")
            if (w, h) == (width, height):
                return
            rect = self.call("GET", "/window/rect")
            self.call("POST", "/window/rect", {"width": rect["width"] + width - w,
                                               "height": rect["height"] + height - h})

    def _wait_ready(self):
        end = time.monotonic() + self.timeout
        while True:
            try:
                if self._call("GET", "/status").get("ready"):
                    return
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > end or self.proc.poll() is not None:
                raise RuntimeError("chromedriver did not start")
            time.sleep(0.1)

    def _call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return json.loads(r.read() or b"{}").get("value", {})
        except urllib.error.HTTPError as e:
            raise RuntimeError("webdriver %s %s: %s" % (method, path, e.read()[:500])) from None

    def call(self, method, path, body=None):
        return self._call(method, self.session + path, body)

    def get(self, url):
        self.call("POST", "/url", {"url": url})

    def js(self, script, *args):
        return self.call("POST", "/execute/sync", {"script": script, "args": list(args)})

    def element(self, css):
        r = self.call("POST", "/element", {"using": "css selector", "value": css})
        return next(iter(r.values()))

    def type(self, css, text):
        self.call("POST", "/element/%s/value" % self.element(css), {"text": text})

    def clear(self, css):
        self.call("POST", "/element/%s/clear" % self.element(css), {})

    def console(self):
        """The browser's console entries since the last call: [{level, message}]."""
        return self.call("POST", "/se/log", {"type": "browser"})

    def screenshot(self, path):
        png = base64.b64decode(self.call("GET", "/screenshot"))
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "wb") as f:
            f.write(png)
        return path

    def close(self):
        try:
            self._call("DELETE", self.session)
        except (RuntimeError, OSError):
            pass
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
