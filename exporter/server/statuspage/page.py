"""The `/jobs` page: problems first, filtered, paginated, every tree a click away.

Job data comes from the API and is untrusted: every value is escaped, and the
page loads nothing from anywhere (inline CSS, no scripts), so a strict
Content-Security-Policy holds. Trees fold with `<details>`, which needs no script.
"""

import html
import math
from collections.abc import Iterable
from urllib.parse import quote, urlencode

from exporter.jobs.clusters import EMPTY_DIRECTORY, ClusterDirectory
from exporter.jobs.ids import Api
from exporter.jobs.state import JobState
from exporter.jobs.tree import PHASES, JobNode
from exporter.server.statuspage.model import (
    GROUP_TITLES,
    NO_FILTERS,
    Filters,
    Group,
    failed_steps,
    iso_time,
    node_duration,
    ordered,
    seconds,
    targets_of,
)
from exporter.server.statuspage.stuck import stuck_threshold

CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'"
# Seconds between reloads of the page in the browser.
REFRESH_SECONDS = 30
# Deeper levels of a tree are drawn at this indentation, with their depth written out.
MAX_INDENT = 8
# Jobs on one page: keeps the page small at thousands of jobs (about 30 KB gzipped
# at 10 sub-jobs a job), problems first so that page 1 is the one to read.
PAGE_SIZE = 100
# Jobs whose polls fail named in the summary; the count covers them all.
MAX_FAILING_NAMED = 10

_PHASE_CLASSES = {
    "Initializing": "init",
    "Running": "running",
    "Success": "success",
    "Failed": "failed",
}
_GROUP_CLASSES = {
    Group.FAILED: "failed",
    Group.STUCK: "stuck",
    Group.RUNNING: "running",
    Group.SUCCEEDED: "success",
}
# Trees of problems are open; the others fold.
_OPEN_GROUPS = frozenset({Group.FAILED, Group.STUCK})


def human_duration(seconds: float | None) -> str:
    """Say a duration the short way people read it: 45s, 12m 5s, 3h 20m, 2d 4h."""
    if seconds is None:
        return "-"
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def link(filters: Filters, page: int = 1, path: str = "jobs") -> str:
    """Return a relative link to a view with these filters and page, escaped for an attribute."""
    pairs = filters.pairs()
    if page > 1:
        pairs.append(("page", str(page)))
    return _e(f"{path}?{urlencode(pairs)}" if pairs else path)


def _job_link(job_id: str) -> str:
    return _e(f"api/v1/jobs/{quote(job_id, safe='')}")


def _phase_badge(phase: str | None) -> str:
    css = _PHASE_CLASSES.get(phase or "", "other")
    return f'<span class="phase {css}">{_e(phase or "unknown")}</span>'


def _progress_bar(node: JobNode) -> str:
    if node.subjob_phases is None or not node.subjob_total:
        return ""
    counts = dict(node.subjob_phases)
    total = node.subjob_total
    parts = []
    # Done first, then under way, then waiting: the bar fills from the left.
    order = ["Success", "Failed", "Running", "Initializing"]
    order += [phase for phase in counts if phase not in order]
    for phase in order:
        count = counts.get(phase, 0)
        if count:
            css = _PHASE_CLASSES.get(phase, "other")
            width = 100 * count / total
            parts.append(
                f'<span class="seg {css}" style="width:{width:.2f}%" '
                f'title="{_e(phase)}: {count}"></span>'
            )
    done = counts.get("Success", 0)
    label = f"{done}/{total} sub-jobs done"
    return (
        f'<span class="bar" role="img" aria-label="{_e(label)}">{"".join(parts)}</span>'
        f'<span class="barlabel">{_e(label)}</span>'
    )


def _how_long(node: JobNode, now: float, *, ended: bool) -> str:
    # An Initializing step has not started: a growing duration would look busy.
    if node.phase == "Initializing":
        return "never started" if ended else "waiting"
    return human_duration(node_duration(node, now))


def _node_row(node: JobNode, now: float, *, ended: bool) -> str:
    # The root is the card itself: its sub-jobs start at the left edge.
    level = node.depth - 1
    indent = min(level, MAX_INDENT)
    deep = f'<span class="deep">depth {node.depth}</span> ' if level > MAX_INDENT else ""
    reason = f'<div class="reason">{_e(node.reason)}</div>' if node.reason else ""
    if node.message:
        reason += f'<div class="message">{_e(node.message)}</div>'
    resource = f" · {_e(node.resource_name)}" if node.resource_name else ""
    return (
        f'<li class="node" style="margin-left:{indent * 1.1:.1f}em" '
        f'data-job-id="{_e(node.job_id)}">'
        f"{deep}{_phase_badge(node.phase)} "
        f'<span class="type">{_e(node.job_type or "(no type)")}</span>{resource} '
        f'<span class="muted">{_e(_how_long(node, now, ended=ended))}</span>'
        f"{_progress_bar(node)}"
        f'<div class="id">{_e(node.job_id)}</div>{reason}</li>'
    )


