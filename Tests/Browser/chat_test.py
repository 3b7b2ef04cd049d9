#!/usr/bin/env python3
"""The example chat in a real browser (headless Chromium through Selenium), three instances
behind nginx, on loopback. Steps (screenshots of each in $ARTIFACTS, default a new temporary
directory chat-artifacts-*; the directory used is printed):

1. log in, send messages;
2. reload: the conversation is there, though the requests went to different instances;
3. a second tab sends at the same moment as the first: no message lost or duplicated;
4. an instance is killed and restarted: the conversation is still there;
5. the conversation idles past its short timeout: the warning appears, then a fresh start, and the
   server's cleanup hook ran exactly once;
6. "my devices" in one browser lists both of the user's browsers, and its "sign out" ends the
   other one's session;
7. "log out everywhere" in one browser ends the session of another browser of the same user;
and each instance serves Prometheus metrics on a port of its own (the Hummingbird example; the
Vapor one has none: --no-metrics).

Usage: chat_test.py CHAT_BINARY [--no-metrics]
"""
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../Examples/Chat"))
from deployment import Deployment  # noqa: E402

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

# A fresh directory unless $ARTIFACTS names one: fixed names in a shared /tmp could be planted
# (a symbolic link where a screenshot is written).
ARTIFACTS = os.environ.get("ARTIFACTS") or tempfile.mkdtemp(prefix="chat-artifacts-")
IDLE, WARNING = 8, 5


def browser():
    options = Options()
    options.add_argument("--headless=new")
    options.add_argument("--no-sandbox")
    options.add_argument("--disable-dev-shm-usage")
    options.add_argument("--window-size=900,900")
    if os.path.exists("/usr/bin/chromium"):
        options.binary_location = "/usr/bin/chromium"
    service = Service("/usr/bin/chromedriver") if os.path.exists("/usr/bin/chromedriver") else Service()
    return webdriver.Chrome(options=options, service=service)


def wait(driver, condition, what, timeout=20):
    def attempt(_):
        try:
            return condition()
        except StaleElementReferenceException:
            return False

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(attempt)
    except Exception:
        shot(driver, "failed")
        raise AssertionError("timed out waiting for " + what)


def shot(driver, name):
    os.makedirs(ARTIFACTS, exist_ok=True)
    driver.save_screenshot(os.path.join(ARTIFACTS, name + ".png"))


def log_lines(driver):
    # One script call: the page re-renders the log every second, so element handles go stale.
    return driver.execute_script("return [...document.querySelectorAll('#log div')].map((line) => line.textContent)")


def log_in(driver, url, user):
    driver.get(url)
    wait(driver, lambda: driver.find_element(By.ID, "name").is_displayed(), "the login form")
    driver.find_element(By.ID, "name").send_keys(user)
    driver.find_element(By.ID, "login-button").click()
    wait(driver, lambda: driver.find_element(By.ID, "user").text == user, "signed in as " + user)


def send(driver, text):
    field = driver.find_element(By.ID, "text")
    field.send_keys(text)
    field.submit()
    wait(driver, lambda: "assistant: echo: " + text in log_lines(driver), "the echo of " + text)


