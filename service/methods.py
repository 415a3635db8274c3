"""Which methods a path takes: the `Allow` header of 405 answers, and the answer to `OPTIONS`.

Starlette answers a method a path does not take with 405 and the methods of the first route whose
path matched; a path served by several routes (`GET` and `DELETE /v1/jobs/{id}`) then lists only
one route's. Here each method is tried against every route, so `Allow` lists them all, and `OPTIONS`
on a path that exists is answered 204 with that `Allow` (no CORS here: OPTIONS only asks which
methods exist).
"""

from __future__ import annotations

from typing import Any

from starlette.routing import BaseRoute, Match, Mount
from starlette.staticfiles import StaticFiles

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")  # tried in this order, listed in it
_STATIC = frozenset({"GET", "HEAD"})  # a Mount matches any method; StaticFiles serves these


def _takes(route: BaseRoute, scope: dict[str, Any], method: str) -> bool:
    match, _ = route.matches({**scope, "method": method})
    if match is not Match.FULL:
        return False
    return method in _STATIC if isinstance(route, Mount) and isinstance(route.app, StaticFiles) else True


def allowed_methods(routes: list[BaseRoute], scope: dict[str, Any]) -> list[str]:
    """Every method some route takes for the request's path, and OPTIONS; [] for an unknown path."""
    # Matched from the app's root: inside a Mount (the static assets) the scope's root_path is the mount's
    scope = {**scope, "root_path": scope.get("app_root_path", scope.get("root_path", ""))}
    allowed = [m for m in METHODS if any(_takes(route, scope, m) for route in routes)]
    return [*allowed, "OPTIONS"] if allowed else []
