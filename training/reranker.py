"""RankLLaMA-style reranker training (MODELS.md §2.2): LoRA plus a one-logit score head, or LoRA under a
query-likelihood preset's LM head.

For each query a group of one positive and --group-size - 1 hard negatives (mined from the
retriever's top candidates, random train documents when short), each pair scored as the preset
serves it, and a softmax cross-entropy over the group with the positive as the target.
- Score head (`smollm2-rankllama`, RankLLaMA's template without BOS): the logit of a fresh head on the
  pair's last real token. The adapter is SEQ_CLS, so PEFT stores the head beside the LoRA.
- Query likelihood (`smollm2-reranker`): the mean log-probability of the query after the document,
  through the model's own LM head (models.reranker.query_logprob). It starts from a zero-shot
  reranker that already ranks, where a fresh head starts from chance. The adapter is CAUSAL_LM.
open_reranker merges either adapter into the base.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.presets import reranker_preset
from models.reranker import Pair, query_logprob
from models.runtime import gather_last, pad_right
from models.templates import TemplateRenderer
from store import passage_text
from training import common
from training.data import batch_indices, load_train, read_negatives, sample_group, step_rng


def run(args) -> int:
    common.setup(args)
    preset = reranker_preset(common.preset_name(args, "smollm2-rankllama"))
    if preset.head not in ("score", "query_likelihood"):
        raise ValueError(f"preset {preset.name} has a {preset.head} head; training needs a score-head or "
                         "query-likelihood preset")
    likelihood = preset.head == "query_likelihood"
    t = common.load_trainable(args, "lm" if likelihood else "score")
    # PEFT's trainable copy of a score head; the LM head stays frozen (LoRA adapts the states it reads)
    head = t.model.get_output_embeddings() if likelihood else t.model.get_base_model().score
    train = load_train(args.dataset, args.limit_train_queries, args.seed, args.exclude_queries)
    negatives = read_negatives(args.hard_negatives) if args.hard_negatives else None
    pairs = TemplateRenderer(t.tokenizer, preset.template, args.query_max_length + args.passage_max_length)
    qids = train.query_ids

    def loss_fn(micro_step: int) -> torch.Tensor:
        batch = [qids[i] for i in batch_indices(len(qids), args.batch_size, micro_step, args.seed)]
        rng = step_rng(args.seed, micro_step)
        rendered = [pairs.render({"query": train.queries[q], "document": passage_text(d)}, True)
                    for q in batch for d in sample_group(train, q, args.group_size, negatives, rng)]
        seqs = [Pair(r.ids, r.tail) for r in rendered]
        ids, mask, lengths = pad_right(seqs, t.pad_id, next(t.model.parameters()).device)
        hidden = t.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        if likelihood:
            k = max(s.tail for s in seqs) + 1
            scores = query_logprob(gather_last(hidden, lengths, k), seqs, head)
        else:
            scores = head(gather_last(hidden, lengths, 1)[:, 0]).float()[:, 0]
        logits = scores.view(len(batch), args.group_size)
        return F.cross_entropy(logits, torch.zeros(len(batch), dtype=torch.long, device=logits.device))

    losses = common.fit(t, loss_fn, args)
    common.export(t, args, preset.name, losses)
    return 0
