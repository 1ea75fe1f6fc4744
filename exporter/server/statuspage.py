"""The status page for people (`/jobs`) and its JSON twin (`/api/v1/jobs`).

Both are views of the store's job states at one moment. Job data comes from
the API and is untrusted: every value is escaped in the HTML, and the page
loads nothing from anywhere (inline CSS, no scripts), so a strict
Content-Security-Policy holds. Trees are walked as the flat, depth-first list
of nodes the model keeps, never recursively, so no tree can exhaust the stack.
"""

import asyncio
import html
import json
import operator
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from exporter.jobs.state import ERROR_KINDS, JobState
from exporter.jobs.tree import PHASES, JobNode

CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'"
# Seconds between reloads of the page in the browser.
REFRESH_SECONDS = 30
# Deeper levels of a tree are drawn at this indentation, with their depth written out.
MAX_INDENT = 8
# Seconds a view is served again while no job changed, before it is built
# anew for its durations and ages.
VIEW_MAX_AGE = 10.0

_PHASE_CLASSES = {
    "Initializing": "init",
    "Running": "running",
    "Success": "success",
    "Failed": "failed",
}


def iso_time(seconds: float | None) -> str | None:
    """Format Unix seconds as RFC 3339 UTC, or None."""
    if seconds is None:
        return None
    try:
        moment = datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):  # beyond what a datetime holds
        return None
    return moment.isoformat().replace("+00:00", "Z")


def _seconds(nanos: int | None) -> float | None:
    return None if nanos is None else nanos / 1e9


def node_duration(node: JobNode, now: float) -> float | None:
    """Seconds the job took (updated minus created), or has run so far when not finished."""
    if node.created_ns is None:
        return None
    if node.finished:
        if node.updated_ns is None:
            return None
        return max(0.0, (node.updated_ns - node.created_ns) / 1e9)
    return max(0.0, now - node.created_ns / 1e9)


def node_progress(node: JobNode) -> float | None:
    """Share of the direct sub-jobs that succeeded, or None without sub-jobs."""
    return node.progress


def node_json(node: JobNode, now: float) -> dict[str, Any]:
    """One node of a job tree, as the JSON API shows it."""
    return {
        "job_id": node.job_id,
        "parent_job_id": node.parent_job_id,
        "depth": node.depth,
        "job_type": node.job_type,
        "cluster_id": node.cluster_id,
        "resource_id": node.resource_id,
        "resource_name": node.resource_name,
        "phase": node.phase,
        "reason": node.reason,
        "created": iso_time(_seconds(node.created_ns)),
        "updated": iso_time(_seconds(node.updated_ns)),
        "duration_seconds": node_duration(node, now),
        "progress_ratio": node_progress(node),
        "subjobs": dict(node.subjob_phases) if node.subjob_phases is not None else None,
    }


def job_json(state: JobState, now: float) -> dict[str, Any]:
    """One watched job: how its polls went and its tree, root first, depth-first."""
    nodes = state.tree.nodes if state.tree is not None else ()
    return {
        "job_id": state.job_id,
        "polls": state.polls,
        "last_poll_ok": state.last_ok if state.polls else None,
        "last_success": iso_time(state.last_success),
        "last_error": state.last_error,
        "last_error_kind": state.last_error_kind.value if state.last_error_kind else None,
        "poll_errors": {
            kind.value: count for kind, count in zip(ERROR_KINDS, state.errors, strict=True)
        },
        "finished": state.finished,
        "finished_at": iso_time(state.finished_at),
        "nodes": [node_json(node, now) for node in nodes],
    }


def _sort_key(state: JobState) -> tuple[bool, float, str]:
    """Jobs still under way first, newest first; then the finished ones, newest first."""
    created = 0.0
    if state.tree is not None and state.tree.root.created_ns is not None:
        created = state.tree.root.created_ns / 1e9
    return (state.finished, -created, state.job_id)


def ordered(states: Iterable[JobState]) -> list[JobState]:
    """Return the watched jobs in the order both views show them."""
    return sorted(states, key=_sort_key)


