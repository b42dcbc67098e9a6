"""Sentence-transformers worker: an OpenAI-compatible ``/v1/embeddings`` server on loopback."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from typing import Any

log = logging.getLogger(__name__)


def serve(port: int, spec: dict[str, Any]) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import numpy as np
    import orjson
    import torch
    import uvicorn
    from sentence_transformers import SentenceTransformer
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    model = SentenceTransformer(spec["model"], device=spec.get("device", "cpu"), local_files_only=True)
    model.encode(["warm up"])
    size = int(model.get_sentence_embedding_dimension() or 0)
    matryoshka = bool(spec.get("matryoshka"))
    lock = asyncio.Lock()

    def encode(texts: list[str]) -> tuple[Any, int]:
        tokens = sum(len(ids) for ids in model.tokenizer(texts)["input_ids"])
        vectors = model.encode(texts, batch_size=int(spec.get("batch_size", 32)), normalize_embeddings=False)
        return vectors, tokens

    def refuse(message: str) -> Response:
        err = {"message": message, "type": "invalid_request_error", "param": "dimensions",
               "code": "unsupported_parameter"}
        return JSONResponse({"error": err}, 400)

    async def embeddings(request: Request) -> Response:
        body = orjson.loads(await request.body())
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        dims = body.get("dimensions")
        if dims is not None and dims != size and (not matryoshka or not 0 < dims < size):
            return refuse(f"this model's embeddings have {size} dimensions" +
                          ("" if matryoshka else " and cannot be shortened"))
        async with lock:
            vectors, tokens = await asyncio.to_thread(encode, texts)
        if dims is not None and dims < size:  # Matryoshka: the first dims components, renormalised
            vectors = vectors[:, :dims]
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        as_b64 = body.get("encoding_format") == "base64"
        data = [{"object": "embedding", "index": i,
                 "embedding": base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode() if as_b64
                 else v.tolist()} for i, v in enumerate(vectors)]
        out = {"object": "list", "data": data, "model": body.get("model", ""),
               "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        return Response(orjson.dumps(out), media_type="application/json")

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def models(_: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": spec["model"], "object": "model",
                                                          "dimensions": size, "matryoshka": matryoshka}]})

    app = Starlette(routes=[Route("/v1/embeddings", embeddings, methods=["POST"]),
                            Route("/health", health), Route("/v1/models", models)])
    log.info("embeddings serving %s on 127.0.0.1:%d", spec["model"], port)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
