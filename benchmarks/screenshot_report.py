"""A PNG of a run's HTML report, taken in headless Chromium (Debian's chromium and chromium-driver packages).

    python benchmarks/screenshot_report.py RUN_DIR [--out docs/report.png] [--width 1400] [--height 2600]

Writes RUN_DIR/report.html first when it is missing (or --refresh is given), then photographs its top part.
Needs the `test` extra (selenium).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from ensemble_instruct.report import write_report

CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--hide-scrollbars")


def chromium(width: int, height: int) -> webdriver.Chrome:
    """Debian's Chromium through its own chromedriver: Selenium Manager is never asked to download one."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        raise SystemExit("chromium and chromedriver are needed: apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (*CHROMIUM_FLAGS, f"--window-size={width},{height}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


def screenshot(report: Path, png: Path, width: int, height: int) -> None:
    browser = chromium(width, height)
    try:
        browser.get(report.resolve().as_uri())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not browser.execute_script(
                "return document.readyState === 'complete' && document.querySelectorAll('.js-plotly-plot').length"
                " === document.querySelectorAll('.plotly-graph-div').length"):
            time.sleep(0.2)
        time.sleep(1)  # plotly's transitions settle
        png.parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(png))
    finally:
        browser.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/report.png"))
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=2600)
    parser.add_argument("--refresh", action="store_true", help="write the report again first")
    args = parser.parse_args()
    report = args.run_dir / "report.html"
    if args.refresh or not report.exists():
        report = write_report(args.run_dir)
    screenshot(report, args.out, args.width, args.height)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
