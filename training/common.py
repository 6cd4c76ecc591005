"""The one training loop the three recipes share, and the adapter folder it exports.

- seeded (python, numpy, torch) and thread-limited; each batch is a function of (seed, micro-step);
- LoRA on the 7 projections, plus the embedding rows of tokens a preset adds (PEFT trainable
  tokens: only those rows are stored, not the 49k-row matrix);
- AdamW, linear warmup then decay, gradient accumulation, gradient clipping, optional bf16 autocast;
- `checkpoint-STEP/` every --save-every steps with the adapter (fp32), optimizer, scheduler, step and
  RNG states, so --resume continues exactly where the run stopped;
- the output folder: fp16 adapter weights (a few MB), adapter_config.json naming the base *as given*
  ("bundled:smollm2"), reprank.json (preset, added tokens) and train_args.json (command, seed,
  hyperparameters), which open_encoder / open_reranker load like any adapter.
"""

from __future__ import annotations

import json
import logging
import random
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from models.loading import add_tokens, carries_score_head, head_from_adapter, load_tokenizer, resolve

log = logging.getLogger("reprank.train")

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
MAX_GRAD_NORM = 1.0
_CKPT = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class Trainable:
    model: torch.nn.Module  # a PeftModel
    tokenizer: object
    pad_id: int
    added_tokens: dict[str, int]  # tokens this adapter adds to the base vocabulary, with their ids

    @property
    def backbone(self) -> torch.nn.Module:
        """The decoder stack (LoRA layers inside), returning last_hidden_state as at serving time."""
        return self.model.get_base_model().base_model


def setup(args) -> None:
    """Seed, thread count, output folder; refuse to mix a new run into an old run's checkpoints."""
    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    out = Path(args.output_dir)
    if checkpoints(out) and not args.resume:
        raise ValueError(f"{out} has checkpoints: pass --resume to continue that run, or use a new --output-dir")
    out.mkdir(parents=True, exist_ok=True)


def preset_name(args, default: str) -> str:
    """--preset, else the --init adapter's own preset (a folder or bundled:NAME), else the default."""
    if args.preset:
        return args.preset
    meta = resolve(args.init).path / "reprank.json" if args.init else None
    return json.loads(meta.read_text())["preset"] if meta and meta.exists() else default


def load_trainable(args, head: Literal["lm", "score"], special_tokens: tuple[str, ...] = ()) -> Trainable:
    """The base model with a fresh LoRA, or with the --init adapter loaded trainable (continued)."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    init = getattr(args, "init", None)
    if getattr(args, "freeze_added_tokens", False) and not init:
        raise ValueError("--freeze-added-tokens keeps an --init adapter's token rows fixed: without --init the "
                         "rows are fresh random draws and must train")
    init_src = resolve(init) if init else None
    if init_src is not None and init_src.kind != "peft":
        raise ValueError(f"--init {init}: not an adapter folder (adapter_config.json)")
    if args.base is None:  # an --init adapter names its own base; else the bundled model
        cfg = json.loads((init_src.path / "adapter_config.json").read_text()) if init_src else {}
        args.base = cfg.get("base_model_name_or_path") or "bundled:smollm2"
    base_src = resolve(args.base)
    if base_src.kind == "peft":
        raise ValueError(f"--base {args.base} is an adapter; pass it as --init to continue training it")

    tokenizer = load_tokenizer(init_src or base_src, base_src if init_src else None)
    path, kwargs = base_src.hf_args()
    if head == "score":
        with head_from_adapter(init_src is not None and carries_score_head(init_src.path)):
            model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32, **kwargs)
    else:  # encoders train as causal LMs: LLaRA needs the LM head, and the retriever continues LLaRA's adapter
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **kwargs)
    added = _new_tokens(tokenizer, special_tokens, model.get_input_embeddings().weight.shape[0])
    if added:
        model.resize_token_embeddings(len(tokenizer))  # new rows drawn from the seeded RNG
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = pad_id

    if init_src is not None:
        model = PeftModel.from_pretrained(model, str(init_src.path), is_trainable=True)
        log.info("continuing adapter %s (its LoRA rank %s)", init, model.peft_config["default"].r)
        if getattr(args, "freeze_added_tokens", False):
            for name, param in model.named_parameters():
                if "trainable_tokens" in name:
                    param.requires_grad_(False)
    else:
        model = get_peft_model(model, LoraConfig(
            task_type="SEQ_CLS" if head == "score" else "CAUSAL_LM",  # SEQ_CLS also saves the score head
            r=args.lora_r, lora_alpha=args.lora_alpha or 2 * args.lora_r, lora_dropout=args.lora_dropout,
            target_modules=list(LORA_TARGETS), trainable_token_indices=sorted(added.values()) or None,
            layers_to_transform=_top_layers(model, args.lora_layers),
        ))
    if args.gradient_checkpointing:  # recompute activations in backward: a fraction of the memory, ~30% slower
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.to(args.device)
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("base %s, %d trainable parameters, %d added tokens", args.base, n, len(added))
    return Trainable(model, tokenizer, pad_id, added)


def _new_tokens(tokenizer, tokens: tuple[str, ...], rows: int) -> dict[str, int]:
    """The preset's tokens the base vocabulary (`rows` embedding rows) lacks, added to the tokenizer, with their ids."""
    return {t: i for t, i in add_tokens(tokenizer, list(tokens)).items() if i >= rows} if tokens else {}