def jobs_json(states: Iterable[JobState], project_id: str, now: float) -> dict[str, Any]:
    """Build the whole JSON document of `/api/v1/jobs`."""
    return {
        "project_id": project_id,
        "generated_at": iso_time(now),
        "jobs": [job_json(state, now) for state in ordered(states)],
    }


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


def _node_row(node: JobNode, now: float) -> str:
    indent = min(node.depth, MAX_INDENT)
    deep = f'<span class="deep">depth {node.depth}</span> ' if node.depth > MAX_INDENT else ""
    reason = f'<div class="reason">{_e(node.reason)}</div>' if node.reason else ""
    resource = f" · {_e(node.resource_name)}" if node.resource_name else ""
    return (
        f'<li class="node" style="margin-left:{indent * 1.1:.1f}em" '
        f'data-job-id="{_e(node.job_id)}">'
        f"{deep}{_phase_badge(node.phase)} "
        f'<span class="type">{_e(node.job_type or "(no type)")}</span>{resource} '
        f'<span class="muted">{_e(human_duration(node_duration(node, now)))}</span>'
        f"{_progress_bar(node)}"
        f'<div class="id">{_e(node.job_id)}</div>{reason}</li>'
    )


def _job_section(state: JobState, now: float) -> str:
    root = state.tree.root if state.tree is not None else None
    title = _e(root.job_type or "(no type)") if root is not None else "not read yet"
    name = f" · {_e(root.resource_name)}" if root is not None and root.resource_name else ""
    facts = []
    if root is not None:
        facts.append(f"cluster {_e(root.cluster_id or '-')}")
        created = _seconds(root.created_ns)
        if created is not None:
            facts.append(f"created {_e(iso_time(created))}")
        took = human_duration(node_duration(root, now))
        facts.append(f"{'took' if root.finished else 'running for'} {_e(took)}")
    if state.last_success is not None:
        ago = human_duration(max(0.0, now - state.last_success))
        facts.append(f"last good poll {_e(ago)} ago")
    elif state.polls == 0:
        facts.append("not polled yet")
    else:
        facts.append("never polled successfully")
    if state.finished:
        facts.append("finished, no longer polled")
    error = ""
    if state.failing and state.last_error:
        error = f'<p class="error">Last poll failed: {_e(state.last_error)}</p>'
    rows = "".join(_node_row(node, now) for node in state.tree.nodes) if state.tree else ""
    tree = f'<ol class="tree">{rows}</ol>' if rows else ""
    phase = root.phase if root is not None else None
    css = _PHASE_CLASSES.get(phase or "", "other")
    return (
        f'<section class="job {css}" id="job-{_e(state.job_id)}" data-job-id="{_e(state.job_id)}">'
        f"<h2>{_phase_badge(phase) if root is not None else ''} {title}{name}</h2>"
        f'<div class="id">{_e(state.job_id)}</div>'
        f'<p class="facts">{" · ".join(facts)}</p>{error}{tree}</section>'
    )


