"""A registered version in the shared lineage graph (``strata.data.lineage``): ``dataset_version -> model_version``
(trained on) and ``training_run -> model_version`` (produced), so ``lineage`` walks from a deployment's
version back to its data. Best effort: a build without the datasets package records nothing."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger(__name__)


def version_edges(view: dict[str, Any], dataset_ids: dict[str, str]) -> list[tuple[str, str, str, str, str]]:
    """(src kind, src id, dst kind, dst id, relation) of one version; a dataset ``NAME@N`` found in the datasets
    store is named by its version id (the graph's node), else as given."""
    ref = view["ref"]
    edges = [("dataset_version", dataset_ids.get(d, d), "model_version", ref, "trained_on")
             for d in view["dataset_versions"]]
    if view["run_id"]:
        edges.append(("training_run", view["run_id"], "model_version", ref, "produced"))
    return edges


def record(db: Engine, view: dict[str, Any], dataset_ids: dict[str, str] | None = None) -> int:
    try:
        from strata.data.lineage import Edge, Lineage
    except ImportError:
        return 0
    edges = [Edge(*e) for e in version_edges(view, dataset_ids or {})]
    if not edges:
        return 0
    try:
        return Lineage(db).add(edges)
    except SQLAlchemyError as exc:
        log.warning("lineage of %s not recorded: %s", view["ref"], exc)
        return 0