def _root_facts(root: JobNode, now: float, clusters: ClusterDirectory) -> list[str]:
    name = clusters.name(root.cluster_id) if root.cluster_id else ""
    cluster = f"{name} ({root.cluster_id})" if name else root.cluster_id or "-"
    facts = [f"cluster {_e(cluster)}"]
    created = seconds(root.created_ns)
    if created is not None:
        facts.append(f"created {_e(iso_time(created))}")
    if root.phase == "Initializing":
        age = human_duration(None if created is None else max(0.0, now - created))
        facts.append(f"not started, created {_e(age)} ago")
    else:
        took = human_duration(node_duration(root, now))
        facts.append(f"{'took' if root.finished else 'running for'} {_e(took)}")
    return facts


def _poll_facts(state: JobState, now: float) -> list[str]:
    if state.last_success is not None:
        facts = [f"last good poll {_e(human_duration(max(0.0, now - state.last_success)))} ago"]
    elif state.polls == 0:
        facts = ["not polled yet"]
    else:
        facts = ["never polled successfully"]
    if state.finished:
        facts.append("finished, no longer polled")
    return facts


def _failure(root: JobNode, nodes: tuple[JobNode, ...]) -> str:
    steps = failed_steps(nodes) if root.phase == "Failed" else []
    reason = root.reason or next((step.reason for step in steps if step.reason), "")
    message = f'<p class="message">{_e(root.message)}</p>' if root.message else ""
    if not steps and not reason:
        return message
    named = ", ".join(_e(step.job_type or step.job_id) for step in steps[:3])
    more = f" and {len(steps) - 3} more" if len(steps) > 3 else ""
    step = f'<span class="step">Failed step: {named}{more}.</span> ' if steps else ""
    return f'<p class="reason">{step}{_e(reason)}</p>{message}'


_API_NAMES = {Api.CCE: "CCE", Api.AUTOPILOT: "CCE Autopilot"}


def job_card(
    state: JobState,
    group: Group,
    now: float,
    clusters: ClusterDirectory = EMPTY_DIRECTORY,
    *,
    show_target: bool = False,
) -> str:
    """One watched job: its facts, its failure, and its tree folded in a `<details>`.

    `show_target` names the job's target and project first among its facts.
    """
    tree = state.tree
    root = tree.root if tree is not None else None
    if root is None:
        title = "not read yet"
        facts = _poll_facts(state, now)
    else:
        name = f" · {_e(root.resource_name)}" if root.resource_name else ""
        title = f"{_phase_badge(root.phase)} {_e(root.job_type or '(no type)')}{name}"
        facts = _root_facts(root, now, clusters) + _poll_facts(state, now)
    if state.api is not None:  # which job API the job lives on
        facts.insert(0, _API_NAMES[state.api])
    if show_target:
        where = f'target <a href="{link(Filters(target=(state.target,)))}">{_e(state.target)}</a>'
        facts.insert(0, f"{where} (project {_e(state.project_id or '-')})")
    stuck = ""
    if group is Group.STUCK and root is not None:
        limit = human_duration(stuck_threshold(root.job_type))
        stuck = f' <span class="stuckmark" title="longer than {_e(limit)}">stuck</span>'
    error = ""
    if state.failing and state.last_error:
        error = f'<p class="error">Last poll failed: {_e(state.last_error)}</p>'
    failure = _failure(root, tree.nodes) if root is not None and tree is not None else ""
    folded = ""
    if tree is not None and len(tree.nodes) > 1:
        ended = tree.root.finished
        rows = "".join(_node_row(node, now, ended=ended) for node in tree.nodes[1:])
        opened = " open" if group in _OPEN_GROUPS else ""
        count = len(tree.nodes) - 1
        folded = (
            f'<details class="tree"{opened}><summary>{count} sub-job(s) '
            f"{_progress_bar(tree.root)}</summary><ol>{rows}</ol></details>"
        )
    css = _GROUP_CLASSES[group]
    job_id = _e(state.job_id)
    return (
        f'<article class="job {css}" id="job-{job_id}" data-job-id="{job_id}" '
        f'data-target="{_e(state.target)}">'
        f"<h3>{title}{stuck}</h3>"
        f'<div class="id">{job_id} · <a href="{_job_link(state.job_id)}">JSON</a></div>'
        f'<p class="facts">{" · ".join(facts)}</p>{failure}{error}{folded}</article>'
    )


