"""The cluster lists of the stand-in CCE API: CCE (`/api/v3`) and Autopilot (`/autopilot/v3`).

`FakeClusters` is plugged into `FakeCCE`'s application; its lists start empty.
"""

import json
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

KINDS = ("cce", "autopilot")
_ROOTS = {"cce": "api", "autopilot": "autopilot"}

Refusal = Callable[[web.Request], web.Response | None]


def cluster_object(
    cluster_id: str,
    name: str,
    *,
    phase: str = "Available",
    category: str = "CCE",
    cluster_type: str = "VirtualMachine",
    flavor: str = "cce.s2.small",
    version: str = "v1.28",
) -> dict[str, Any]:
    """Build one item of a cluster list, as ListClusters answers it."""
    return {
        "kind": "Cluster",
        "apiVersion": "v3",
        "metadata": {
            "name": name,
            "uid": cluster_id,
            "alias": "",
            "labels": {"FeatureGates": "elbv3,"},
            "creationTimestamp": "2023-05-04 08:10:12.123456 +0000 UTC",
            "updateTimestamp": "2025-02-01 10:00:00.000001 +0000 UTC",
        },
        "spec": {
            "category": category,
            "type": cluster_type,
            "flavor": flavor,
            "version": version,
            "platformVersion": "cce.10.0",
            "description": "",
            "billingMode": 0,
        },
        "status": {"phase": phase, "jobID": "", "reason": "", "message": "", "endpoints": []},
    }


class FakeClusters:
    """Serves each kind's `items` (any JSON values, bad ones too), or the kind's `fault`.

    `fault[kind]` is (status, JSON body): that kind's list answers it until it is removed.
    """

    def __init__(self) -> None:
        self.items: dict[str, list[Any]] = {kind: [] for kind in KINDS}
        self.fault: dict[str, tuple[int, str]] = {}
        self.requests: Counter[str] = Counter()

    def add(self, cluster_id: str, name: str, *, kind: str = "cce", **fields: str) -> None:
        """List a cluster (see `cluster_object` for the fields)."""
        self.items[kind].append(cluster_object(cluster_id, name, **fields))

    def remove(self, cluster_id: str) -> None:
        """List a cluster no more, whichever its kind."""
        for kind in KINDS:
            self.items[kind] = [item for item in self.items[kind] if _uid(item) != cluster_id]

    def set_phase(self, cluster_id: str, phase: str) -> None:
        """Move a listed cluster to another phase."""
        for kind in KINDS:
            for item in self.items[kind]:
                if _uid(item) == cluster_id:
                    item["status"]["phase"] = phase

    def add_routes(self, app: web.Application, refusal: Refusal) -> None:
        """Serve both lists in `app`, behind the same refusals as the job routes."""
        for kind in KINDS:
            path = f"/{_ROOTS[kind]}/v3/projects/{{project_id}}/clusters"
            app.router.add_get(path, self._handler(kind, refusal))

    def _handler(
        self, kind: str, refusal: Refusal
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def list_clusters(request: web.Request) -> web.Response:
            self.requests[kind] += 1
            refused = refusal(request)
            if refused is not None:
                return refused
            status, body = self.fault.get(kind, (200, ""))
            if not body:
                listed = {"kind": "Cluster", "apiVersion": "v3", "items": self.items[kind]}
                body = json.dumps(listed)
            return web.Response(status=status, text=body, content_type="application/json")

        return list_clusters


def _uid(item: Any) -> Any:
    metadata = item.get("metadata") if isinstance(item, dict) else None
    return metadata.get("uid") if isinstance(metadata, dict) else None
