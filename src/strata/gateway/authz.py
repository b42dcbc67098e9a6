"""The authorisation table: every operation the gateway serves -> the permission it needs and how scopes apply.

``guarded`` (``gateway.admin``) looks the request up here before running an admin handler; an operation with
no rule is refused (fail closed), and ``tests/test_rbac.py`` fails when ``/openapi.json`` lists an operation
that has no rule, so a new endpoint cannot ship unprotected.

Scope kinds (``Rule.scope``):

- ``teams``: the handler filters what it returns to the key's teams; another team's object is a 404, as if it
  did not exist (the /v1/responses rule: existence is not leaked); a write for another team is a 403.
- ``routes``: the ``{route}`` in the path must be one of the key's routes, else 403 (route names are not secret:
  operators list them).
- ``global``: the data cannot be split by team (the audit log), so a team-scoped key is refused (403).
- ``""``: scopes do not apply (engines, events, route settings are not team data).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from strata.errors import PermissionDenied
from strata.governance.keys import Principal
from strata.governance.roles import INFERENCE


@dataclass(frozen=True, slots=True)
class Rule:
    permission: str | None  # None: public (no key needed)
    scope: str = ""  # "", "teams", "routes" or "global" (see the module docstring)


PUBLIC = Rule(None)
_INFER = Rule(INFERENCE)
_ROUTE = "/admin/routes/{route}"
_VS = "/{vector_store_id}"

RULES: dict[tuple[str, str], Rule] = {
    # inference: every role has it; /v1 handlers authenticate and apply the key's allowed_routes
    ("POST", "/v1/chat/completions"): _INFER,
    ("POST", "/v1/completions"): _INFER,
    ("POST", "/v1/embeddings"): _INFER,
    ("POST", "/v1/responses"): _INFER,
    ("GET", "/v1/responses/{response_id}"): _INFER,  # own responses only
    ("GET", "/v1/models"): _INFER,
    ("GET", "/v1/models/{model}"): _INFER,
    ("POST", "/v1/feedback"): _INFER,  # own requests only (admins: any)
    # OpenAI Files and Vector Stores: every key, within its own team (another team's id is a 404)
    ("POST", "/v1/files"): _INFER,
    ("GET", "/v1/files"): _INFER,
    ("GET", "/v1/files/{file_id}"): _INFER,
    ("DELETE", "/v1/files/{file_id}"): _INFER,
    ("GET", "/v1/files/{file_id}/content"): _INFER,
    **{(m, f"/v1/vector_stores{p}"): _INFER for m, p in (
        ("POST", ""), ("GET", ""), ("GET", _VS), ("POST", _VS), ("DELETE", _VS), ("POST", f"{_VS}/files"),
        ("GET", f"{_VS}/files"), ("GET", f"{_VS}/files/{{file_id}}"), ("POST", f"{_VS}/files/{{file_id}}"),
        ("DELETE", f"{_VS}/files/{{file_id}}"), ("GET", f"{_VS}/files/{{file_id}}/content"),
        ("POST", f"{_VS}/file_batches"), ("GET", f"{_VS}/file_batches/{{batch_id}}"),
        ("POST", f"{_VS}/file_batches/{{batch_id}}/cancel"), ("GET", f"{_VS}/file_batches/{{batch_id}}/files"),
        ("POST", f"{_VS}/search"), ("POST", f"{_VS}/datasets"))},
    # keys: admins; team admins manage their teams' keys, never above their own role or scopes
    ("POST", "/admin/keys"): Rule("keys.write", "teams"),
    ("GET", "/admin/keys"): Rule("keys.read", "teams"),
    ("DELETE", "/admin/keys/{key_id}"): Rule("keys.write", "teams"),
    # reports over the ledger, filtered to the key's teams
    ("GET", "/admin/usage"): Rule("usage.read", "teams"),
    ("GET", "/admin/cost"): Rule("usage.read", "teams"),
    ("GET", "/admin/traces"): Rule("traces.read", "teams"),
    ("GET", "/admin/traces/{trace_id}"): Rule("traces.read", "teams"),
    ("GET", "/admin/quality"): Rule("usage.read", "teams"),  # online quality scores, of the key's teams
    ("GET", "/admin/quality/{request_id}"): Rule("usage.read", "teams"),
    # datasets and pipelines (strata.data): the handler checks ``team`` against the key's teams
    ("GET", "/admin/datasets"): Rule("datasets.read", "teams"),
    ("POST", "/admin/datasets"): Rule("datasets.write", "teams"),
    ("GET", "/admin/datasets/{name}"): Rule("datasets.read", "teams"),
    ("GET", "/admin/datasets/{name}/diff"): Rule("datasets.read", "teams"),
    ("GET", "/admin/datasets/{name}/versions/{version}"): Rule("datasets.read", "teams"),
    ("GET", "/admin/datasets/{name}/versions/{version}/records"): Rule("datasets.read", "teams"),
    ("GET", "/admin/pipelines/runs"): Rule("datasets.read", "teams"),
    ("POST", "/admin/pipelines/runs"): Rule("datasets.write", "teams"),
    ("GET", "/admin/pipelines/runs/{run_id}"): Rule("datasets.read", "teams"),
    ("GET", "/admin/lineage/{ref}"): Rule("datasets.read", "teams"),  # a request id or NAME@VERSION
    ("GET", "/admin/audit"): Rule("audit.read", "global"),
    ("GET", "/admin/audit/verify"): Rule("audit.read", "global"),
    ("GET", "/admin/events"): Rule("events.read"),
    ("GET", "/admin/slo"): Rule("usage.read", "global"),  # route-wide error counts of every team
    # drift reports: statistics per route (no text, no team data); baselines change like route settings
    ("GET", "/admin/drift"): Rule("events.read"),
    ("GET", "/admin/drift/{route}"): Rule("events.read"),
    ("GET", "/admin/drift/{route}/baseline"): Rule("events.read"),
    ("POST", "/admin/drift/{route}/baseline"): Rule("routes.write", "routes"),
    ("DELETE", "/admin/drift/{route}/baseline"): Rule("routes.write", "routes"),
    ("GET", "/admin/engines"): Rule("engines.read"),
    # routes and rollouts
    ("GET", "/admin/routes"): Rule("routes.read"),
    ("GET", _ROUTE): Rule("routes.read"),
    ("GET", f"{_ROUTE}/changes"): Rule("routes.read"),
    ("PATCH", _ROUTE): Rule("routes.write", "routes"),
    ("POST", f"{_ROUTE}/reset"): Rule("routes.write", "routes"),
    ("PUT", f"{_ROUTE}/deployments/{{deployment}}"): Rule("routes.write", "routes"),
    ("DELETE", f"{_ROUTE}/deployments/{{deployment}}"): Rule("routes.write", "routes"),
    ("POST", f"{_ROUTE}/canary"): Rule("rollouts.write", "routes"),
    ("POST", f"{_ROUTE}/shadow"): Rule("rollouts.write", "routes"),
    ("POST", f"{_ROUTE}/promote"): Rule("rollouts.write", "routes"),
    ("POST", f"{_ROUTE}/rollback"): Rule("rollouts.write", "routes"),
    ("GET", f"{_ROUTE}/rollout"): Rule("rollouts.read"),
    ("GET", f"{_ROUTE}/shadow"): Rule("rollouts.read"),
    # model registry and evals: operators register, move aliases and run suites; approving is an admin's
    ("GET", "/admin/registry/models"): Rule("models.read"),
    ("POST", "/admin/registry/models"): Rule("models.write"),
    ("GET", "/admin/registry/models/{model}"): Rule("models.read"),
    ("GET", "/admin/registry/models/{model}/versions/{version}"): Rule("models.read"),
    ("POST", "/admin/registry/models/{model}/versions/{version}/approve"): Rule("models.approve"),
    ("PUT", "/admin/registry/models/{model}/aliases/{alias}"): Rule("models.write"),
    ("GET", "/admin/evals/runs"): Rule("evals.read"),
    ("POST", "/admin/evals/runs"): Rule("evals.write"),
    ("GET", "/admin/evals/runs/{run_id}"): Rule("evals.read"),
    ("GET", "/admin/evals/compare"): Rule("evals.read"),
    # limits and budgets: admins; team admins see and set only their teams' (and their keys') rules
    **{(m, f"/admin/{kind}{tail}"): Rule(perm, "teams") for kind in ("limits", "budgets")
       for m, tail, perm in (("GET", "", "policies.read"), ("PUT", "", "policies.write"),
                             ("DELETE", "", "policies.write"), ("GET", "/changes", "policies.read"))},
    # public
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
}

_PATTERNS = [(m, re.compile("^" + re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(p)) + "$"), rule)
             for (m, p), rule in RULES.items()]


def rule_for(method: str, path: str) -> Rule | None:
    """The rule of the operation a concrete request path is an instance of (None: there is none)."""
    for m, pattern, rule in _PATTERNS:
        if m == method and pattern.match(path):
            return rule
    return None


def authorize(principal: Principal, method: str, path: str, path_params: dict[str, str]) -> Rule:
    """Refuse (403, naming the permission) what the key's role or scopes do not allow; return the rule, whose
    ``teams`` filtering the handler applies."""
    rule = rule_for(method, path)
    if rule is None:
        raise PermissionDenied(f"{method} {path} has no authorisation rule; refused.", code="no_authorization_rule")
    if rule.permission is not None and not principal.can(rule.permission):
        raise PermissionDenied(f"This endpoint needs the {rule.permission!r} permission; this key's role "
                               f"{principal.role!r} does not have it.", code="permission_denied")
    if rule.scope == "global" and principal.scopes.teams is not None:
        raise PermissionDenied(f"{method} {path} covers every team; this key is scoped to teams "
                               f"{', '.join(sorted(principal.scopes.teams))}.", code="scope_denied")
    if rule.scope == "routes" and not principal.scopes.route_ok(path_params.get("route", "")):
        raise PermissionDenied(f"This key may change only routes {', '.join(sorted(principal.scopes.routes or ()))}"
                               f"; not {path_params.get('route')!r}.", code="scope_denied")
    return rule
