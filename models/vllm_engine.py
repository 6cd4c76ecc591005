"""The vLLM engine: reprank's presets run on vLLM in this process (`--engine vllm`).

Why in-process (vllm.LLM) rather than a vLLM server reprank supervises: the encoder and reranker stay
ModelRuntimes, so the token-budget batcher, deadline admission, queue bounds, metrics and errors are the
torch engine's own, and reprank keeps rendering its templates: vLLM gets token ids, never text, so it
cannot tokenize a prompt differently. vLLM runs its engine core in a child process either way.

What vLLM is told per preset (`vllm_plan`), so nothing pools differently on the two engines:
- last-token encoders: vLLM's LAST pooler; mean pooling: MEAN; LLaRA's mean over its last 8 special
  tokens has no vLLM pooler, so vLLM returns every token's state (token_embed, ALL) and reprank takes
  the mean of the last 8 itself. reprank L2-normalises in every case (vLLM's activation is off).
- score heads and yes/no heads: a sequence-classification folder with one label (the yes/no pair becomes
  w_yes - w_no), classify with the activation off; reprank applies the preset's activation.
- query likelihood: a causal LM on vLLM's generate runner; the prompt's log-probabilities
  (prompt_logprobs) of the query tokens, averaged, as the torch engine computes them.
Sources vLLM cannot read (GGUF, LoRA adapters, added tokens, saved heads) are exported once to a plain
HF folder in the model cache (`export`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.encoder import Encoder
from models.loading import Head, cache_dir, load, model_revision
from models.presets import EncoderPreset, RerankerPreset
from models.reranker import Reranker

os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")  # vLLM keeps one core for itself by default
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; reprank's batches are bounded by max_batch_tokens


def available() -> str | None:
    """None when vLLM can run here, else why not (the message a test skips with)."""
    import platform

    capability = torch.backends.cpu.get_cpu_capability()
    if platform.machine() in ("x86_64", "AMD64") and not torch.cuda.is_available() and \
            capability not in ("AVX2", "AVX512"):
        return f"vllm-cpu needs AVX2 or AVX-512 on x86; this CPU's capability is {capability}"
    try:
        import vllm  # noqa: F401
    except Exception as e:  # ImportError, or a build for another CPU/GPU failing at import
        return f"vLLM is not usable here: {type(e).__name__}: {e} (install: make install)"
    return None


@dataclass(frozen=True)
class VllmPlan:
    """How vLLM runs one preset: the runner, the folder's class, and the pooler."""

    runner: str  # "pooling" or "generate"
    head: Head  # what the exported folder holds: none (causal LM), score (seq-cls, one label)
    pooler: dict | None  # vLLM's PoolerConfig fields
    pool_last: int | None = None  # encoders on token_embed: the mean of the last N states, taken here

    def serve_flags(self) -> list[str]:
        """The same plan as flags of a stock vLLM server (`reprank vllm-args`)."""
        if self.pool_last:
            raise ValueError("a stock vLLM server has no pooler for the mean of the last "
                             f"{self.pool_last} states (LLaRA): use `reprank serve --engine vllm`")
        if self.runner == "generate":
            raise ValueError("a stock vLLM server does not score query likelihood on /v1/rerank: use "
                             "`reprank serve --engine vllm`")
        convert = ["--convert", "embed"] if self.head == "none" else []
        # vLLM's default activations: a normalised vector, and a score's sigmoid, the relevance in [0, 1]
        # that the gateway (service/remote.py) reads from /v1/rerank
        pooler = {k: v for k, v in self.pooler.items() if k != "use_activation"}
        return ["--runner", "pooling", *convert, "--pooler-config", json.dumps(pooler)]


def encoder_plan(preset: EncoderPreset) -> VllmPlan:
    if preset.pool_last == 1:
        return VllmPlan("pooling", "none", {"pooling_type": "LAST", "use_activation": False})
    if preset.pool_last == 0:
        return VllmPlan("pooling", "none", {"pooling_type": "MEAN", "use_activation": False})
    return VllmPlan("pooling", "none", {"task": "token_embed", "pooling_type": "ALL", "use_activation": False},
                    pool_last=preset.pool_last)


def reranker_plan(preset: RerankerPreset) -> VllmPlan:
    if preset.head == "query_likelihood":
        return VllmPlan("generate", "query_likelihood", None)
    return VllmPlan("pooling", "score", {"pooling_type": "LAST", "use_activation": False})