def main(binary, metrics=True):
    print("chat browser test of %s: screenshots in %s" % (os.path.basename(binary), ARTIFACTS))
    sys.stdout.flush()
    deployment = Deployment(binary, instances=3, idle=IDLE, warning=WARNING).start()
    first = browser()
    other = None
    try:
        url = deployment.url
        # 1. Log in, send.
        log_in(first, url, "alice")
        send(first, "hello")
        send(first, "how are you")
        shot(first, "1-conversation")

        # 2. Reload: the same conversation from whichever instance answers.
        instances = set()
        for _ in range(6):
            first.refresh()
            wait(first, lambda: "user: hello" in log_lines(first), "the conversation after a reload")
            instances.add(first.find_element(By.ID, "instance").text)
        assert len(instances) >= 2, "every reload hit one instance: %s" % instances
        shot(first, "2-reloaded")

        # Prometheus text on each instance's own port: the store's operations with sub-millisecond
        # buckets, and the sampled gauges.
        if metrics:
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % deployment.metrics_ports[0], timeout=5) as response:
                text = response.read().decode()
            assert "session_operation_duration_bucket" in text, text[:2000]
            assert 'le="5e-05"' in text or 'le="0.00005"' in text, "no sub-millisecond bucket"
            assert "chat_active_sessions" in text, "no active-sessions gauge"

        # 3. A second tab, both sending at the same moment.
        first_tab = first.current_window_handle
        first.switch_to.new_window("tab")
        first.get(url)
        wait(first, lambda: "user: hello" in log_lines(first), "the conversation in a second tab")
        second_tab = first.current_window_handle
        script = "fetch('/api/messages', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify({text: arguments[0]})})"
        first.execute_script(script, "from tab two")
        first.switch_to.window(first_tab)
        first.execute_script(script, "from tab one")
        for text in ("from tab one", "from tab two"):
            wait(first, lambda text=text: "assistant: echo: " + text in log_lines(first), "the echo of " + text)
        lines = log_lines(first)
        for text in ("user: from tab one", "user: from tab two", "user: hello"):
            assert lines.count(text) == 1, "%r appears %d times: %s" % (text, lines.count(text), lines)
        shot(first, "3-two-tabs")
        first.switch_to.window(second_tab)
        first.close()
        first.switch_to.window(first_tab)

        # 4. An instance dies and comes back: nothing is lost.
        deployment.kill_instance(0)
        for _ in range(4):
            first.refresh()
            wait(first, lambda: "user: from tab one" in log_lines(first), "the conversation with an instance down")
        deployment.start_instance(0)
        send(first, "after the restart")
        shot(first, "4-instance-restarted")

        # 5. Idle past the timeout: the warning, then a fresh start; the hook ran once.
        wait(first, lambda: first.find_element(By.ID, "warning").is_displayed(), "the expiry warning", timeout=IDLE + 5)
        shot(first, "5a-warning")
        wait(first, lambda: first.find_element(By.ID, "name").is_displayed(), "the end of the idle conversation", timeout=IDLE + 10)
        shot(first, "5b-ended")

        def hook_runs(token=deployment.admin_token):
            request = urllib.request.Request(url + "admin/hook-runs", headers={"Authorization": "Bearer " + token})
            with urllib.request.urlopen(request, timeout=2) as response:
                return response.read().decode()

        # The admin endpoint needs the instances' token.
        try:
            hook_runs("not-the-token")
            raise AssertionError("/admin/hook-runs answered a wrong token")
        except urllib.error.HTTPError as error:
            assert error.code == 401, "/admin/hook-runs with a wrong token: %d" % error.code

        wait(first, lambda: "alice 1" in hook_runs().splitlines(), "the cleanup hook", timeout=20)
        time.sleep(1)  # a duplicate would show up within the claim's renewal, well under a second here
        assert hook_runs().splitlines() == ["alice 1"], "hook runs: %r" % hook_runs()
        assert len(deployment.hook_log_lines()) == 1, deployment.hook_log_lines()
        log_in(first, url, "alice")
        assert log_lines(first) == [], "not a clean slate: %s" % log_lines(first)

        # 6. My devices: both of alice's browsers, this one marked; signing the other one out ends
        # its session (by a handle: the page never holds another session's id).
        other = browser()
        log_in(other, url, "alice")
        send(other, "from the phone")
        send(first, "from the laptop")

        def devices():
            return first.execute_script("return [...document.querySelectorAll('#devices li')].map((item) => item.textContent)")

        first.find_element(By.ID, "devices-button").click()
        wait(first, lambda: len(devices()) == 2, "two devices listed")
        assert sum("(this one)" in item for item in devices()) == 1, devices()
        assert all("Chrome on Linux" in item for item in devices()), devices()
        shot(first, "6a-devices")
        first.find_element(By.CSS_SELECTOR, "#devices .sign-out").click()
        wait(other, lambda: other.find_element(By.ID, "name").is_displayed(), "the other browser signed out")
        wait(first, lambda: len(devices()) == 1, "one device left")
        assert first.find_element(By.ID, "user").text == "alice", "this browser stays signed in"
        shot(other, "6b-signed-out")

        # 7. Log out everywhere: another browser (another device) of alice's is logged out too.
        log_in(other, url, "alice")
        send(other, "from the phone again")
        first.find_element(By.ID, "logout-everywhere").click()
        wait(first, lambda: first.find_element(By.ID, "name").is_displayed(), "this browser logged out")
        wait(other, lambda: other.find_element(By.ID, "name").is_displayed(), "the other browser logged out")
        shot(other, "7-logged-out-everywhere")
        print("chat browser test passed (instances seen: %s)" % sorted(instances))
        return 0
    finally:
        first.quit()
        if other:
            other.quit()
        deployment.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], metrics="--no-metrics" not in sys.argv[2:]))
