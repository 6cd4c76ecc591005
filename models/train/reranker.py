"""RankLLaMA-style reranker training (MODELS.md §2.2): a one-logit score head plus LoRA.

For each query a group of one positive and --group-size - 1 hard negatives (mined from the
retriever's top candidates, random train documents when short), scored by the head on the last
real token of the preset's pair template, and a softmax cross-entropy over the group with the
positive as the target. The adapter is SEQ_CLS, so PEFT stores the trained head beside the LoRA and
open_reranker merges both. The bundled SmolLM2 has no head: the default preset is
`smollm2-rankllama`, RankLLaMA's template without BOS.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from indexer.run import passage_text
from models.presets import reranker_preset
from models.runtime import gather_last, pad_right
from models.templates import TemplateRenderer
from models.train import common
from models.train.data import batch_indices, load_train, read_negatives, sample_group, step_rng


def run(args) -> int:
    common.setup(args)
    preset = reranker_preset(args.preset)
    if preset.head != "score":
        raise ValueError(f"preset {preset.name} has a {preset.head} head; training needs a score-head preset")
    t = common.load_trainable(args, "score")
    head = t.model.get_base_model().score  # PEFT's trainable copy of the head
    train = load_train(args.dataset, args.limit_train_queries, args.seed)
    negatives = read_negatives(args.hard_negatives) if args.hard_negatives else None
    pairs = TemplateRenderer(t.tokenizer, preset.template, args.query_max_length + args.passage_max_length)
    qids = train.query_ids

    def loss_fn(micro_step: int) -> torch.Tensor:
        batch = [qids[i] for i in batch_indices(len(qids), args.batch_size, micro_step, args.seed)]
        rng = step_rng(args.seed, micro_step)
        seqs = [pairs.render({"query": train.queries[q], "document": passage_text(d)}, True).ids
                for q in batch for d in sample_group(train, q, args.group_size, negatives, rng)]
        ids, mask, lengths = pad_right(seqs, t.pad_id, next(t.model.parameters()).device)
        hidden = t.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        logits = head(gather_last(hidden, lengths, 1)[:, 0]).float().view(len(batch), args.group_size)
        return F.cross_entropy(logits, torch.zeros(len(batch), dtype=torch.long, device=logits.device))

    losses = common.fit(t, loss_fn, args)
    common.export(t, args, preset.name, losses)
    return 0
