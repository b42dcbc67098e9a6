"""Logprobs on the bundled SmolLM2 through the official SDK: text completions in OpenAI's legacy shape
(``tokens``, ``token_logprobs``, ``top_logprobs`` dicts, ``text_offset`` from the prompt's start), JSON and
streamed, and chat completions in the chat shape."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.servers import StrataProcess

PROMPT = "The sky is"


@pytest.fixture
def client(model_strata: StrataProcess) -> openai.OpenAI:
    return model_strata.client().with_options(timeout=120)


def assert_legacy(lp: Any, text: str, start: int, alternatives: int) -> None:
    """The tokens spell ``text``; each has its logprob, its top alternatives (and itself) and its offset."""
    assert lp is not None and lp.tokens is not None, lp
    assert "".join(lp.tokens) == text
    assert len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == len(lp.tokens)
    offset = start
    for token, logprob, top, at in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, lp.text_offset, strict=True):
        assert isinstance(logprob, float) and logprob <= 0
        assert isinstance(top, dict) and top[token] == logprob
        assert max(alternatives, 1) <= len(top) <= alternatives + 1  # the sampled one may be extra
        assert all(isinstance(v, float) and v <= 0 for v in top.values())
        assert at == offset
        offset += len(token)


def test_text_completion_logprobs_in_the_legacy_shape(client: openai.OpenAI) -> None:
    reply = client.completions.create(model="smollm2", prompt=PROMPT, max_tokens=5, logprobs=2, temperature=0)
    choice = reply.choices[0]
    assert reply.usage is not None and choice.finish_reason == "length"
    assert choice.logprobs is not None and len(choice.logprobs.tokens or []) == reply.usage.completion_tokens == 5
    assert_legacy(choice.logprobs, choice.text, len(PROMPT), 2)
    assert "content" not in choice.logprobs.model_dump()  # not llama.cpp's chat shape


def test_zero_alternatives_still_give_each_tokens_logprob(client: openai.OpenAI) -> None:
    reply = client.completions.create(model="smollm2", prompt=PROMPT, max_tokens=3, logprobs=0, temperature=0)
    choice = reply.choices[0]
    assert_legacy(choice.logprobs, choice.text, len(PROMPT), 0)
    assert choice.logprobs is not None and len(choice.logprobs.tokens or []) == 3


def test_streamed_chunks_carry_their_own_tokens_logprobs(client: openai.OpenAI) -> None:
    stream = client.completions.create(model="smollm2", prompt=PROMPT, max_tokens=5, logprobs=2, temperature=0,
                                       stream=True)
    text, offset, tokens = "", len(PROMPT), 0
    for chunk in stream:
        choice = chunk.choices[0]
        if choice.logprobs is None:
            assert choice.text == "" and choice.finish_reason is not None
            continue
        assert_legacy(choice.logprobs, choice.text, offset, 2)
        text += choice.text
        offset += len(choice.text)
        tokens += len(choice.logprobs.tokens or [])
    assert tokens == 5 and text


def test_streamed_stop_string_tokens_spell_the_text(client: openai.OpenAI) -> None:
    """llama.cpp holds back the token that begins a stop string; it is not one of the answer's tokens."""
    full = client.completions.create(model="smollm2", prompt=PROMPT, max_tokens=8, temperature=0).choices[0].text
    stop = full.split()[2]  # " a canvas of ...": stop at the third word
    stream = client.completions.create(model="smollm2", prompt=PROMPT, max_tokens=8, logprobs=1, temperature=0,
                                       stop=[" " + stop], stream=True)
    text, tokens = "", []
    for chunk in stream:
        choice = chunk.choices[0]
        text += choice.text
        if choice.logprobs is not None:
            tokens += choice.logprobs.tokens or []
    assert text and "".join(tokens) == text


def test_chat_logprobs_keep_the_chat_shape(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Hi"}],
                                           max_tokens=3, logprobs=True, top_logprobs=2, temperature=0)
    lp = reply.choices[0].logprobs
    assert lp is not None and lp.content
    assert lp.content[0].token and len(lp.content[0].top_logprobs) == 2


PROMPTS = ["The sky is", "Once upon a time"]


def streamed_choices(stream: Any) -> tuple[dict[int, list[Any]], Any]:
    """Each choice index's chunks, and the usage of the stream's last chunk (which has no choices)."""
    by_index: dict[int, list[Any]] = {}
    usage = None
    for chunk in stream:
        assert chunk.object == "text_completion" and usage is None  # usage comes last, on its own
        if chunk.usage is not None:
            assert chunk.choices == []
            usage = chunk.usage
        for choice in chunk.choices:
            by_index.setdefault(choice.index, []).append(choice)
    return by_index, usage


def test_streamed_prompts_each_get_their_own_choice(client: openai.OpenAI) -> None:
    """llama.cpp streams several prompts in a shape of its own (a leading ``data: null``, usage per prompt)."""
    stream = client.completions.create(model="smollm2", prompt=PROMPTS, max_tokens=5, temperature=0, stream=True,
                                       stream_options={"include_usage": True})
    by_index, usage = streamed_choices(stream)
    assert sorted(by_index) == [0, 1]
    assert all("".join(c.text for c in by_index[i]) and by_index[i][-1].finish_reason == "length" for i in (0, 1))
    alone = [client.completions.create(model="smollm2", prompt=p, max_tokens=1).usage for p in PROMPTS]
    assert usage is not None and usage.completion_tokens == 10  # both prompts' tokens, not one's
    assert usage.prompt_tokens == sum(u.prompt_tokens for u in alone if u is not None)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_prompts_times_n_with_logprobs(client: openai.OpenAI, stream: bool) -> None:
    """Prompt i's sample j is choice i*n + j, with text_offset from its own prompt's start; usage sums all."""
    kw: dict[str, Any] = {"stream_options": {"include_usage": True}} if stream else {}
    reply = client.completions.create(model="smollm2", prompt=PROMPTS, max_tokens=4, n=2, logprobs=1, seed=7,
                                      stream=stream, **kw)
    if stream:
        by_index, usage = streamed_choices(reply)
    else:
        by_index, usage = {c.index: [c] for c in reply.choices}, reply.usage
    assert sorted(by_index) == [0, 1, 2, 3]
    tokens = 0
    for index, choices in by_index.items():
        offset = len(PROMPTS[index // 2])
        for choice in choices:
            if choice.logprobs is None:
                assert choice.text == "" and choice.finish_reason is not None
                continue
            assert_legacy(choice.logprobs, choice.text, offset, 1)
            offset += len(choice.text)
            tokens += len(choice.logprobs.tokens or [])
        assert choices[-1].finish_reason is not None
    assert usage is not None and usage.completion_tokens == tokens > 4
    assert usage.prompt_tokens >= 4  # each of the four calls read its prompt