def _summary(jobs: list[tuple[Group, JobState]]) -> str:
    # Problems first here too: failed, then under way, then done.
    counts = dict.fromkeys(("Failed", "Running", "Initializing", "Success"), 0)
    unread = 0
    for _, state in jobs:
        if state.tree is None or not state.tree.root.phase:
            unread += 1
            continue
        phase = state.tree.root.phase
        counts[phase] = counts.get(phase, 0) + 1
    parts = [
        f'<a href="{link(Filters(phase=(phase.lower(),)))}">{count} {_e(phase)}</a>'
        for phase, count in counts.items()
        if count
    ]
    stuck = sum(1 for group, _ in jobs if group is Group.STUCK)
    if stuck:
        parts.insert(1 if counts["Failed"] else 0, f'<a href="#stuck">{stuck} stuck</a>')
    if unread:
        parts.append(f"{unread} not read yet")
    failing = [state.job_id for _, state in jobs if state.failing]
    text = f"{len(jobs)} watched job(s)" + (": " + ", ".join(parts) if parts else "") + "."
    if failing:
        named = ", ".join(
            f'<a href="{link(Filters(q=job_id.lower()))}">{_e(job_id)}</a>'
            for job_id in failing[:MAX_FAILING_NAMED]
        )
        more = f" and {len(failing) - MAX_FAILING_NAMED} more" if len(failing) > 10 else ""
        text += f' <span class="failing">Polls failing for {len(failing)}: {named}{more}.</span>'
    return f'<p class="summary">{text}</p>'


def _targets(counts: dict[str, int], filters: Filters) -> str:
    """Name each target with its count of jobs, each a link to its jobs alone."""
    parts = []
    for name, count in counts.items():
        current = ' aria-current="true"' if name in filters.target else ""
        href = link(Filters(target=(name,)))
        parts.append(f'<a href="{href}"{current}>{_e(name)}</a> ({count})')
    return f'<p class="targets">Targets: {" · ".join(parts)}.</p>'


def _form(filters: Filters, *, with_target: bool = False) -> str:
    chosen = filters.phase[0] if filters.phase else ""
    options = "".join(
        f'<option value="{_e(value)}"{" selected" if value == chosen else ""}>{_e(label)}</option>'
        for value, label in [("", "any phase")] + [(p.lower(), p) for p in PHASES]
    )
    fields = "".join(
        f'<input name="{name}" value="{_e(value)}" placeholder="{placeholder}" size="14">'
        for name, value, placeholder in (
            *(
                (("target", filters.target[0] if filters.target else "", "target"),)
                if with_target
                else ()
            ),
            ("type", filters.type[0] if filters.type else "", "job type"),
            ("cluster", filters.cluster[0] if filters.cluster else "", "cluster name or ID"),
            ("q", filters.q, "job ID or resource name"),
        )
    )
    return (
        f'<form class="filters" method="get" action="jobs"><select name="phase">{options}</select>'
        f'{fields}<button type="submit">Filter</button> <a href="jobs">clear</a></form>'
    )


def _pages(filters: Filters, page: int, pages: int, shown: int, matching: int) -> str:
    start = (page - 1) * PAGE_SIZE
    text = f"Showing {start + 1 if shown else 0}-{start + shown} of {matching} job(s)"
    if pages > 1:
        text += f", page {page} of {pages}"
        if page > 1:
            text += f' · <a rel="prev" href="{link(filters, page - 1)}">previous</a>'
        if page < pages:
            text += f' · <a rel="next" href="{link(filters, page + 1)}">next</a>'
    return f'<p class="pages">{text}.</p>'


