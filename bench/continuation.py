"""Continued streams: how often does a stream broken after N tokens and continued on another deployment
(``continue_streams``) read as one?

One Strata process with the bundled SmolLM2 (llama.cpp) behind route ``whole``, and a route ``spliced``
whose primary is a cutting proxy in front of ``whole`` (it relays the stream, then drops the connection
after N content chunks) and whose fallback is ``whole`` again (Strata calling itself), so the
continuation runs on the same model. For each prompt, at temperature 0: the unbroken answer from
``whole``, then the spliced answer from ``spliced`` cut after N tokens. Same text = reads as one.
The control asks ``whole`` again: llama.cpp at temperature 0 is not bit-for-bit repeatable once the
prompt is in its cache, so an unbroken answer can differ from itself too.

    python bench/continuation.py [--cuts 4 16 32] [--max-tokens 48] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.servers import ADMIN_KEY, StrataProcess  # noqa: E402
from tests.upstreams import free_port  # noqa: E402

PROMPTS = [
    "Name three primary colours.",
    "Explain in two sentences what a hash table is.",
    "Write a haiku about the sea.",
    "What is the capital of France, and why is it famous?",
    "Give me a short recipe for pancakes.",
    "List the first five prime numbers and say why 1 is not prime.",
    "Describe a cat to someone who has never seen one.",
    "Why is the sky blue? Answer briefly.",
    "Write one sentence of advice for a new programmer.",
    "Summarise the plot of Romeo and Juliet in two sentences.",
]


class Cutter:
    """The primary: relays ``whole``'s stream and drops the connection after ``cut`` content chunks."""

    def __init__(self, strata: str) -> None:
        self.strata, self.cut, self.port = strata, 0, free_port()

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = {**await request.json(), "model": "whole"}
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        sent = 0
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as s, \
                s.post(self.strata + "/v1/chat/completions", json=body) as r:
            async for line in r.content:
                await resp.write(line)
                if line.startswith(b"data: {") and json.loads(line[6:]).get("choices", [{}])[0].get(
                        "delta", {}).get("content"):
                    sent += 1
                    if sent >= self.cut:
                        assert request.transport is not None
                        request.transport.abort()
                        return resp
        return resp

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "whole", "object": "model"}]})

    async def start(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", self.models)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        return runner


def config(strata_port: int, cut_port: int) -> dict[str, Any]:
    local = {"type": "llamacpp", "model": "bundled:smollm2"}
    itself = {"type": "openai", "base_url": f"http://127.0.0.1:{strata_port}/v1", "model": "whole",
              "api_key": ADMIN_KEY, "read_timeout": 120}
    cutter = {"type": "openai", "base_url": f"http://127.0.0.1:{cut_port}/v1", "model": "whole", "read_timeout": 120}
    return {"routes": [
        {"name": "whole", "deployments": [{"name": "local", "engine": local}]},
        {"name": "spliced", "continue_streams": True, "retries": 0,  # the cutter is never ejected:
         "breaker": {"consecutive_failures": 1_000_000, "min_requests": 1_000_000},
         "deployments": [{"name": "cutter", "engine": cutter},
                         {"name": "again", "role": "fallback", "engine": itself}]},
    ]}


async def answer(s: aiohttp.ClientSession, url: str, model: str, prompt: str, max_tokens: int) -> tuple[str, bool]:
    """The streamed text, and whether the stream said it was continued."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "stream": True,
            "temperature": 0, "max_tokens": max_tokens}
    text, continued = [], False
    async with s.post(url + "/v1/chat/completions", json=body) as r:
        assert r.status == 200, await r.text()
        async for line in r.content:
            continued |= line.startswith(b": strata-continued")
            if line.startswith(b"data: {"):
                chunk = json.loads(line[6:])
                assert "error" not in chunk, chunk
                for c in chunk.get("choices", []):
                    text.append(c["delta"].get("content") or "")
    return "".join(text), continued


async def run(cuts: list[int], max_tokens: int) -> dict[str, Any]:
    proc = StrataProcess(Path(tempfile.mkdtemp(prefix="bench-continuation-")))
    cutter = Cutter(proc.url)
    proc.config = config(proc.port, cutter.port)
    runner = await cutter.start()
    await asyncio.to_thread(proc.start, 300)
    results: dict[str, Any] = {"prompts": len(PROMPTS), "max_tokens": max_tokens, "cuts": {}}
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                                         timeout=aiohttp.ClientTimeout(total=300)) as s:
            whole = [(await answer(s, proc.url, "whole", p, max_tokens))[0] for p in PROMPTS]
            again = [(await answer(s, proc.url, "whole", p, max_tokens))[0] for p in PROMPTS]
            results["control_same"] = sum(a == b for a, b in zip(whole, again, strict=True))
            print(f"control (unbroken twice): {results['control_same']}/{len(PROMPTS)} the same", flush=True)
            for cut in cuts:
                cutter.cut = cut
                same = marked = same_continued = 0
                examples: list[dict[str, str]] = []
                for prompt, unbroken in zip(PROMPTS, whole, strict=True):
                    spliced, continued = await answer(s, proc.url, "spliced", prompt, max_tokens)
                    marked += continued
                    same += spliced == unbroken
                    same_continued += continued and spliced == unbroken
                    if spliced != unbroken and len(examples) < 2:
                        examples.append({"unbroken": unbroken, "spliced": spliced})
                results["cuts"][cut] = {"same": same, "continued": marked, "continued_same": same_continued,
                                        "differs": examples}
                print(f"cut after {cut:>3} tokens: {same}/{len(PROMPTS)} the same as unbroken; of the "
                      f"{marked} continued (answer longer than the cut), {same_continued} read as one", flush=True)
    finally:
        proc.stop()
        await runner.cleanup()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cuts", type=int, nargs="+", default=[4, 16, 32])
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    results = asyncio.run(run(args.cuts, args.max_tokens))
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
