"""The status page for people (`/jobs`) and its JSON twin (`/api/v1/jobs`).

Both are views of the store's job states at one moment: `model` says what
they show, `page` draws the HTML, `views` builds and keeps them, `stuck`
holds the thresholds of the `CCEJobStuck` alert.
"""

from exporter.server.statuspage.model import (
    Filters,
    Group,
    iso_time,
    job_document,
    job_json,
    jobs_json,
    node_duration,
    ordered,
)
from exporter.server.statuspage.page import (
    CONTENT_SECURITY_POLICY,
    PAGE_SIZE,
    human_duration,
    render_html,
)
from exporter.server.statuspage.stuck import DEFAULT_STUCK_THRESHOLD, STUCK_THRESHOLDS
from exporter.server.statuspage.views import VIEW_MAX_AGE, Body, StatusViews

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "DEFAULT_STUCK_THRESHOLD",
    "PAGE_SIZE",
    "STUCK_THRESHOLDS",
    "VIEW_MAX_AGE",
    "Body",
    "Filters",
    "Group",
    "StatusViews",
    "human_duration",
    "iso_time",
    "job_document",
    "job_json",
    "jobs_json",
    "node_duration",
    "ordered",
    "render_html",
]
