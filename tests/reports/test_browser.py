"""summary.html in a real browser: headless Chromium lays it out at a phone's width and a
desktop's, and a probe script (added to a copy of the page, never to the report) reports
what it sees. Skipped, saying why, where no Chromium is installed."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from reconcile.rules.changes import diff_findings
from reconcile.rules.findings import make_findings
from reports.changes import RunChanges
from reports.writer import write_run_reports

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
RUN_ID = "20261121T210501Z-3f9a1c"

# Runs in the page at load: everything outside a scrolling box must fit the viewport.
_PROBE = """
window.addEventListener('load', () => {
  const vw = document.documentElement.clientWidth;
  const overflow = [];
  for (const el of document.body.querySelectorAll('*')) {
    if (el.closest('.scroll')) continue;
    const r = el.getBoundingClientRect();
    if (r.right > vw + 1) overflow.push(el.tagName + '.' + el.className);
  }
  const firstCell = document.querySelector('table.sample td');
  parent.postMessage(JSON.stringify({
    vw,
    pageWidth: document.documentElement.scrollWidth,
    overflow,
    kinds: [...document.querySelectorAll('h3[id^="kind-"]')].map(h => h.id.slice(5)),
    bars: [...document.querySelectorAll('table.bar td:first-child')].map(
      td => Math.round(td.getBoundingClientRect().width)),
    sampleCellDisplay: firstCell ? getComputedStyle(firstCell).display : null,
    svgs: document.querySelectorAll('svg').length,
  }), '*');
});
"""


@pytest.fixture(scope="module")
def chromium() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(
        f"no headless Chromium installed (looked for {', '.join(BROWSERS)}); "
        "`apt-get install chromium` runs this check"
    )


def _report(tmp_path: Path) -> Path:
    long_id = "cus_" + "Q" * 40
    rows: list[dict[str, Any]] = [
        {
            "kind": "stale_metadata",
            "customer_id": f"cus_stale{i:03d}",
            "user_id": str(1000 + i),
            "email": f"a.rather.long.address.{i}@subdomain.example.com",
            "field": "metadata.plan",
            "stripe_value": "enterprise-annual-2026",
            "local_value": "team",
            "detail": "Field metadata.plan differs between Stripe customer and user " * 2,
            "suggested_action": "run sync-metadata",
        }
        for i in range(30)
    ]
    rows.append(
        {
            "kind": "duplicate_link",
            "customer_id": long_id,
            "user_id": "17",
            "related_ids": ";".join(f"{i}{i}{i}{i}{i}{i}" for i in range(1, 9)),
            "detail": "8 local users point at one Stripe customer.",
            "suggested_action": "review manually",
        }
    )
    rows.append(
        {
            "kind": "orphan_customer",
            "customer_id": "cus_orphan1",
            "detail": "No local user matches.",
            "suggested_action": "review manually",
        }
    )
    findings = make_findings(rows)
    diff = diff_findings(findings.iloc[2:], findings.iloc[:-1])
    changes = RunChanges(
        "20261120T210501Z-aaaaaa", datetime(2026, 11, 20, tzinfo=UTC), diff.new, diff.resolved, 5
    )
    summary = {
        "status": "succeeded",
        "mode": "test",
        "started_at": "2026-11-21T21:05:01.123456+00:00",
        "duration_seconds": 12.5,
        "requests_by_endpoint": {"GET /v1/customers/{id}/payment_methods": 12_345},
        "mirror_dir": "/var/lib/stripe-reconcile/" + "very-long-folder-name/" * 6,
    }
    return write_run_reports(
        tmp_path / "out", "reconcile", RUN_ID, findings, summary, changes=changes
    )


def _probe(chromium: str, report: Path, width: int, work: Path) -> dict[str, Any]:
    """Lay the page out in an iframe `width` CSS pixels wide; the probe's findings."""
    probed = work / f"probed-{width}.html"
    page = (report / "summary.html").read_text(encoding="utf-8")
    probed.write_text(page.replace("</body>", f"<script>{_PROBE}</script></body>"), "utf-8")
    frame = work / f"frame-{width}.html"
    frame.write_text(
        "<!doctype html><html><body style='margin:0'>"
        f"<iframe src='{probed.name}' style='width:{width}px;height:900px;border:0'></iframe>"
        "<pre id='probe'></pre><script>window.addEventListener('message', e => {"
        "document.getElementById('probe').textContent = e.data; });</script></body></html>",
        "utf-8",
    )
    done = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--user-data-dir={work / f'profile-{width}'}",
            "--window-size=1400,1000",
            "--virtual-time-budget=10000",
            "--dump-dom",
            frame.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert found is not None, f"the probe did not report: {done.stderr[-2000:]}"
    assert found.group(1), f"the probe did not report: {done.stderr[-2000:]}"
    result: dict[str, Any] = json.loads(found.group(1).replace("&quot;", '"'))
    return result


def test_the_page_fits_a_phone_and_a_desktop_in_a_real_browser(
    chromium: str, tmp_path: Path
) -> None:
    report = _report(tmp_path)
    phone = _probe(chromium, report, 360, tmp_path)
    desktop = _probe(chromium, report, 1200, tmp_path)

    for view in (phone, desktop):
        # Nothing sticks out of the viewport except inside the scrolling boxes.
        assert view["overflow"] == [], view
        assert view["pageWidth"] <= view["vw"], view
        assert view["svgs"] == 0
        assert view["kinds"] == ["duplicate_link", "orphan_customer", "stale_metadata"]
        # The bars are drawn, and in proportion: stale_metadata (30) is the longest.
        bars = view["bars"]
        assert len(bars) == 3
        assert all(width > 0 for width in bars)
        assert bars[2] > bars[0]
    assert phone["vw"] <= 360
    # On a phone each sample row is a card of lines; on a desktop, a table row.
    assert phone["sampleCellDisplay"] == "block"
    assert desktop["sampleCellDisplay"] == "table-cell"


def test_a_screenshot_at_a_phones_width(chromium: str, tmp_path: Path) -> None:
    report = _report(tmp_path)
    shot = tmp_path / "summary-390.png"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=390,2000",
            f"--screenshot={shot}",
            (report / "summary.html").as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (390, 2000)
    # A blank page compresses to almost nothing; a rendered one does not.
    assert len(data) > 20_000


def test_probe_data_is_only_in_the_copies(chromium: str, tmp_path: Path) -> None:
    report = _report(tmp_path)
    _probe(chromium, report, 360, tmp_path)
    assert "<script" not in (report / "summary.html").read_text(encoding="utf-8")
    assert pd.read_csv(report / "new.csv").shape[0] >= 1
