"""The admin listener's status page (``GET /``): the scoreboard at a glance, as HTML.

Owns ``render(snapshot)``: one page from one ``master.snapshot()``, in the
spirit of Apache's mod_status -- a scoreboard strip with one cell per
worker, the master's figures (utilization, requests, reloads, restarts by
reason), and a row per worker with its state, generation, requests, the
request it runs now and for how long, memory and utilization. It refreshes
itself every ``REFRESH`` seconds (a meta refresh). Plain HTML and inline CSS:
no script, no external resource (the admin listener sends a
Content-Security-Policy that forbids both).

Everything from the outside is escaped: a request's path and method are
whatever a client sent, and end up here.
"""

from __future__ import annotations

import html
from typing import Any

import arbiter

REFRESH = 2  # seconds between the page's own reloads
CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; " \
                          "form-action 'none'; frame-ancestors 'none'"

# The scoreboard strip's letters, as mod_status has them (its "_" waiting, "W" working).
STATE_LETTERS = {"booting": "S", "idle": "_", "busy": "W", "draining": "G"}
STATE_HELP = {"booting": "starting", "idle": "idle", "busy": "serving", "draining": "draining"}

STYLE = """
:root{--ink:#1d2433;--dim:#5d6678;--line:#dfe3ea;--bg:#f5f7fa;--ok:#2e9d5b;--warn:#d99a1e;
--hot:#d2453b;--calm:#4673c8}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:var(--ink);background:var(--bg)}
header{background:#1d2433;color:#fff;padding:14px 24px;display:flex;align-items:baseline;
gap:18px;flex-wrap:wrap}
header h1{font-size:20px;margin:0;letter-spacing:.5px}
header .meta{color:#b9c2d3}
main{padding:18px 24px}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;
color:#fff;background:var(--dim)}
.badge.ok{background:var(--ok)}.badge.warn{background:var(--warn)}.badge.hot{background:var(--hot)}
.cards{display:flex;gap:14px;flex-wrap:wrap;margin-bottom:16px}
.card{background:#fff;border:1px solid var(--line);border-radius:8px;padding:12px 16px;
min-width:190px;flex:1}
.card h2{font-size:12px;text-transform:uppercase;letter-spacing:.6px;color:var(--dim);
margin:0 0 6px}
.big{font-size:26px;font-weight:650}
.small{color:var(--dim);font-size:12px}
.strip{display:flex;gap:3px;flex-wrap:wrap;margin:4px 0 16px}
.cell{width:22px;height:22px;border-radius:4px;font:600 12px/22px ui-monospace,monospace;
text-align:center;color:#fff}
.s-idle{background:var(--ok)}.s-busy{background:var(--calm)}.s-booting{background:var(--warn)}
.s-draining{background:var(--dim)}.s-unknown{background:var(--hot)}
table{width:100%;border-collapse:collapse;background:#fff;border:1px solid var(--line);
border-radius:8px;overflow:hidden}
th,td{padding:7px 9px;text-align:left;border-bottom:1px solid var(--line);white-space:nowrap}
th{font-size:12px;text-transform:uppercase;letter-spacing:.5px;color:var(--dim);background:#fafbfc}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.req span{display:inline-block;max-width:330px;overflow:hidden;text-overflow:ellipsis;
vertical-align:bottom;font-family:ui-monospace,monospace}
.scroll{overflow-x:auto}
.bar{display:inline-block;width:54px;height:8px;background:#e8ebf0;border-radius:4px;
vertical-align:middle;margin-right:6px;overflow:hidden}
.bar i{display:block;height:100%}
dl{display:grid;grid-template-columns:auto auto;gap:2px 14px;margin:0}
dt{color:var(--dim)}dd{margin:0;text-align:right;font-variant-numeric:tabular-nums}
footer{padding:0 24px 18px;color:var(--dim);font-size:12px}
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def queue_time_and_shed(snapshot: dict[str, Any]) -> dict[str, str] | None:
    """Queue time and shed requests (``max_queue_time``), as label -> text, for the
    page's "Queue time / shed" card: how many requests were measured, their mean wait,
    the bucket bounds their median and 99th percentile fall under, and how many were
    answered 503 for waiting too long. None before any request was measured."""
    requests = snapshot.get("requests") or {}
    buckets = requests.get("queue_buckets") or []
    count = buckets[-1][1] if buckets else 0
    if not count:
        return None

    def under(quantile: float) -> str:
        for bound, cumulative in buckets:
            if cumulative >= quantile * count:
                return "over 10 s" if bound == "+Inf" else f"≤ {float(bound) * 1000:g} ms"
        return "–"
    return {"measured": f"{count}",
            "mean wait": f"{requests.get('queue_sum', 0.0) / count * 1000:.1f} ms",
            "median": under(0.5), "p99": under(0.99),
            "shed (503)": f"{requests.get('shed', 0)}"}


def _age(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} m {seconds % 60:02.0f} s"
    if seconds < 86400:
        return f"{seconds // 3600:.0f} h {seconds % 3600 // 60:02.0f} m"
    return f"{seconds // 86400:.0f} d {seconds % 86400 // 3600:.0f} h"


def _mib(value: int | None) -> str:
    return "–" if value is None else f"{value / 1048576:.1f} MiB"


def _bar(fraction: float) -> str:
    color = "var(--ok)" if fraction < 0.5 else "var(--warn)" if fraction < 0.8 else "var(--hot)"
    width = max(0.0, min(1.0, fraction)) * 100
    return (f'<span class="bar"><i style="width:{width:.0f}%;background:{color}"></i></span>'
            f"{fraction:.0%}")


def _card(title: str, body: str) -> str:
    return f'<section class="card"><h2>{esc(title)}</h2>{body}</section>'


def _pairs(pairs: list[tuple[str, Any]]) -> str:
    return "<dl>" + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in pairs) + "</dl>"


def _badges(master: dict[str, Any]) -> str:
    badges = ['<span class="badge ok">ready</span>' if master["ready"]
              else '<span class="badge hot">not ready</span>']
    if master.get("reloading"):
        badges.append('<span class="badge warn">reloading</span>')
    if master.get("draining"):
        badges.append('<span class="badge warn">draining</span>')
    if master.get("stopping"):
        badges.append(f'<span class="badge hot">stopping ({esc(master["stopping"])})</span>')
    if master.get("crash_loop_failures"):
        badges.append(f'<span class="badge hot">crash-loop backoff: '
                      f'{esc(master["crash_loop_failures"])} failure(s)</span>')
    return " ".join(badges)


def _worker_row(worker: dict[str, Any]) -> str:
    state = worker["state"] if worker["state"] in STATE_LETTERS else "unknown"
    current = worker.get("current")
    request = age = ""
    if current:
        request = f"{esc(current['method'])} {esc(current['path'])}"
        age = _age(current["age"])
    util = worker.get("utilization") or {}
    cells = [
        f'<td class="num">{esc(worker["number"])}</td>',
        f'<td class="num">{esc(worker["generation"])}</td>',
        f'<td class="num">{esc(worker["pid"])}</td>',
        f'<td><span class="badge s-{state}">{esc(worker["state"])}</span></td>',
        f'<td class="num">{_age(worker["age"])}</td>',
        f'<td class="num">{esc(worker["requests"])}</td>',
        f'<td class="num">{esc(worker["in_flight"])}</td>',
        f'<td class="req"><span title="{request}">{request}</span></td>',
        f'<td class="num">{age}</td>',
        f'<td class="num">{_mib(worker.get("rss"))}</td>',
        f'<td class="num">{_mib(worker.get("uss"))}</td>',
        *(f"<td>{_bar(value)}</td>" for value in util.values()),
        f'<td class="num">{_age(worker["last_heartbeat"])}</td>',
    ]
    return f'<tr class="worker">{"".join(cells)}</tr>'


def render(snapshot: dict[str, Any]) -> str:
    """The whole page for one snapshot."""
    master, workers, requests = snapshot["master"], snapshot["workers"], snapshot["requests"]
    utilization = snapshot.get("utilization") or {}
    strip = "".join(
        f'<span class="cell s-{w["state"] if w["state"] in STATE_LETTERS else "unknown"}" '
        f'title="#{esc(w["number"])} (pid {esc(w["pid"])}): {esc(w["state"])}">'
        f'{STATE_LETTERS.get(w["state"], "?")}</span>' for w in workers)
    legend = " · ".join(f"<b>{letter}</b> {STATE_HELP[state]}"
                        for state, letter in STATE_LETTERS.items())
    in_flight = sum(w["in_flight"] for w in workers)
    busy = sum(1 for w in workers if w["state"] == "busy")
    idle = sum(1 for w in workers if w["state"] == "idle")
    total = requests["total"]
    mean = requests["duration_sum"] / total * 1000 if total else 0.0
    restarts = [(reason, count) for reason, count in snapshot["restarts"].items()]
    cards = [
        _card("Utilization", "".join(
            f'<div class="big">{_bar(value)} <span class="small">{esc(window)}</span></div>'
            for window, value in utilization.items()) or '<div class="small">–</div>'),
        _card("Workers", f'<div class="big">{len(workers)} <span class="small">of target '
                         f'{esc(master["target_workers"])}</span></div>'
                         f'<div class="small">{busy} busy, {idle} idle</div>'),
        _card("Requests", f'<div class="big">{total}</div>' + _pairs(
            [*((f"{k} responses", v) for k, v in requests["by_status"].items()
               if v or k in ("2xx", "4xx", "5xx")),
             ("in flight", in_flight), ("mean duration", f"{mean:.1f} ms")])),
        _card("Reloads", _pairs([("generation", master["generation"]),
                                 ("succeeded", snapshot["reloads"].get("succeeded", 0)),
                                 ("failed", snapshot["reloads"].get("failed", 0))])),
        _card("Restarts by reason", _pairs(restarts)),
    ]
    queue = queue_time_and_shed(snapshot)
    if queue is not None:
        cards.append(_card("Queue time / shed", _pairs(list(queue.items()))))
    reactor = snapshot.get("reactor") or {}
    if reactor.get("stalls"):
        cards.append(_card("Event-loop stalls", _pairs(
            [("stalls", reactor["stalls"]), ("blocked", _age(reactor["blocked_seconds"]))])))
    windows = "".join(f"<th>util {esc(window)}</th>" for window in utilization)
    head = ("<tr><th>#</th><th>gen</th><th>pid</th><th>state</th><th>age</th><th>requests</th>"
            "<th>in flight</th><th>current request</th><th>running for</th><th>rss</th>"
            f"<th>uss</th>{windows}<th>heartbeat</th></tr>")
    rows = "".join(_worker_row(w) for w in workers) or \
        f'<tr><td colspan="{12 + len(utilization)}">no workers</td></tr>'
    version = esc(getattr(arbiter, "__version__", ""))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>arbiter status – pid {esc(master["pid"])}</title>
<style>{STYLE}</style></head>
<body><header><h1>arbiter {version}</h1>
<span class="meta">master pid {esc(master["pid"])} · up {_age(master["uptime"])} ·
{esc(master["worker_type"])} workers · app {esc(master["app"])} ·
listening on {esc(", ".join(master["listeners"]) or "nothing")}</span>
<span>{_badges(master)}</span></header>
<main><div class="cards">{"".join(cards)}</div>
<h2 class="small">SCOREBOARD — {legend}</h2>
<div class="strip">{strip}</div>
<div class="scroll"><table><thead>{head}</thead><tbody>{rows}</tbody></table></div></main>
<footer>config {esc(master["config"] or "(none)")} · refreshes every {REFRESH} s ·
JSON at <code>/status</code>, Prometheus at <code>/metrics</code></footer>
</body></html>
"""
