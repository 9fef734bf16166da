"""Reports and alerts as mail: a plain-text part and a simple HTML part with the same content.

No images, no links that track, no remote content: the HTML is a few tables with inline styles.
"""

from __future__ import annotations

import html
from email import policy
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from notify.compose import HEADLINE, Report

#: Headers up to 200 characters stay on one line (the default folds a long subject oddly; RFC 5322
#: allows 998).
MAIL_POLICY = policy.default.clone(max_line_length=200)
LABELS = {"visitors": "Visitors", "visits": "Visits", "views": "Pageviews", "bounce_rate": "Bounce rate",
          "visit_duration": "Visit duration"}


def number(metric: str, value: float) -> str:
    """A metric as a mail shows it: ``1,234``, ``41.5%``, ``2m 05s``."""
    if metric == "bounce_rate":
        return f"{float(value):.1f}%"
    if metric == "visit_duration":
        seconds = round(float(value))
        return f"{seconds // 60}m {seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
    return f"{int(value):,}"


def change_text(report: Report, metric: str) -> str:
    change = report.change(metric)
    if change is None:
        return "new"
    unit = " pp" if metric == "bounce_rate" else "%"
    return f"{change:+.1f}{unit}" if metric == "bounce_rate" else f"{change:+.0f}{unit}"


def report_subject(report: Report) -> str:
    visitors = int(report.totals["visitors"])
    kind = "Weekly" if report.period.frequency == "weekly" else "Monthly"
    return (f"{kind} report for {report.site.domain}, {report.period.label()}: {visitors:,} visitors"
            f" ({change_text(report, 'visitors')})")


def report_text(report: Report) -> str:
    p = report.period
    lines = [f"{report.site.name or report.site.domain}: {p.start.isoformat()} to {p.last_day.isoformat()}"
             f" ({report.site.timezone})", "", "Compared with the period before:"]
    for m in HEADLINE:
        lines.append(f"  {LABELS[m] + ':':<16}{number(m, report.totals[m]):>10}   {change_text(report, m):>8}"
                     f"   (before: {number(m, report.previous[m])})")
    lines += ["", "Top pages (visitors, pageviews):"]
    lines += [f"  {r['visitors']:>8,} {r['views']:>8,}  {r['page']}" for r in report.top_pages] or ["  none"]
    lines += ["", "Top sources (visitors):"]
    lines += [f"  {r['visitors']:>8,}  {r['source']}" for r in report.top_sources] or ["  none"]
    if report.goals:
        lines += ["", "Goals (conversions, visitors):"]
        lines += [f"  {g['conversions']:>8,} {g['visitors']:>8,}  {g['goal']}" for g in report.goals]
    lines += ["", "-- ", "LittleStats. Ask the site's owner or an admin to stop these reports."]
    return "\n".join(lines) + "\n"


def _table(head: list[str], rows: list[list[Any]]) -> str:
    cell = 'style="padding:4px 12px 4px 0;text-align:left"'
    out = ["<table>", "<tr>" + "".join(f"<th {cell}>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for row in rows:
        out.append("<tr>" + "".join(f"<td {cell}>{html.escape(str(v))}</td>" for v in row) + "</tr>")
    return "\n".join([*out, "</table>"])


def report_html(report: Report) -> str:
    p = report.period
    title = html.escape(f"{report.site.name or report.site.domain}: {p.start.isoformat()} to {p.last_day.isoformat()}")
    headline = _table(["", "This period", "Change", "Before"],
                      [[LABELS[m], number(m, report.totals[m]), change_text(report, m), number(m, report.previous[m])]
                       for m in HEADLINE])
    pages = _table(["Page", "Visitors", "Pageviews"],
                   [[r["page"], f"{r['visitors']:,}", f"{r['views']:,}"] for r in report.top_pages])
    sources = _table(["Source", "Visitors"], [[r["source"], f"{r['visitors']:,}"] for r in report.top_sources])
    goals = ("<h2>Goals</h2>" + _table(["Goal", "Conversions", "Visitors"],
                                       [[g["goal"], f"{g['conversions']:,}", f"{g['visitors']:,}"]
                                        for g in report.goals])) if report.goals else ""
    return ("<!doctype html><html><body style=\"font-family:sans-serif\">"
            f"<h1 style=\"font-size:18px\">{title}</h1>{headline}<h2>Top pages</h2>{pages}"
            f"<h2>Top sources</h2>{sources}{goals}<p style=\"color:#666\">LittleStats. Ask the site's owner or"
            " an admin to stop these reports.</p></body></html>")


def message(sender: str, recipient: str, subject: str, text: str, html_body: str) -> EmailMessage:
    """A mail with a text and an HTML alternative, marked as automatic (no auto-replies)."""
    msg = EmailMessage(policy=MAIL_POLICY)
    msg["From"] = sender
    msg["To"] = recipient
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2].strip("> ") or None)
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(text)
    msg.add_alternative(html_body, subtype="html")
    return msg


def report_message(report: Report, sender: str, recipient: str) -> EmailMessage:
    return message(sender, recipient, report_subject(report), report_text(report), report_html(report))


def alert_message(alert: dict[str, Any], sender: str, recipient: str) -> EmailMessage:
    """The mail of a fired alert (``notify.alerts.alert_payload``)."""
    word = "Traffic spike" if alert["direction"] == "spike" else "Traffic drop"
    change = alert["changePercent"]
    change_words = "new traffic" if change is None else f"{change:+.0f}%"
    subject = f"{word} on {alert['domain']}: {alert['visitors']:,} visitors in an hour ({change_words})"
    text = (f"{word} on {alert['domain']}{' (test)' if alert.get('test') else ''}.\n\n"
            f"Visitors from {alert['hour']['start']} to {alert['hour']['end']}: {alert['visitors']:,}\n"
            f"Same hour a week before: {alert['visitorsWeekBefore']:,}\n"
            f"Change: {change_words} (the rule: a {alert['direction']} of {alert['thresholdPercent']}% or more,"
            f" with at least {alert['minVisitors']:,} visitors)\n\n-- \nLittleStats alert rule {alert['ruleId']}\n")
    body = "<!doctype html><html><body style=\"font-family:sans-serif\"><pre>" + html.escape(text) + "</pre></body></html>"
    return message(sender, recipient, subject, text, body)