_STYLE = """
:root{--init:#8e8e8e;--running:#1f78d1;--success:#2e9e44;--failed:#d63d3d;--other:#b58100}
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;padding:1em;
background:#f5f6f8;color:#1d2327;line-height:1.4;overflow-wrap:anywhere}
main{max-width:60em;margin:0 auto}
h1{font-size:1.4em;margin:0 0 .3em}
h2{font-size:1.15em;margin:1em 0 .4em}
h3{font-size:1.05em;margin:0}
.summary,.pages{margin:.2em 0 .6em}
.failing{color:#8a1f11}
.filters{display:flex;flex-wrap:wrap;gap:.4em;align-items:center;margin:0 0 .6em}
.filters input,.filters select{max-width:100%}
.job{background:#fff;border-radius:8px;padding:.7em 1em;margin:0 0 .8em;
border-left:6px solid var(--other);box-shadow:0 1px 2px #0002}
.job.running{border-left-color:var(--running)}.job.stuck{border-left-color:var(--other)}
.job.success{border-left-color:var(--success)}.job.failed{border-left-color:var(--failed)}
.phase{display:inline-block;border-radius:4px;padding:0 .45em;color:#fff;font-size:.85em;
font-weight:600;background:var(--other)}
.phase.init{background:var(--init)}.phase.running{background:var(--running)}
.phase.success{background:var(--success)}.phase.failed{background:var(--failed)}
.stuckmark{border:2px solid var(--other);color:#7a5600;border-radius:4px;padding:0 .3em;
font-size:.8em;font-weight:600}
.id{font-family:ui-monospace,monospace;font-size:.8em;color:#5b6570;overflow-wrap:anywhere}
.facts{margin:.3em 0;color:#3c434a;font-size:.9em;overflow-wrap:anywhere}
.muted{color:#5b6570;font-size:.9em}
.error{background:#fdecea;color:#8a1f11;padding:.4em .6em;border-radius:4px;
overflow-wrap:anywhere;margin:.4em 0}
.reason{color:#8a1f11;font-size:.9em;overflow-wrap:anywhere;margin:.3em 0}
.message{color:#444;font-size:.9em;overflow-wrap:anywhere;margin:.3em 0}
.step{font-weight:600}
.tree summary{cursor:pointer;font-size:.9em;color:#3c434a}
.tree ol{list-style:none;padding:0;margin:.3em 0 0}
.node{padding:.35em 0 .35em .6em;border-left:2px solid #dde1e5;margin-top:.2em;
overflow-wrap:anywhere}
.bar{display:flex;height:.6em;width:100%;max-width:24em;background:#e6e8eb;border-radius:3px;
overflow:hidden;margin:.3em 0 0}
.seg{display:block;height:100%}
.seg.init{background:var(--init)}.seg.running{background:var(--running)}
.seg.success{background:var(--success)}.seg.failed{background:var(--failed)}
.seg.other{background:var(--other)}
.barlabel{font-size:.8em;color:#5b6570}
.deep{font-size:.75em;color:#5b6570}
.empty{color:#5b6570}
footer{font-size:.8em;color:#5b6570;margin-top:2em}
"""


def render_html(
    states: Iterable[JobState],
    project_id: str,
    now: float,
    filters: Filters = NO_FILTERS,
    page: int = 1,
    *,
    clusters: ClusterDirectory = EMPTY_DIRECTORY,
) -> str:
    """Render the `/jobs` page: the summary of every job, then one page of those that match."""
    jobs = ordered(states, now)
    counts = targets_of(state for _, state in jobs)
    several = len(counts) > 1 or bool(filters.target)
    matching = [(group, state) for group, state in jobs if filters.matches(state)]
    pages = max(1, math.ceil(len(matching) / PAGE_SIZE))
    page = min(max(page, 1), pages)
    shown = matching[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    body: list[str] = []
    current: Group | None = None
    for group, state in shown:
        if group is not current:
            if current is not None:
                body.append("</section>")
            total = sum(1 for other, _ in matching if other is group)
            css = _GROUP_CLASSES[group]
            body.append(
                f'<section class="group {css}" id="{css}"><h2>{GROUP_TITLES[group]} ({total})</h2>'
            )
            current = group
        body.append(job_card(state, group, now, clusters, show_target=several))
    if current is not None:
        body.append("</section>")
    if not jobs:
        body = ['<p class="empty">No jobs are watched.</p>']
    elif not matching:
        body = ['<p class="empty">No job matches the filters.</p>']
    project = f" in project {_e(project_id)}" if project_id else ""
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
        f"<title>CCE jobs</title><style>{_STYLE}</style></head><body><main>"
        f"<h1>CCE jobs{project}</h1>{_summary(jobs)}"
        f"{_targets(counts, filters) if several else ''}{_form(filters, with_target=several)}"
        f"{_pages(filters, page, pages, len(shown), len(matching))}"
        f'<p class="links">As of {_e(iso_time(now))}. '
        f'<a href="{link(filters, path="api/v1/jobs")}">JSON</a> · <a href="./">home</a></p>'
        f"{''.join(body)}<footer>Reloads every {REFRESH_SECONDS} s.</footer></main></body></html>\n"
    )