def gateway_formats(preset: EncoderPreset | RerankerPreset, tokenizer) -> dict[str, str]:
    """The gateway's REPRANK_REMOTE_* text formats that make a stock vLLM server build the preset's input.

    A stock server tokenizes text, with the tokenizer's own special tokens; reprank tokenizes each
    segment alone. The two agree when `<bos>`/`<eos>` are written as their token strings, a BOS the
    tokenizer adds itself is left out, and field values start at a word boundary (BPE merges no
    further). A template a text format cannot reproduce is refused with the reason.
    """
    probe = tokenizer.encode("a", add_special_tokens=False)
    added = tokenizer.encode("a")
    start = added[:added.index(probe[0])] if probe[0] in added else added
    if added[len(start) + len(probe):]:
        raise ValueError(f"{preset.name}: the tokenizer appends special tokens to every text, which the "
                         "template does not; use `reprank serve --engine vllm`")
    names = {"<bos>": tokenizer.bos_token, "<eos>": tokenizer.eos_token}

    def text(segments: tuple[str, ...]) -> str:
        if start:
            if start != [tokenizer.bos_token_id] or segments[:1] != ("<bos>",):
                raise ValueError(f"{preset.name}: the tokenizer adds {tokenizer.convert_ids_to_tokens(start)} "
                                 "where the template does not; use `reprank serve --engine vllm`")
            segments = segments[1:]
        return "".join(names.get(s, s) for s in segments)

    if isinstance(preset, EncoderPreset):
        return {"REPRANK_REMOTE_QUERY_FORMAT": text(preset.query_template),
                "REPRANK_REMOTE_PASSAGE_FORMAT": text(preset.passage_template)}
    whole = text(preset.template)
    cut = whole.index("{query}") + len("{query}")
    if cut > whole.index("{document}"):
        raise ValueError(f"{preset.name}: the query comes after the document; a stock server's pair "
                         "input puts it first")
    # vLLM joins the two strings and tokenizes the whole (an LLM reranker has no separator)
    return {"REPRANK_REMOTE_RERANK_QUERY_FORMAT": whole[:cut],
            "REPRANK_REMOTE_RERANK_DOCUMENT_FORMAT": whole[cut:]}


def export(source: str, head: Head, *, base: str | None = None, yes_no: tuple[str, str] = ("yes", "no"),
           special_tokens: tuple[str, ...] = ()) -> Path:
    """A plain HF folder vLLM can load for `source` with `head` merged in; built once, then cached.

    reprank's loader already merges LoRA adapters, added tokens and saved heads, and turns a yes/no
    pair into one linear row; the folder is that model re-saved: a causal LM (its LM head) for
    encoders and likelihood rerankers, a one-label sequence classifier for score and yes/no heads.
    """
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    key = f"{Path(source.split(':')[-1]).name}-{model_revision(source)}-{head}"
    if head == "yes_no":
        key += f"-{'-'.join(yes_no)}"
    target = cache_dir() / "vllm" / key
    if (target / "config.json").exists():
        return target
    loaded = load(source, head, base=base, yes_no=yes_no, special_tokens=special_tokens)
    config = loaded.backbone.config
    config.architectures = None
    if head in ("score", "yes_no"):
        config.num_labels = 1
        model = AutoModelForSequenceClassification.from_config(config)
        model.score.weight.data.copy_(loaded.head.weight.data)
    else:
        model = AutoModelForCausalLM.from_config(config)
        if head == "query_likelihood":
            model.get_output_embeddings().weight.data.copy_(loaded.head.weight.data)
    missing = model.base_model.load_state_dict(loaded.backbone.state_dict(), strict=True)
    assert not missing.missing_keys, missing
    if head == "none" and not config.tie_word_embeddings:  # an encoder never reads the LM head
        model.get_output_embeddings().weight.data.zero_()
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    model.to(torch.float32).save_pretrained(tmp)
    loaded.tokenizer.save_pretrained(tmp)
    tmp.rename(target)
    return target


