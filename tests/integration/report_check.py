#!/usr/bin/python3
"""Loads a `medfed report` in headless Chromium and checks that every chart rendered.

usage: report_check.py REPORT.html RUN_DIR [REPORT.html RUN_DIR ...] [--screenshot PNG]
                       [--chromium PATH]

Several reports are checked in one browser, a page each; each gets its own
lines ("report_check: REPORT: ..."), and the exit status is 1 if any failed.
--screenshot saves the first report's page, whole.

Chromium is driven over the DevTools protocol on a pipe (--remote-debugging-pipe:
fd 3 in, fd 4 out, one JSON message per NUL), no network port and no module
beyond the standard library. The page is loaded from its file with JavaScript
switched off (as a reader who has it off sees it), then inspected through the
protocol's own evaluation, which runs regardless. It fails (exit 1, one line per
problem) when
  - the page logged an error or warning to the console (an SVG attribute Chrome
    could not parse, ...), or threw, or fetched anything but itself, or holds a
    <script>;
  - a chart the run's metrics call for is missing, or one is there that they
    do not call for: accuracy, loss, AUC, seconds, bytes, participation always
    when the rows have the figures; clip for secure rounds; clipped when the
    folder also has the sites' logs (tools/report.h);
  - a chart's <svg> did not render: no size, no title, an axis label missing,
    empty or of zero size, no ticks, no marks or marks of zero size, a series
    whose points are not one per round with a value, a participation grid
    that is not sites x rounds, a legend missing where there are several series.
"""
import json
import math
import os
import subprocess
import sys
import tempfile
import time

CHECK_JS = r"""
(() => {
  const box = e => { const b = e.getBoundingClientRect(); return [b.left, b.top, b.width, b.height]; };
  const out = {scripts: document.querySelectorAll('script').length, charts: [],
               external: [], bodyText: document.body ? document.body.innerText.length : 0};
  for (const e of document.querySelectorAll('[src],[href],link,img,iframe,object,embed,use,image'))
    out.external.push(e.outerHTML.slice(0, 120));
  for (const fig of document.querySelectorAll('figure.chart')) {
    const c = {id: fig.id};
    const svgs = fig.querySelectorAll('svg');
    c.svgs = svgs.length;
    const svg = svgs[0];
    c.isSvg = !!svg && svg instanceof SVGSVGElement && svg.namespaceURI === 'http://www.w3.org/2000/svg';
    if (!c.isSvg) { out.charts.push(c); continue; }
    c.box = box(svg);
    const text = sel => {
      const e = svg.querySelector(sel);
      if (!e) return null;
      return {text: e.textContent.trim(), box: box(e)};
    };
    c.title = text('text.title');
    c.xlabel = text('text.x-label');
    c.ylabel = text('text.y-label');
    c.xticks = svg.querySelectorAll('.x-axis text.tick').length;
    c.yticks = svg.querySelectorAll('.y-axis text.tick').length;
    c.series = [...svg.querySelectorAll('g.series')].map(g => ({
      key: g.dataset.series,
      points: g.querySelectorAll('circle.point').length,
      lines: [...g.querySelectorAll('polyline.line')].map(p => p.points.numberOfItems),
      bars: g.querySelectorAll('rect.bar').length,
      box: box(g),
      stroke: getComputedStyle(g.querySelector('polyline.line,rect.bar') || g).stroke,
      fill: getComputedStyle(g.querySelector('rect.bar,circle.point') || g).fill,
    }));
    c.cells = [...svg.querySelectorAll('rect.cell')].map(r => [r.dataset.site, r.dataset.round,
      r.getAttribute('class'), box(r)[2], box(r)[3]]);
    c.legend = [...svg.querySelectorAll('g.legend .legend-item')].map(e => [e.textContent.trim(), box(e)[2]]);
    out.charts.push(c);
  }
  return out;
})()
"""


