#!/usr/bin/env python3
"""Opens a session-load report.html in headless Chromium (through Selenium and chromedriver)
and checks that it renders: no console errors, every chart is an SVG with an x and a y axis and
axis labels that carry units, the timeline and checks tables are there. Prints one line per
finding; exits non-zero when something is wrong.

Usage: check_report.py REPORT_HTML
"""
import os
import re
import sys

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

UNITS = re.compile(r"\((s|ms|MiB)\)|per second|% of one core|clients")


def main(path):
    options = Options()
    options.add_argument("--headless=new")
    options.add_argument("--no-sandbox")  # CI runs as root
    options.add_argument("--disable-dev-shm-usage")
    options.add_argument("--window-size=1200,2000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    for candidate in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if os.path.exists(candidate):
            options.binary_location = candidate
    service = Service("/usr/bin/chromedriver") if os.path.exists("/usr/bin/chromedriver") else Service()
    driver = webdriver.Chrome(options=options, service=service)
    problems = []
    try:
        driver.get("file://" + os.path.abspath(path))
        if "session-load" not in driver.title:
            problems.append("title is %r" % driver.title)
        severe = [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]
        problems += ["console error: %s" % entry.get("message") for entry in severe]
        charts = driver.find_elements(By.CSS_SELECTOR, "svg")
        if len(charts) < 5:
            problems.append("only %d charts" % len(charts))
        for chart in charts:
            name = chart.get_attribute("aria-label") or "a chart"
            size = chart.size
            if size["width"] < 100 or size["height"] < 100:
                problems.append("%s is not rendered (%s)" % (name, size))
            if len(chart.find_elements(By.CSS_SELECTOR, "line.axis")) != 2:
                problems.append("%s lacks an axis" % name)
            x_labels = [label.text for label in chart.find_elements(By.CSS_SELECTOR, "text.axis-label.x")]
            y_labels = [label.text for label in chart.find_elements(By.CSS_SELECTOR, "text.axis-label.y")]
            if len(x_labels) != 1 or not x_labels[0].strip():
                problems.append("%s: no x axis label" % name)
            if len(y_labels) != 1 or not UNITS.search(y_labels[0]):
                problems.append("%s: the y axis label has no unit: %s" % (name, y_labels))
            # Time axes are in seconds.
            if x_labels and "time" in x_labels[0] and "(s)" not in x_labels[0]:
                problems.append("%s: the time axis has no unit: %s" % (name, x_labels[0]))
            if not chart.find_elements(By.CSS_SELECTOR, "polyline, rect"):
                problems.append("%s draws nothing" % name)
        headings = [heading.text for heading in driver.find_elements(By.TAG_NAME, "h2")]
        for wanted in ("Timeline", "Throughput over time", "Errors over time", "Redis CPU over time", "Checks"):
            if not any(heading.startswith(wanted) for heading in headings):
                problems.append("no section %r" % wanted)
        if not driver.get_screenshot_as_png():
            problems.append("no screenshot")
        print("charts: %d, sections: %d" % (len(charts), len(headings)))
    finally:
        driver.quit()
    for problem in problems:
        print("PROBLEM: " + problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