def _log_until(path: Path, step: int) -> str:
    """A run's train_log.jsonl up to and including `step` (what a checkpoint at that step had seen)."""
    return "".join(line + "\n" for line in path.read_text().splitlines() if json.loads(line)["step"] <= step)


def _top_layers(model, n: int | None) -> list[int] | None:
    """Indices of the top n decoder layers (None: all). Below them nothing needs a gradient, so autograd
    records no graph there and the backward pass, the larger half of a step, covers only n layers."""
    if n is None:
        return None
    total = model.config.num_hidden_layers
    if not 0 < n <= total:
        raise ValueError(f"--lora-layers {n}: the model has {total} layers")
    return list(range(total - n, total))


def fit(t: Trainable, loss_fn: Callable[[int], torch.Tensor], args) -> list[float]:
    """Run steps up to --max-steps (from the latest checkpoint with --resume); returns each step's loss.

    `loss_fn(micro_step)` gives the loss of one micro-batch; a step averages --grad-accum of them.
    """
    from transformers import get_linear_schedule_with_warmup

    out = Path(args.output_dir)
    params = [p for p in t.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    sched = get_linear_schedule_with_warmup(opt, args.warmup_steps, args.max_steps)
    ckpts = checkpoints(out) if args.resume else []
    start = _restore(ckpts[-1], t.model, opt, sched) if ckpts else 0
    log_path = out / "train_log.jsonl"
    if start:
        log.info("resumed from %s at step %d", ckpts[-1].name, start)
        if log_path.exists():  # drop the steps the killed run logged after its last checkpoint
            log_path.write_text(_log_until(log_path, start))
    losses = []
    fit_began = time.perf_counter()
    t.model.train()
    with open(log_path, "a", encoding="utf-8") as logf:
        for step in range(start, args.max_steps):
            began = time.perf_counter()
            total = 0.0
            for micro in range(args.grad_accum):
                with torch.autocast(torch.device(args.device).type, torch.bfloat16, enabled=args.bf16):
                    loss = loss_fn(step * args.grad_accum + micro) / args.grad_accum
                loss.backward()
                total += loss.item()
            norm = torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(total)
            rec = {"step": step + 1, "loss": round(total, 6), "lr": sched.get_last_lr()[0],
                   "grad_norm": round(float(norm), 4), "seconds": round(time.perf_counter() - began, 2)}
            logf.write(json.dumps(rec) + "\n")
            logf.flush()
            if (step + 1) % args.log_every == 0 or step + 1 == args.max_steps:
                spent = time.perf_counter() - fit_began
                eta = spent / (step + 1 - start) * (args.max_steps - step - 1)
                log.info("step %d/%d  loss %.4f  lr %.2e  %.1f s/step  eta %s", step + 1, args.max_steps, total,
                         rec["lr"], rec["seconds"], time.strftime("%H:%M:%S", time.gmtime(eta)))
            if (step + 1) % args.save_every == 0 or step + 1 == args.max_steps:
                _save_checkpoint(out, step + 1, t.model, opt, sched, args.keep_checkpoints)
    t.model.eval()
    return losses


def checkpoints(out: Path) -> list[Path]:
    """Complete checkpoints (trainer_state.pt is written last), oldest first."""
    found = [(int(m.group(1)), p) for p in out.glob("checkpoint-*")
             if (m := _CKPT.match(p.name)) and (p / "trainer_state.pt").exists()] if out.is_dir() else []
    return [p for _, p in sorted(found)]


def _rng_state() -> dict:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(), "cuda": cuda}