class Chromium:
    """A headless Chromium and one page, over the DevTools pipe."""

    def __init__(self, binary, profile):
        cmd_r, self.cmd_w = os.pipe()
        self.res_r, res_w = os.pipe()

        def fds():  # the pipes' ends as fds 3 and 4, open across exec
            a, b = os.dup(cmd_r), os.dup(res_w)  # neither of them 3 or 4 now
            os.dup2(a, 3)
            os.dup2(b, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
             "--disable-sync", "--disable-component-update", "--mute-audio", "--hide-scrollbars",
             "--remote-debugging-pipe", "--user-data-dir=" + profile, "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=fds, close_fds=False)
        os.close(cmd_r)
        os.close(res_w)
        self.buf = b""
        self.next_id = 0
        self.events = []
        self.session = None

    def send(self, method, params=None, session=True, timeout=30):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self.cmd_w, json.dumps(msg).encode() + b"\0")
        want = self.next_id
        end = time.time() + timeout
        while time.time() < end:
            m = self.read(end - time.time())
            if m is None:
                break
            if m.get("id") == want:
                if "error" in m:
                    raise RuntimeError("%s: %s" % (method, m["error"]))
                return m.get("result", {})
            self.events.append(m)
        raise RuntimeError("%s: no answer from Chromium in %d s" % (method, timeout))

    def read(self, timeout):
        import select
        while b"\0" not in self.buf:
            r, _, _ = select.select([self.res_r], [], [], max(0, timeout))
            if not r:
                return None
            chunk = os.read(self.res_r, 1 << 20)
            if not chunk:
                return None
            self.buf += chunk
        raw, self.buf = self.buf.split(b"\0", 1)
        return json.loads(raw)

    def wait_event(self, method, timeout=30):
        end = time.time() + timeout
        for m in self.events:
            if m.get("method") == method:
                return m
        while time.time() < end:
            m = self.read(end - time.time())
            if m is None:
                break
            self.events.append(m)
            if m.get("method") == method:
                return m
        return None

    def close(self):
        try:
            self.send("Browser.close", session=False, timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def expected_charts(run_dir):
    """The charts the run's rows call for (tools/report.h), and each one's series."""
    rows = []
    for line in open(os.path.join(run_dir, "metrics.jsonl"), "rb"):
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if isinstance(r, dict):
            rows.append(r)
    def num(r, k):
        v = r.get(k)
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    def count(k, rows=rows):
        return sum(num(r, k) for r in rows)
    want = {}
    if count("val_accuracy"):
        want["chart-accuracy"] = {"line": {"val_accuracy": count("val_accuracy")}}
    if count("val_loss") or count("train_loss"):
        s = {"val_loss": count("val_loss")}
        if count("train_loss"):
            s["train_loss"] = count("train_loss")
        want["chart-loss"] = {"line": s}
    if count("val_auc"):
        want["chart-auc"] = {"line": {"val_auc": count("val_auc")}}
    if count("seconds"):
        want["chart-seconds"] = {"bar": {"train_seconds": count("train_seconds"),
                                         "other_seconds": count("seconds")}}
    if count("bytes_up"):
        want["chart-bytes"] = {"bar": {"bytes_up": count("bytes_up"), "bytes_down": count("bytes_down")}}
    want["chart-participation"] = {"grid": len(rows)}
    secure = [r for r in rows if r.get("secagg") is True]
    if sum(num(r, "clip") for r in secure):
        want["chart-clip"] = {"line": {"clip": sum(num(r, "clip") and r["clip"] > 0 for r in secure)}}
    logs = os.path.join(run_dir, "logs")
    if secure and os.path.isdir(logs) and any(f.startswith(("site-", "swarm-")) for f in os.listdir(logs)):
        want["chart-clipped"] = {"line": {"clipped": sum(not r.get("aborted") and num(r, "clip") for r in secure)}}
    return want, rows


def load(b, report, shot):
    """Loads report in a new page of browser b: what the page holds (CHECK_JS) and
    what the browser said while it loaded it (the page's own events)."""
    target = b.send("Target.createTarget", {"url": "about:blank"}, session=False)
    b.session = b.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True},
                       session=False)["sessionId"]
    b.events = []
    for domain in ("Page", "Runtime", "Log", "Network"):
        b.send(domain + ".enable")
    b.send("Emulation.setScriptExecutionDisabled", {"value": True})
    b.send("Emulation.setDeviceMetricsOverride",
           {"width": 1440, "height": 1000, "deviceScaleFactor": 1, "mobile": False})
    url = "file://" + os.path.abspath(report)
    problems = []
    nav = b.send("Page.navigate", {"url": url})
    if nav.get("errorText"):
        problems.append("navigation: " + nav["errorText"])
    if not b.wait_event("Page.loadEventFired", 30):
        problems.append("the page never finished loading")
    time.sleep(0.3)  # late console messages (SVG attribute errors come at layout)
    res = b.send("Runtime.evaluate", {"expression": CHECK_JS, "returnByValue": True})
    if "exceptionDetails" in res:
        raise RuntimeError("inspection failed: %s" % res["exceptionDetails"])
    page = res["result"]["value"]
    if shot:
        h = b.send("Runtime.evaluate", {"expression": "document.documentElement.scrollHeight",
                                        "returnByValue": True})["result"]["value"]
        png = b.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                     "clip": {"x": 0, "y": 0, "width": 1440, "height": h, "scale": 1}})
        import base64
        open(shot, "wb").write(base64.b64decode(png["data"]))
    events = [m for m in b.events if m.get("sessionId") in (None, b.session)]
    b.session = None
    b.send("Target.closeTarget", {"targetId": target["targetId"]}, session=False)
    return page, events, url, problems


