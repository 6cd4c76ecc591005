"""Contrastive fine-tuning of the encoder (RepLLaMA §1.6 / LLaRA §3.5 of MODELS.md).

Each query's group is one positive and --group-size - 1 negatives (mined hard negatives first, random
train documents when there are not enough); the loss is InfoNCE over every passage of the batch
(in-batch negatives included) at temperature --temperature (0.01 as RepLLaMA and LLaRA). Inputs are
rendered by the preset's templates with the serving TemplateRenderer and pooled with runtime's
gather_last, so training and serving see the same tokens and read the same positions.

--init continues a LLaRA adapter (its LoRA and token rows stay trainable) rather than merging it
and stacking a second LoRA: the result is again one adapter on the untouched base, which the normal
loading path serves.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from models.presets import encoder_preset
from models.runtime import pad_right, pool
from models.templates import TemplateRenderer
from store import passage_text
from training import common
from training.data import batch_indices, load_train, read_negatives, sample_group, step_rng

log = logging.getLogger("reprank.train")


def embed(t: common.Trainable, seqs: list[list[int]], pool_last: int) -> torch.Tensor:
    """L2-normalised mean of the last `pool_last` states (0: all), as models.encoder does (with gradients)."""
    ids, mask, lengths = pad_right(seqs, t.pad_id, next(t.model.parameters()).device)
    hidden = t.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
    return F.normalize(pool(hidden, lengths, pool_last).float(), p=2, dim=-1)


def run(args) -> int:
    common.setup(args)
    preset = encoder_preset(common.preset_name(args, "smollm2"))
    t = common.load_trainable(args, "lm", preset.special_tokens)
    train = load_train(args.dataset, args.limit_train_queries, args.seed, args.exclude_queries)
    negatives = read_negatives(args.hard_negatives) if args.hard_negatives else None
    if negatives is not None:
        covered = sum(q in negatives for q in train.query_ids)
        log.info("hard negatives for %d of %d train queries", covered, len(train.query_ids))
    queries = TemplateRenderer(t.tokenizer, preset.query_template, args.query_max_length)
    passages = TemplateRenderer(t.tokenizer, preset.passage_template, args.passage_max_length)
    qids = train.query_ids

    def loss_fn(micro_step: int) -> torch.Tensor:
        batch = [qids[i] for i in batch_indices(len(qids), args.batch_size, micro_step, args.seed)]
        rng = step_rng(args.seed, micro_step)
        docs = [d for q in batch for d in sample_group(train, q, args.group_size, negatives, rng)]
        q = embed(t, [queries.render({"text": train.queries[q]}, True).ids for q in batch], preset.pool_last)
        p = embed(t, [passages.render({"text": passage_text(d)}, True).ids for d in docs], preset.pool_last)
        with torch.autocast(q.device.type, enabled=False):  # at T=0.02 bf16 would round scores by ~0.2
            scores = q @ p.T / args.temperature
        return F.cross_entropy(scores, torch.arange(len(batch), device=scores.device) * args.group_size)

    losses = common.fit(t, loss_fn, args)
    common.export(t, args, preset.name, losses)
    return 0
