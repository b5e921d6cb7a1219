"""Tokenizers, chat templates and the tool-call parser.

One `Tokenizer` protocol over two backends -- HF `tokenizers` (pretrained checkpoints, GGUF
files) and SentencePiece (vocabularies trained here for from-scratch policies) -- with chat
templates rendered exactly as transformers renders them, and a parser that reads the policy's
`<tool_call>` blocks back with structured, countable errors. This package does not import jax.
"""

from orchestra_jax.tokenization.argument_schema import ArgumentProblem, check_arguments
from orchestra_jax.tokenization.chat_template import (
    compile_chat_template,
    normalize_messages,
    render_chat_template,
)
from orchestra_jax.tokenization.gguf_vocab import UnsupportedGGUFTokenizer
from orchestra_jax.tokenization.hf_tokenizer import HFTokenizer
from orchestra_jax.tokenization.loading import load_tokenizer
from orchestra_jax.tokenization.protocol import Tokenizer
from orchestra_jax.tokenization.reasoning import split_reasoning
from orchestra_jax.tokenization.sentencepiece_tokenizer import SentencePieceTokenizer
from orchestra_jax.tokenization.sentencepiece_training import train_sentencepiece
from orchestra_jax.tokenization.templates import (
    CHAT_SPECIAL_TOKENS,
    CHATML_COMPACT_TOOLS_TEMPLATE,
    CHATML_TOOLS_TEMPLATE,
    NAMED_CHAT_TEMPLATES,
    named_chat_template,
)
from orchestra_jax.tokenization.tool_calls import (
    ToolCall,
    ToolCallError,
    ToolCallErrorKind,
    error_counts,
    parse_tool_calls,
)

__all__ = [
    "CHATML_COMPACT_TOOLS_TEMPLATE",
    "CHATML_TOOLS_TEMPLATE",
    "CHAT_SPECIAL_TOKENS",
    "NAMED_CHAT_TEMPLATES",
    "ArgumentProblem",
    "HFTokenizer",
    "SentencePieceTokenizer",
    "Tokenizer",
    "ToolCall",
    "ToolCallError",
    "ToolCallErrorKind",
    "UnsupportedGGUFTokenizer",
    "check_arguments",
    "compile_chat_template",
    "error_counts",
    "load_tokenizer",
    "named_chat_template",
    "normalize_messages",
    "parse_tool_calls",
    "render_chat_template",
    "split_reasoning",
    "train_sentencepiece",
]
