"""A stand-in CCE API for the polling benchmarks: every job is running, every answer takes LATENCY.

Run as its own process (the benchmark starts it), so that its CPU does not
count against the exporter's: `python benchmarks/standin.py --latency 0.05`.
`--moves 0.01` makes only that share of the answers new (a new update time):
the others repeat the job's previous answer byte for byte.
It prints the port it listens on (loopback, chosen by the system) and serves
until its standard input closes.
"""

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import web

# The job objects are built by the tests' stand-ins (tests/standins/jobs.py):
# the repository's root is importable however this script is started.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.standins.jobs import go_time, job_object


def running_job(job_id: str, subjobs: int, created: float) -> dict[str, Any]:
    """Build a running v3 job with `subjobs` sub-jobs, some done, one running."""
    phases = ["Success"] * (subjobs // 2) + ["Running"] + ["Initializing"] * subjobs
    steps = [
        job_object(
            f"{job_id}-s{n}",
            phases[n],
            job_type=f"Step{n}",
            cluster="7ec8b73d-83db-11f0-8baa",
            created=created,
            updated=created + 60 + n,
        )
        for n in range(subjobs)
    ]
    return job_object(
        job_id,
        "Running",
        steps,
        job_type="CreateCluster",
        cluster="7ec8b73d-83db-11f0-8baa-0255ac10003e",
        created=created,
        updated=created + 120,
        resource_name="cluster-a",
        resource_id="3b4410fa-87e6-11f0-be88-0255ac10003f",
        extend_param={"orderID": "CS25090218238EI5V"},
        reason="",
    )


async def main() -> None:
    """Serve until standard input closes."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--subjobs", type=int, default=10)
    parser.add_argument("--moves", type=float, default=1.0, help="share of answers that are new")
    args = parser.parse_args()
    created = time.time() - 600
    marker = "UPDATED-AT"
    bodies: dict[str, tuple[bytes, bytes]] = {}
    last: dict[str, bytes] = {}
    rng = random.Random(3)  # noqa: S311 - which answers move on, not cryptography

    async def show_job(request: web.Request) -> web.Response:
        job_id = request.match_info["job_id"]
        parts = bodies.get(job_id)
        if parts is None:
            job = running_job(job_id, args.subjobs, created)
            job["metadata"]["updateTimestamp"] = marker
            head, _, tail = json.dumps(job).encode().partition(marker.encode())
            parts = bodies[job_id] = (head, tail)
        # A running job moves on: its update time is new at every answer (or
        # at that share of them; the others repeat the job's last answer).
        body = last.get(job_id)
        if body is None or rng.random() < args.moves:
            body = last[job_id] = parts[0] + go_time(time.time()).encode() + parts[1]
        if args.latency > 0:
            await asyncio.sleep(args.latency)
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/v3/projects/{project}/jobs/{job_id}", show_job)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