class _Vllm:
    """What ModelRuntime reads of a model (tokenizer, device, source), with vLLM behind it."""

    def __init__(self, folder: Path, plan: VllmPlan, source: str, max_length: int, dtype: torch.dtype,
                 max_batch_tokens: int, max_batch_size: int):
        from transformers import AutoConfig, AutoTokenizer
        from vllm import LLM

        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.dim = AutoConfig.from_pretrained(folder).hidden_size
        self.device = torch.device("cpu" if not torch.cuda.is_available() else "cuda")
        self.source, self.folder, self.plan = source, folder, plan
        self.head = plan.head  # Reranker checks a head is there
        self.backbone = None
        extra = {"pooler_config": plan.pooler} if plan.runner == "pooling" else {}
        if plan.runner == "pooling" and plan.head == "none":
            extra["convert"] = "embed"  # a causal LM's folder, served as an embedder
        self.llm = LLM(model=str(folder), runner=plan.runner, dtype=str(dtype).removeprefix("torch."),
                       max_model_len=max_length, max_num_batched_tokens=max(max_batch_tokens, max_length),
                       max_num_seqs=max_batch_size, enforce_eager=True, seed=0,
                       **extra)

    def close(self) -> None:
        shutdown = getattr(self.llm.llm_engine, "engine_core", None)
        if shutdown is not None:
            shutdown.shutdown()


def _prompts(seqs: list[list[int]]):
    from vllm.inputs import TokensPrompt

    return [TokensPrompt(prompt_token_ids=list(s)) for s in seqs]


class VllmEncoder(Encoder):
    """An Encoder whose forward pass is vLLM's; templates, batching and normalisation are reprank's."""

    pads = False  # vLLM packs a batch: its budget counts real tokens

    def _run(self, seqs: list[list[int]]) -> list[np.ndarray]:
        vm: _Vllm = self.model
        if vm.plan.pool_last:
            outs = vm.llm.encode(_prompts(seqs), pooling_task="token_embed", use_tqdm=False)
            pooled = torch.stack([o.outputs.data[-vm.plan.pool_last:].float().mean(0) for o in outs])
        else:
            outs = vm.llm.embed(_prompts(seqs), use_tqdm=False)
            pooled = torch.stack([torch.as_tensor(o.outputs.embedding, dtype=torch.float32) for o in outs])
        if self.preset.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
        return list(pooled.numpy())

    def close(self) -> None:
        super().close()
        self.model.close()


class VllmReranker(Reranker):
    """A Reranker whose forward pass is vLLM's: classify for one-logit heads, prompt log-probabilities
    for query likelihood; the preset's activation is applied here, as on the torch engine."""

    pads = False

    def _run(self, seqs: list[list[int]]) -> list[float]:
        vm: _Vllm = self.model
        if self._likelihood:
            from vllm import SamplingParams

            params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)
            outs = vm.llm.generate(_prompts(seqs), params, use_tqdm=False)
            scores = torch.tensor([
                float(np.mean([lp[t].logprob for lp, t in zip(o.prompt_logprobs[len(s) - s.tail:],
                                                              s[len(s) - s.tail:], strict=True)]))
                for o, s in zip(outs, seqs, strict=True)])
        else:
            outs = vm.llm.classify(_prompts(seqs), use_tqdm=False)
            scores = torch.tensor([float(o.outputs.probs[0]) for o in outs])
        if self.preset.activation == "sigmoid":
            scores = torch.sigmoid(scores)
        elif self.preset.activation == "exp":
            scores = torch.exp(scores)
        return scores.tolist()

    def close(self) -> None:
        super().close()
        self.model.close()


def plan_for(preset: EncoderPreset | RerankerPreset) -> VllmPlan:
    return encoder_plan(preset) if isinstance(preset, EncoderPreset) else reranker_plan(preset)


def export_for(source: str, preset: EncoderPreset | RerankerPreset, base: str | None = None) -> Path:
    """The exported folder for `source` as `preset` loads it (its added tokens, or its head)."""
    if isinstance(preset, EncoderPreset):
        return export(source, "none", base=base, special_tokens=preset.special_tokens)
    return export(source, preset.head, base=base, yes_no=preset.yes_no)


def open_vllm(source: str, preset: EncoderPreset | RerankerPreset, *, base=None, dtype=None, max_batch_tokens=2048,
              max_batch_size=64, **batching) -> VllmEncoder | VllmReranker:
    """A VllmEncoder or VllmReranker (by the preset's kind), batched as the torch engine batches."""
    vm = _Vllm(export_for(source, preset, base), plan_for(preset), source, preset.max_length,
               dtype or torch.float32, max_batch_tokens, max_batch_size)
    runtime = VllmEncoder if isinstance(preset, EncoderPreset) else VllmReranker
    return runtime(vm, preset, packed=False, cuda_graphs=False, max_batch_tokens=max_batch_tokens,
                   max_batch_size=max_batch_size, **batching)