def check(b, report, run_dir, shot):
    want, rows = expected_charts(run_dir)
    html = open(report, encoding="utf-8", errors="replace").read()
    page, events, url, problems = load(b, report, shot)
    # What the browser said while it loaded the page.
    for m in events:
        meth, p = m.get("method"), m.get("params", {})
        if meth == "Runtime.exceptionThrown":
            problems.append("exception: %s" % p.get("exceptionDetails", {}).get("text"))
        elif meth == "Runtime.consoleAPICalled" and p.get("type") in ("error", "warning", "assert"):
            problems.append("console %s: %s" % (p["type"], [a.get("value") for a in p.get("args", [])]))
        elif meth == "Log.entryAdded" and p.get("entry", {}).get("level") in ("error", "warning"):
            e = p["entry"]
            problems.append("console %s (%s): %s" % (e["level"], e.get("source"), e.get("text")))
        elif meth == "Network.requestWillBeSent":
            u = p.get("request", {}).get("url", "")
            if u != url and not u.startswith("data:"):
                problems.append("fetched %s: the report must be self-contained" % u)
    if page["scripts"]:
        problems.append("%d <script> element(s): the report must read without JavaScript" % page["scripts"])
    for e in page["external"]:
        problems.append("an element that refers elsewhere: %s" % e)
    if "<svg" not in html or page["bodyText"] < 100:
        problems.append("the page is (nearly) empty")

    got = {c["id"]: c for c in page["charts"]}
    for cid in sorted(set(got) - set(want)):
        problems.append("%s: a chart these metrics do not call for" % cid)
    if len(page["charts"]) != len(got):
        problems.append("two charts share an id")
    for cid, spec in want.items():
        c = got.get(cid)
        if not c:
            problems.append("%s: missing" % cid)
            continue
        pre = cid + ": "
        if not c.get("isSvg") or c.get("svgs") != 1:
            problems.append(pre + "no single <svg> in the SVG namespace")
            continue
        bx = c["box"]
        if bx[2] < 200 or bx[3] < 100:
            problems.append(pre + "the svg did not render at a readable size: %r" % bx)
        for name in ("title", "xlabel", "ylabel"):
            t = c.get(name)
            if not t or not t["text"]:
                problems.append(pre + "%s missing or empty" % name)
            elif t["box"][2] <= 0 or t["box"][3] <= 0:
                problems.append(pre + "%s '%s' has no size on the page" % (name, t["text"]))
            elif not (bx[0] - 1 <= t["box"][0] and t["box"][0] + t["box"][2] <= bx[0] + bx[2] + 1 and
                      bx[1] - 1 <= t["box"][1] and t["box"][1] + t["box"][3] <= bx[1] + bx[3] + 1):
                problems.append(pre + "%s '%s' lies outside its chart" % (name, t["text"]))
        if c["xticks"] < 1 or ("grid" not in spec and c["yticks"] < 2):
            problems.append(pre + "axis ticks missing (x %d, y %d)" % (c["xticks"], c["yticks"]))
        if "grid" in spec:
            sites = {n for r in rows for k in ("cohort_sites", "included_sites", "dropped_sites")
                     for n in r.get(k) or []}
            cells = c["cells"]
            if not cells or len(cells) % spec["grid"] or len(cells) // spec["grid"] < len(sites):
                problems.append(pre + "%d cells for %d rounds and %d sites" % (len(cells), spec["grid"], len(sites)))
            if any(w <= 0 or h <= 0 for _, _, _, w, h in cells):
                problems.append(pre + "cells of zero size")
            # Each cell's state is what its round's row says of its site.
            by_round = {r.get("round"): r for r in rows}
            wrong = []
            for site, rnd, cl, _, _ in cells:
                r = by_round.get(int(rnd)) if rnd and rnd.isdigit() else None
                if r is None:
                    wrong.append("%s/%s: no such round" % (site, rnd))
                    continue
                if "included_sites" not in r and "cohort_sites" not in r:
                    continue  # a row without names (a restart's note): any state
                st = ("included" if site in (r.get("included_sites") or []) else
                      "dropped" if site in (r.get("dropped_sites") or []) else
                      "picked" if site in (r.get("cohort_sites") or []) else "absent")
                if cl.split()[-1] != st:
                    wrong.append("%s round %s: %s, the row says %s" % (site, rnd, cl.split()[-1], st))
            if wrong:
                problems.append(pre + "cells that contradict the metrics: " + "; ".join(wrong[:5]))
            if len(c["legend"]) < 4:
                problems.append(pre + "legend of the cell states missing")
            continue
        kind = "line" if "line" in spec else "bar"
        series = {s["key"]: s for s in c["series"]}
        if set(series) != set(spec[kind]):
            problems.append(pre + "series %s, expected %s" % (sorted(series), sorted(spec[kind])))
        for key, n in spec[kind].items():
            s = series.get(key)
            if not s:
                continue
            if kind == "line":
                if s["points"] != n or sum(s["lines"]) != n:
                    problems.append(pre + "%s: %d points in lines of %s, expected %d" % (key, s["points"], s["lines"], n))
                if s["stroke"] in ("none", "", "rgba(0, 0, 0, 0)"):
                    problems.append(pre + "%s: its line is not drawn (stroke %s)" % (key, s["stroke"]))
            elif s["bars"] != n:
                problems.append(pre + "%s: %d bars, expected %d" % (key, s["bars"], n))
            if n and (s["box"][2] <= 0 or s["box"][3] < 0):
                problems.append(pre + "%s: its marks have no size on the page" % key)
        if len(spec[kind]) > 1 and len(c["legend"]) < len(spec[kind]):
            problems.append(pre + "%d series, legend of %d" % (len(spec[kind]), len(c["legend"])))
        if any(w <= 0 for _, w in c["legend"]):
            problems.append(pre + "a legend entry has no size")
    return problems, sorted(want)


def main():
    args = sys.argv[1:]
    shot, binary = None, "/usr/bin/chromium"
    if "--screenshot" in args:
        i = args.index("--screenshot")
        shot = args[i + 1]
        del args[i:i + 2]
    if "--chromium" in args:
        i = args.index("--chromium")
        binary = args[i + 1]
        del args[i:i + 2]
    if len(args) < 2 or len(args) % 2:
        print(__doc__)
        return 2
    pages = list(zip(args[0::2], args[1::2]))
    failed = 0
    with tempfile.TemporaryDirectory(prefix="medfed-chromium-") as profile:
        b = Chromium(binary, profile)
        try:
            for n, (report, run_dir) in enumerate(pages):
                # one browser, a page each: each report's verdict on its own lines
                name = report + ": " if len(pages) > 1 else ""
                problems, charts = check(b, report, run_dir, shot if n == 0 else None)
                for p in problems:
                    print("report_check: %s%s" % (name, p))
                if problems:
                    failed += 1
                else:
                    print("report_check: %sok: %d charts rendered (%s), no console error, nothing fetched"
                          % (name, len(charts), " ".join(c[6:] for c in charts)))
        finally:
            b.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
