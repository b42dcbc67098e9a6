"""``/v1/vector_stores``: OpenAI's Vector Stores API (stores, their files, file batches, search) over
``files.VectorStores``, so ``client.vector_stores`` of the official SDK works unmodified.

Everything is within the caller's team (another team's id is a 404); search runs as the caller
(``gateway.caller``): the key's team and id, plus the end user a trusted key asserts.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.routing import Route

from strata.errors import NotFound
from strata.files.file_batches import FileBatches
from strata.files.vector_stores import VectorStores
from strata.gateway.caller import reader
from strata.gateway.http import read_json, request_id_of
from strata.gateway.resource import blocking, endpoint, listing, page
from strata.gateway.schemas import validate
from strata.gateway.state import AppState
from strata.governance.keys import Principal

BODY_LIMIT = 1024 * 1024
Attributes = dict[str, str | float | bool]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateVectorStore(_Body):
    name: str | None = Field(None, max_length=500)
    file_ids: list[str] | None = Field(None, max_length=500)
    metadata: dict[str, str] | None = None
    chunking_strategy: dict[str, Any] | None = None
    expires_after: dict[str, Any] | None = None
    description: str | None = None


class UpdateVectorStore(_Body):
    name: str | None = Field(None, max_length=500)
    metadata: dict[str, str] | None = None
    expires_after: dict[str, Any] | None = None


class CreateVectorStoreFile(_Body):
    file_id: str = Field(min_length=1, max_length=64)
    attributes: Attributes | None = None
    chunking_strategy: dict[str, Any] | None = None


class UpdateVectorStoreFile(_Body):
    attributes: Attributes


class CreateFileBatch(_Body):
    file_ids: list[str] | None = Field(None, min_length=1, max_length=500)
    files: list[CreateVectorStoreFile] | None = Field(None, min_length=1, max_length=500)
    attributes: Attributes | None = None
    chunking_strategy: dict[str, Any] | None = None


class IngestDataset(_Body):
    dataset: str = Field(min_length=1, max_length=400, description="NAME@VERSION (or NAME: the newest published) "
                         "of the key's team; its records with text/content, name, media_type (and acl) fields")


class RankingOptions(_Body):
    ranker: str | None = None
    score_threshold: float | None = Field(None, ge=0, le=1)


class SearchVectorStore(_Body):
    query: str | list[str] = Field(min_length=1)
    max_num_results: int = Field(10, ge=1, le=50)
    filters: dict[str, Any] | None = None
    ranking_options: RankingOptions | None = None
    rewrite_query: bool = False
    mode: Literal["hybrid", "dense", "lexical"] = "hybrid"  # Strata's: which ranking (OpenAI's is hybrid)


def stores_of(state: AppState) -> VectorStores:
    if state.vector_stores is None:
        raise NotFound("Vector stores are not enabled on this gateway.", code="unknown_url")
    stores: VectorStores = state.vector_stores
    return stores


async def body_of(request: Request, schema: type[BaseModel]) -> dict[str, Any]:
    model = validate(schema, await read_json(request, BODY_LIMIT))
    return model.model_dump(exclude_unset=True, mode="json")


def _vs(request: Request) -> str:
    return str(request.path_params["vector_store_id"])


async def create_store(request: Request, state: AppState, principal: Principal) -> Any:
    body = await body_of(request, CreateVectorStore)
    return await stores_of(state).create(principal.team, principal.key_id, body)


async def list_stores(request: Request, state: AppState, principal: Principal) -> Any:
    limit, after, order = page(request)
    return listing(*await blocking(stores_of(state).list_stores, principal.team, limit, after, order))


async def get_store(request: Request, state: AppState, principal: Principal) -> Any:
    return await blocking(stores_of(state).get, principal.team, _vs(request))


async def modify_store(request: Request, state: AppState, principal: Principal) -> Any:
    body = await body_of(request, UpdateVectorStore)
    return await blocking(stores_of(state).modify, principal.team, _vs(request), body)


async def delete_store(request: Request, state: AppState, principal: Principal) -> Any:
    await stores_of(state).delete(principal.team, _vs(request))
    return {"id": _vs(request), "object": "vector_store.deleted", "deleted": True}


async def create_file(request: Request, state: AppState, principal: Principal) -> Any:
    body = await body_of(request, CreateVectorStoreFile)
    return await stores_of(state).add_file(principal.team, principal.key_id, _vs(request), body)


async def list_files(request: Request, state: AppState, principal: Principal) -> Any:
    limit, after, order = page(request)
    return listing(*await blocking(stores_of(state).list_files, principal.team, _vs(request), limit, after, order,
                                   request.query_params.get("filter")))


async def get_file(request: Request, state: AppState, principal: Principal) -> Any:
    return await blocking(stores_of(state).get_file, principal.team, _vs(request), request.path_params["file_id"])


async def update_file(request: Request, state: AppState, principal: Principal) -> Any:
    body = await body_of(request, UpdateVectorStoreFile)
    return await blocking(stores_of(state).update_file, principal.team, _vs(request), request.path_params["file_id"],
                          body["attributes"])


async def delete_file(request: Request, state: AppState, principal: Principal) -> Any:
    file_id = request.path_params["file_id"]
    await stores_of(state).remove_file(principal.team, _vs(request), file_id)
    return {"id": file_id, "object": "vector_store.file.deleted", "deleted": True}


async def file_content(request: Request, state: AppState, principal: Principal) -> Any:
    """The file's parsed text (what was chunked)."""
    from strata.rag.parse import parse_document

    stores = stores_of(state)
    await blocking(stores.get_file, principal.team, _vs(request), request.path_params["file_id"])
    obj, content = await blocking(stores.files.read, principal.team, request.path_params["file_id"])
    doc = await blocking(parse_document, obj["filename"], content, None)
    return {"object": "vector_store.file_content.page", "data": [{"type": "text", "text": doc.text}],
            "has_more": False, "next_page": None}


