"""``/v1/files``: OpenAI's Files API (upload, list, retrieve, delete, content) over ``files.FileStore``.

Every operation is within the caller's team: another team's file id is a 404, as if it did not exist.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from strata.errors import InvalidRequest, NotFound, PayloadTooLarge
from strata.files.store import FileStore
from strata.gateway.resource import blocking, endpoint, listing, page
from strata.gateway.state import AppState
from strata.governance.keys import Principal


def store_of(state: AppState) -> FileStore:
    if state.files is None:
        raise NotFound("The Files API is not enabled on this gateway.", code="unknown_url")
    return state.files


async def upload(request: Request, state: AppState, principal: Principal) -> dict[str, Any]:
    """multipart/form-data with ``file`` and ``purpose``."""
    files = store_of(state)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > files.max_bytes + 64 * 1024:
        raise PayloadTooLarge(f"The upload is {declared} bytes; the file limit is {files.max_bytes} bytes.",
                              param="file")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequest("Upload a file as multipart/form-data with the fields file and purpose.", param="file")
    try:
        form = await request.form(max_files=1, max_fields=8)
    except Exception as exc:  # a malformed multipart body: python-multipart's or Starlette's parse error
        raise InvalidRequest(f"Could not parse the multipart body: {exc}", param="file") from None
    try:
        item, purpose = form.get("file"), form.get("purpose")
        if not isinstance(item, UploadFile):
            raise InvalidRequest("Missing the file field (multipart/form-data).", param="file",
                                 code="missing_required_parameter")
        if not isinstance(purpose, str) or not purpose:
            raise InvalidRequest("Missing the purpose field.", param="purpose", code="missing_required_parameter")
        if item.size is not None and item.size > files.max_bytes:
            raise PayloadTooLarge(f"The file is {item.size} bytes; the limit is {files.max_bytes} bytes.",
                                  param="file")
        content = await item.read()
        out: dict[str, Any] = await blocking(files.create, principal.team, principal.key_id,
                                             item.filename or "upload", purpose, content)
        return out
    finally:
        await form.close()


async def list_files(request: Request, state: AppState, principal: Principal) -> dict[str, Any]:
    limit, after, order = page(request, default_limit=10000, max_limit=10000)
    data, more = await blocking(store_of(state).list, principal.team, purpose=request.query_params.get("purpose"),
                                limit=limit, after=after, order=order)
    return listing(data, more)


async def retrieve(request: Request, state: AppState, principal: Principal) -> dict[str, Any]:
    out: dict[str, Any] = await blocking(store_of(state).get, principal.team, request.path_params["file_id"])
    return out


async def remove(request: Request, state: AppState, principal: Principal) -> dict[str, Any]:
    file_id = request.path_params["file_id"]
    await blocking(store_of(state).delete, principal.team, file_id)
    return {"id": file_id, "object": "file", "deleted": True}


async def content(request: Request, state: AppState, principal: Principal) -> Response:
    obj, data = await blocking(store_of(state).read, principal.team, request.path_params["file_id"])
    return Response(data, media_type="application/octet-stream",
                    headers={"content-disposition": f'attachment; filename="{_ascii(obj["filename"])}"'})


def _ascii(name: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name)


routes = [
    Route("/v1/files", endpoint(upload), methods=["POST"]),
    Route("/v1/files", endpoint(list_files), methods=["GET"]),
    Route("/v1/files/{file_id}", endpoint(retrieve), methods=["GET"]),
    Route("/v1/files/{file_id}", endpoint(remove), methods=["DELETE"]),
    Route("/v1/files/{file_id}/content", endpoint(content), methods=["GET"]),
]
