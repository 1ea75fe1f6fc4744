"""The HTTP server: /metrics, /healthz, /readyz, the job status views and a landing page."""

import html
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from aiohttp import web

from exporter import __version__
from exporter.jobs.clusters import EMPTY_DIRECTORY, ClusterDirectory
from exporter.jobs.ids import is_valid_id
from exporter.jobs.state import JobStore
from exporter.metrics.exposition import OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE, Renderer
from exporter.server.statuspage import CONTENT_SECURITY_POLICY, Body, Filters, StatusViews
from exporter.watch.clusters import Clusters


@dataclass(frozen=True, slots=True)
class WebContext:
    """What the HTTP handlers read: the store, its renderer, readiness."""

    store: JobStore
    renderer: Renderer
    ready: Callable[[], bool]
    project_id: str = ""
    views: StatusViews = field(default_factory=StatusViews)
    # The cluster lists as last read: names on /jobs, and its cluster filter by name.
    clusters: Clusters | None = None

    @property
    def directory(self) -> ClusterDirectory:
        """The latest cluster directory (empty without a cluster refresher)."""
        return self.clusters.directory if self.clusters is not None else EMPTY_DIRECTORY


_CONTEXT = web.AppKey("context", WebContext)

_LANDING = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>CCE job exporter</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40em; margin: 2em auto">
<h1>CCE job exporter</h1>
<p>Version {version}. Watching {jobs} job(s).</p>
<ul>
<li><a href="metrics">/metrics</a>: the metrics, for Prometheus</li>
<li><a href="healthz">/healthz</a>: 200 while the process runs</li>
<li><a href="readyz">/readyz</a>: 200 once every watched job has been polled</li>
<li><a href="jobs">/jobs</a>: the watched jobs, for people</li>
<li><a href="api/v1/jobs">/api/v1/jobs</a>: the same as JSON</li>
</ul>
</body></html>
"""


def _weights(header: str) -> list[tuple[str, float]]:
    """Read an Accept or Accept-Encoding header: each element in lower case, with its q."""
    weights = []
    for element in header.split(","):
        name, *params = (piece.strip() for piece in element.split(";"))
        if not name:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0  # a weight that does not parse accepts nothing
                if not 0 <= q <= 1:  # nan and out of range too
                    q = 0.0
        weights.append((name.lower(), q))
    return weights


def wants_openmetrics(accept: str) -> bool:
    """Tell whether the scraper asks for OpenMetrics, and likes it at least as well as text."""
    weights = _weights(accept)
    openmetrics = max(
        (q for name, q in weights if name == "application/openmetrics-text"), default=0
    )
    text = max((q for name, q in weights if name == "text/plain"), default=0)
    return openmetrics > 0 and openmetrics >= text


def wants_gzip(accept_encoding: str) -> bool:
    """Tell whether the scraper accepts a gzip body (by name, or by `*`)."""
    weights = dict(_weights(accept_encoding))
    return weights.get("gzip", weights.get("*", 0)) > 0


# Bodies are sent in writes of at most this size, joined from small cached
# pieces or sliced from a large one, and each write waits for the client to
# take the one before: a client that reads slowly, or not at all, holds about
# this much of its own, never a copy of the body (a cached body is shared).
WRITE_BYTES = 1 << 16


async def send_pieces(
    request: web.Request, headers: dict[str, str], pieces: Iterable[bytes], size: int
) -> web.StreamResponse:
    """Send a body given as pieces (`size` bytes in all) without copying it whole."""
    response = web.StreamResponse(headers=headers)
    response.content_length = size
    await response.prepare(request)
    batch: list[bytes] = []
    batched = 0
    for piece in pieces:
        if len(piece) > WRITE_BYTES:
            if batch:
                await response.write(b"".join(batch))
                batch, batched = [], 0
            view = memoryview(piece)
            for start in range(0, len(view), WRITE_BYTES):
                await response.write(view[start : start + WRITE_BYTES])
            continue
        batch.append(piece)
        batched += len(piece)
        if batched >= WRITE_BYTES:
            await response.write(b"".join(batch))
            batch, batched = [], 0
    if batch:
        await response.write(b"".join(batch))
    await response.write_eof()
    return response


async def metrics(request: web.Request) -> web.StreamResponse:
    """Serve the exposition, rendered from the stored job states."""
    context = request.app[_CONTEXT]
    openmetrics = wants_openmetrics(request.headers.get("Accept", ""))
    content_type = OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE
    headers = {"Content-Type": content_type, "Vary": "Accept, Accept-Encoding"}
    gzip = wants_gzip(request.headers.get("Accept-Encoding", ""))
    if gzip:
        headers["Content-Encoding"] = "gzip"
    # The body is taken now, in one go: one consistent view of the store.
    body = context.renderer.body(context.store, openmetrics=openmetrics, gzip=gzip)
    return await send_pieces(request, headers, body, len(body))


async def healthz(_request: web.Request) -> web.Response:
    """Answer 200 while the process runs."""
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    """Answer 200 once every watched job has been polled at least once, else 503."""
    context = request.app[_CONTEXT]
    if context.ready():
        return web.Response(text="ready\n")
    waiting = sum(1 for state in context.store if state.polls == 0)
    return web.Response(status=503, text=f"not ready: {waiting} job(s) not polled yet\n")


async def landing(request: web.Request) -> web.Response:
    """Serve a small page that links the others."""
    context = request.app[_CONTEXT]
    page = _LANDING.format(version=html.escape(__version__), jobs=len(context.store))
    return web.Response(text=page, content_type="text/html")


def _filters(request: web.Request) -> Filters:
    query = request.query
    return Filters.from_query(
        {name: query.getall(name, []) for name in ("target", "phase", "type", "cluster", "q")}
    )


def _page_number(request: web.Request) -> int:
    text = request.query.get("page", "1")
    # A page number that is not one shows the first page, as a link would.
    return int(text) if text.isdecimal() and len(text) < 7 else 1


async def _send_view(
    request: web.Request, headers: dict[str, str], body: Body
) -> web.StreamResponse:
    headers["Vary"] = "Accept-Encoding"
    gzip = wants_gzip(request.headers.get("Accept-Encoding", ""))
    if gzip:
        headers["Content-Encoding"] = "gzip"
    data = body.pick(gzipped=gzip)
    return await send_pieces(request, headers, (data,), len(data))


async def jobs_page(request: web.Request) -> web.StreamResponse:
    """Serve the status page: the watched jobs that match the filters, problems first."""
    context = request.app[_CONTEXT]
    page = await context.views.html(
        context.store,
        context.project_id,
        _filters(request),
        _page_number(request),
        context.directory,
    )
    headers = {
        "Content-Type": "text/html; charset=utf-8",
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
    }
    return await _send_view(request, headers, page)


async def jobs_api(request: web.Request) -> web.StreamResponse:
    """Serve the watched jobs that match the filters as JSON."""
    context = request.app[_CONTEXT]
    document = await context.views.json(
        context.store, context.project_id, _filters(request), context.directory
    )
    headers = {"Content-Type": "application/json; charset=utf-8"}
    return await _send_view(request, headers, document)


async def job_api(request: web.Request) -> web.StreamResponse:
    """Serve one watched job as JSON: 400 for an invalid ID, 404 when it is not watched."""
    context = request.app[_CONTEXT]
    job_id = request.match_info["job_id"]
    if not is_valid_id(job_id):
        return web.json_response({"error": "invalid job ID"}, status=400)
    state = context.store.get(job_id)
    if state is None:
        return web.json_response({"error": "the job is not watched", "job_id": job_id}, status=404)
    document = await context.views.one(state, context.project_id, context.directory)
    headers = {"Content-Type": "application/json; charset=utf-8"}
    return await _send_view(request, headers, document)


def create_app(context: WebContext) -> web.Application:
    """Build the aiohttp application."""
    app = web.Application()
    app[_CONTEXT] = context
    app.router.add_get("/", landing)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/jobs", jobs_page)
    app.router.add_get("/api/v1/jobs", jobs_api)
    app.router.add_get("/api/v1/jobs/{job_id}", job_api)
    return app
