"""A report.html as a reader sees it: opened from disk in headless Chromium, a full-page screenshot.

    python benchmarks/report_screenshot.py runs/my-run/07-bench/report.html --output report.png

Prints what the page holds (its images, each decoded by the browser with its size, and the requests
it made besides the file itself: a self-contained page makes none) and fails when an image did not
render or the page asked the network for anything.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="a report.html")
    parser.add_argument("--output", type=Path, default=Path("report.png"))
    parser.add_argument("--width", type=int, default=1100)
    args = parser.parse_args()
    if not args.report.is_file():
        sys.exit(f"{args.report} does not exist; give the report.html of a bench stage or `edgepress bench --output`")

    from edgepress.web.browser import launched
    from edgepress.web.target import NO_CHROMIUM, find_chromium

    chromium = find_chromium() or sys.exit(NO_CHROMIUM)
    page_url = args.report.resolve().as_uri()
    with launched(chromium) as browser:
        page = browser.new_page(viewport={"width": args.width, "height": 900})
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url) if request.url != page_url else None)
        page.goto(page_url)
        images = page.eval_on_selector_all("img", "all => all.map(i => [i.alt, i.complete && i.naturalWidth > 0, i.naturalWidth, i.naturalHeight])")
        page.screenshot(path=str(args.output), full_page=True)
    for alt, shown, width, height in images:
        print(f"image {alt!r}: {'rendered' if shown else 'NOT RENDERED'}, {width} x {height}")
    data_urls = [u for u in requested if u.startswith("data:")]
    outside = [u for u in requested if not u.startswith("data:")]
    print(f"requests besides the page: {len(data_urls)} inline data URLs, {len(outside)} others {outside}")
    print(f"wrote {args.output}")
    if outside or not images or not all(shown for _, shown, *_ in images):
        sys.exit("the report is not self-contained, or an image did not render")


if __name__ == "__main__":
    main()