async def create_batch(request: Request, state: AppState, principal: Principal) -> Any:
    body = await body_of(request, CreateFileBatch)
    return await FileBatches(stores_of(state)).create(principal.team, principal.key_id, _vs(request), body)


async def get_batch(request: Request, state: AppState, principal: Principal) -> Any:
    return await blocking(FileBatches(stores_of(state)).get, principal.team, _vs(request),
                          request.path_params["batch_id"])


async def cancel_batch(request: Request, state: AppState, principal: Principal) -> Any:
    return await FileBatches(stores_of(state)).cancel(principal.team, _vs(request), request.path_params["batch_id"])


async def batch_files(request: Request, state: AppState, principal: Principal) -> Any:
    limit, after, order = page(request)
    batches = FileBatches(stores_of(state))
    await blocking(batches.get, principal.team, _vs(request), request.path_params["batch_id"])
    return listing(*await blocking(batches.stores.list_files, principal.team, _vs(request), limit, after, order,
                                   request.query_params.get("filter"), request.path_params["batch_id"]))


async def ingest_dataset(request: Request, state: AppState, principal: Principal) -> Any:
    """Strata's own: a dataset version's documents into the store (lineage: record -> document)."""
    from strata.data.store import parse_ref
    from strata.pipeline.record import CallRecord

    body = await body_of(request, IngestDataset)
    if state.data is None:
        raise NotFound("datasets are not enabled on this gateway", code="datasets_disabled")
    name, version = parse_ref(body["dataset"])
    v = await blocking(state.data.store.get_version, principal.team, name, version)
    parent = CallRecord(request_id_of(request, state.new_id), "vector_stores.datasets")
    parent.principal = principal
    report = await stores_of(state).ingest_dataset(principal.team, _vs(request), v, parent)
    return {"object": "vector_store.dataset_ingest", "vector_store_id": _vs(request), "dataset": v.ref, **report}


async def search(request: Request, state: AppState, principal: Principal) -> Any:
    req: SearchVectorStore = validate(SearchVectorStore, await read_json(request, BODY_LIMIT))
    queries = [req.query] if isinstance(req.query, str) else req.query
    who = reader(principal, request.headers)
    hits = await stores_of(state).search(principal.team, [_vs(request)], " ".join(queries), who,
                                         k=req.max_num_results, filters=req.filters, mode=req.mode)
    threshold = req.ranking_options.score_threshold if req.ranking_options else None
    data = [result(h) for h in hits if threshold is None or h.score >= threshold]
    return {"object": "vector_store.search_results.page", "search_query": queries, "data": data,
            "has_more": False, "next_page": None}


def result(hit: Any) -> dict[str, Any]:
    """OpenAI's search result for a ``rag.service.Hit`` (the document id is the file id)."""
    return {"file_id": hit.document_id, "filename": hit.document_name, "score": hit.score,
            "attributes": hit.attributes or {}, "content": [{"type": "text", "text": hit.text}]}


_VS = "/v1/vector_stores/{vector_store_id}"
routes = [
    Route("/v1/vector_stores", endpoint(create_store), methods=["POST"]),
    Route("/v1/vector_stores", endpoint(list_stores), methods=["GET"]),
    Route(_VS, endpoint(get_store), methods=["GET"]),
    Route(_VS, endpoint(modify_store), methods=["POST"]),
    Route(_VS, endpoint(delete_store), methods=["DELETE"]),
    Route(f"{_VS}/files", endpoint(create_file), methods=["POST"]),
    Route(f"{_VS}/files", endpoint(list_files), methods=["GET"]),
    Route(f"{_VS}/files/{{file_id}}", endpoint(get_file), methods=["GET"]),
    Route(f"{_VS}/files/{{file_id}}", endpoint(update_file), methods=["POST"]),
    Route(f"{_VS}/files/{{file_id}}", endpoint(delete_file), methods=["DELETE"]),
    Route(f"{_VS}/files/{{file_id}}/content", endpoint(file_content), methods=["GET"]),
    Route(f"{_VS}/file_batches", endpoint(create_batch), methods=["POST"]),
    Route(f"{_VS}/file_batches/{{batch_id}}", endpoint(get_batch), methods=["GET"]),
    Route(f"{_VS}/file_batches/{{batch_id}}/cancel", endpoint(cancel_batch), methods=["POST"]),
    Route(f"{_VS}/file_batches/{{batch_id}}/files", endpoint(batch_files), methods=["GET"]),
    Route(f"{_VS}/search", endpoint(search), methods=["POST"]),
    Route(f"{_VS}/datasets", endpoint(ingest_dataset), methods=["POST"]),
]