_STYLE = """
:root{--init:#8e8e8e;--running:#1f78d1;--success:#2e9e44;--failed:#d63d3d;--other:#b58100}
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;padding:1em;
background:#f5f6f8;color:#1d2327;line-height:1.4;overflow-wrap:anywhere}
main{max-width:60em;margin:0 auto}
h1{font-size:1.4em;margin:0 0 .3em}
h2{font-size:1.1em;margin:0}
.summary{margin:.2em 0 1em}
.job{background:#fff;border-radius:8px;padding:.8em 1em;margin:0 0 1em;
border-left:6px solid var(--other);box-shadow:0 1px 2px #0002}
.job.init{border-left-color:var(--init)}.job.running{border-left-color:var(--running)}
.job.success{border-left-color:var(--success)}.job.failed{border-left-color:var(--failed)}
.phase{display:inline-block;border-radius:4px;padding:0 .45em;color:#fff;font-size:.85em;
font-weight:600;background:var(--other)}
.phase.init{background:var(--init)}.phase.running{background:var(--running)}
.phase.success{background:var(--success)}.phase.failed{background:var(--failed)}
.id{font-family:ui-monospace,monospace;font-size:.8em;color:#5b6570;overflow-wrap:anywhere}
.facts{margin:.4em 0;color:#3c434a;font-size:.9em;overflow-wrap:anywhere}
.muted{color:#5b6570;font-size:.9em}
.error{background:#fdecea;color:#8a1f11;padding:.4em .6em;border-radius:4px;
overflow-wrap:anywhere;margin:.4em 0}
.reason{color:#8a1f11;font-size:.9em;overflow-wrap:anywhere}
.tree{list-style:none;padding:0;margin:.5em 0 0}
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


def render_html(states: Iterable[JobState], project_id: str, now: float) -> str:
    """Render the whole `/jobs` page."""
    jobs = ordered(states)
    counts = dict.fromkeys(PHASES, 0)
    failing = 0
    for state in jobs:
        if state.tree is not None and state.tree.root.phase:
            phase = state.tree.root.phase
            counts[phase] = counts.get(phase, 0) + 1
        failing += state.failing
    summary = ", ".join(f"{count} {_e(phase)}" for phase, count in counts.items() if count)
    if failing:
        summary += f"{', ' if summary else ''}{failing} with failing polls"
    body = "".join(_job_section(state, now) for state in jobs)
    if not jobs:
        body = '<p class="empty">No jobs are watched.</p>'
    project = f" in project {_e(project_id)}" if project_id else ""
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
        f"<title>CCE jobs</title><style>{_STYLE}</style></head><body><main>"
        f"<h1>CCE jobs{project}</h1>"
        f'<p class="summary">{len(jobs)} watched job(s){": " + summary if summary else ""}. '
        f'As of {_e(iso_time(now))}. <a href="api/v1/jobs">JSON</a> · <a href="./">home</a></p>'
        f"{body}<footer>Reloads every {REFRESH_SECONDS} s.</footer></main></body></html>\n"
    )


def _html_body(states: tuple[JobState, ...], project_id: str, now: float) -> bytes:
    return render_html(states, project_id, now).encode()


def _json_body(states: tuple[JobState, ...], project_id: str, now: float) -> bytes:
    return json.dumps(jobs_json(states, project_id, now)).encode()


class StatusViews:
    """Both views, built off the event loop, one build at a time, kept per snapshot of the store.

    Job states never change, so a view of the very same states is served
    again (for up to `VIEW_MAX_AGE` seconds) at no cost; a request that finds
    a build under way waits for it. A view of thousands of large trees takes
    a while to build: in a thread, it cannot hold up a scrape.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        # One build at a time, of either view: a thread that builds takes its
        # share of the interpreter from the event loop.
        self._lock = asyncio.Lock()
        self._built: dict[str, tuple[tuple[JobState, ...], float, bytes]] = {}

    async def html(self, states: Iterable[JobState], project_id: str) -> bytes:
        """Return the `/jobs` page of these states, UTF-8."""
        return await self._view("html", _html_body, tuple(states), project_id)

    async def json(self, states: Iterable[JobState], project_id: str) -> bytes:
        """Return the `/api/v1/jobs` document of these states, UTF-8."""
        return await self._view("json", _json_body, tuple(states), project_id)

    async def _view(
        self,
        kind: str,
        build: Callable[[tuple[JobState, ...], str, float], bytes],
        states: tuple[JobState, ...],
        project_id: str,
    ) -> bytes:
        async with self._lock:
            built = self._built.get(kind)
            now = self._clock()
            if (
                built is not None
                and len(built[0]) == len(states)
                and all(map(operator.is_, built[0], states))
                and 0 <= now - built[1] < VIEW_MAX_AGE
            ):
                return built[2]
            body = await asyncio.to_thread(build, states, project_id, now)
            self._built[kind] = (states, now, body)
            return body