def _save_checkpoint(out: Path, step: int, model, opt, sched, keep: int) -> None:
    tmp = out / f".checkpoint-{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, save_embedding_layers=False)
    state = {"step": step, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": _rng_state()}
    torch.save(state, tmp / "trainer_state.pt")
    final = out / f"checkpoint-{step}"
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in checkpoints(out)[:-keep]:
        shutil.rmtree(old)


def _restore(ckpt: Path, model, opt, sched) -> int:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = torch.load(ckpt / "trainer_state.pt", weights_only=False)  # our own file: RNG states are tuples
    result = set_peft_model_state_dict(model, load_file(ckpt / "adapter_model.safetensors"))
    if getattr(result, "unexpected_keys", None):
        raise ValueError(f"{ckpt}: checkpoint does not match the model: {result.unexpected_keys[:3]}")
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    random.setstate(state["rng"]["python"])
    np.random.set_state(state["rng"]["numpy"])
    torch.set_rng_state(state["rng"]["torch"])
    if state["rng"].get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return state["step"]


def export(t: Trainable, args, preset: str, losses: list[float]) -> Path:
    """Write the servable adapter folder (see the module docstring) into --output-dir."""

    out = Path(args.output_dir)
    t.model.peft_config["default"].base_model_name_or_path = args.base  # as given, e.g. "bundled:smollm2"
    t.model.save_pretrained(out, save_embedding_layers=False)
    weights = _servable(out, preset, t.added_tokens)
    record = {
        "command": "reprank " + shlex.join(getattr(args, "argv", [])),
        "seed": args.seed,
        "preset": preset,
        "base": args.base,
        "args": {k: v for k, v in vars(args).items() if k not in ("argv", "func") and _jsonable(v)},
        "lora": {k: getattr(t.model.peft_config["default"], k) for k in ("r", "lora_alpha", "lora_dropout")}
        | {"target_modules": sorted(t.model.peft_config["default"].target_modules)},
        "trainable_parameters": sum(p.numel() for p in t.model.parameters() if p.requires_grad),
        "final_loss": losses[-1] if losses else None,
        "adapter_bytes": weights.stat().st_size,
        "git_commit": _git_commit(),
        "versions": {"torch": torch.__version__, **_versions("transformers", "peft")},
    }
    (out / "train_args.json").write_text(json.dumps(record, indent=1) + "\n")
    log.info("adapter written to %s (%.1f MB)", out, weights.stat().st_size / 1e6)
    return out


def _servable(out: Path, preset: str, added: dict[str, int]) -> Path:
    """Finish an adapter folder as open_encoder / open_reranker load it: fp16 weights, reprank.json."""
    from safetensors.torch import load_file, save_file

    weights = out / "adapter_model.safetensors"
    half = {k: v.half() if v.is_floating_point() else v for k, v in load_file(weights).items()}
    save_file(half, weights, metadata={"format": "pt"})
    (out / "README.md").unlink(missing_ok=True)  # PEFT's empty model-card template
    meta = {"preset": preset, **({"added_tokens": added} if added else {})}
    (out / "reprank.json").write_text(json.dumps(meta, indent=1) + "\n")
    return weights


def export_checkpoint(args) -> Path:
    """`train export`: a run's checkpoint-STEP/ as a servable adapter folder, for a run stopped before its
    last step (a GPU lease that ran out). Added tokens are the preset's, given the ids the base would give
    them; train_log.jsonl keeps the run's steps up to STEP; train_args.json names the checkpoint and holds
    the run's own train_args.json as `run`, when the run finished and wrote one."""
    from models.presets import ENCODERS, RERANKERS

    ckpt, out = Path(args.checkpoint), Path(args.output_dir)
    if not (m := _CKPT.match(ckpt.name)) or not (ckpt / "adapter_model.safetensors").exists():
        raise ValueError(f"{ckpt}: not a checkpoint-STEP folder with adapter_model.safetensors")
    step = int(m.group(1))
    if args.preset not in ENCODERS and args.preset not in RERANKERS:
        raise ValueError(f"unknown preset {args.preset!r}; known: {', '.join([*ENCODERS, *RERANKERS])}")
    cfg = json.loads((ckpt / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = args.base
    out.mkdir(parents=True, exist_ok=True)
    (out / "adapter_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    shutil.copyfile(ckpt / "adapter_model.safetensors", out / "adapter_model.safetensors")
    tokens = ENCODERS[args.preset].special_tokens if args.preset in ENCODERS else ()  # rerankers add none
    added = {}
    if tokens:
        tokenizer = load_tokenizer(resolve(args.base))
        added = _new_tokens(tokenizer, tokens, len(tokenizer))
    weights = _servable(out, args.preset, added)
    run_log = ckpt.parent / "train_log.jsonl"
    if run_log.exists():
        (out / "train_log.jsonl").write_text(_log_until(run_log, step))
    record = {"command": "reprank " + shlex.join(getattr(args, "argv", [])), "checkpoint": str(ckpt),
              "step": step, "preset": args.preset, "base": args.base, "adapter_bytes": weights.stat().st_size,
              "git_commit": _git_commit()}
    if (run_args := ckpt.parent / "train_args.json").exists():
        record["run"] = json.loads(run_args.read_text())
    (out / "train_args.json").write_text(json.dumps(record, indent=1) + "\n")
    log.info("checkpoint %s (step %d) exported to %s", ckpt, step, out)
    return out


def _jsonable(v) -> bool:
    return isinstance(v, str | int | float | bool | type(None) | list)


def _versions(*names: str) -> dict:
    import importlib.metadata as md

    return {n: md.version(n) for n in names}


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip() or None
    except OSError:
        return None
