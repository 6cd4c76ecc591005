"""LLaRA's unsupervised adaptation (MODELS.md §3.4, FlagEmbedding research/LLARA/pretrain).

One forward per text: `"` + text + summarize suffix (<s1>..<s8>) + predict suffix (<s9>..<s16>). The
predict-suffix rows cannot attend to the summarize suffix and reuse its position ids, so EBAR reads
the text as if its own prompt followed it directly, exactly the input the encoder's query side sees.
Losses, as implemented there:
- EBAE: LM-head logits at <s1..8> -> max over the 8 positions -> log-softmax over the vocabulary ->
  minus the mean log-probability of the unique tokens of the text itself, averaged over the batch, / 10;
- EBAR: the same at <s9..16> with the tokens of the *next* sentence, only for texts that have one;
- AR: next-token cross-entropy on the text tokens (the implementation keeps it; a BoW-only run is
  reported to collapse), weight --ar-weight;
- total = AR + (EBAE + EBAR) / 2.
Targets drop non-word characters and NLTK's English stopwords, as with --remove_stop_words True.

For the Debian set a text is one sentence of a train-side description and its "next passage" the
following sentence of the same description (sentences under 4 words join the previous one).
SmolLM2 has no <s1>..<s16>: they are added, and LoRA plus their 16 embedding rows are trained (the
cheapest faithful option; LLaRA itself trained all weights). The retriever continues this adapter.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.presets import encoder_preset
from models.runtime import gather_last, pad_right
from models.templates import TemplateRenderer
from training import common
from training.data import batch_indices, load_train, sentences

log = logging.getLogger("reprank.train")

# nltk.corpus.stopwords.words("english"), the list LLaRA's data code removes from its targets
STOPWORDS = frozenset("""
i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself yourselves he him
his himself she she's her hers herself it it's its itself they them their theirs themselves what which who
whom this that that'll these those am is are was were be been being have has had having do does did doing
a an the and but if or because as until while of at by for with about against between into through during
before after above below to from up down in out on off over under again further then once here there when
where why how all any both each few more most other some such no nor not only own same so than too very s
t can will just don don't should should've now d ll m o re ve y ain aren aren't couldn couldn't didn
didn't doesn doesn't hadn hadn't hasn hasn't haven haven't isn isn't ma mightn mightn't mustn mustn't
needn needn't shan shan't shouldn shouldn't wasn wasn't weren weren't won won't wouldn wouldn't
""".split())


@dataclass
class Example:
    text: str
    next: str | None  # the following sentence of the same document; None: EBAE only


def examples(docs, min_words: int = 4) -> list[Example]:
    out = []
    for doc in docs:
        sents = sentences(f"{doc.title}. {doc.text}" if doc.title else doc.text, min_words)
        out += [Example(s, sents[i + 1] if i + 1 < len(sents) else None) for i, s in enumerate(sents)]
    return out


class Layout:
    """Token layout of one pretraining input, from the preset's own templates (serving's renderer)."""

    def __init__(self, tokenizer, preset, max_length: int):
        *head, free, summarize = preset.passage_template
        if free != "{text}" or preset.query_template[:-1] != (*head, free) or preset.pool_last != 8:
            raise ValueError(f"preset {preset.name} is not LLaRA-shaped (prefix, {{text}}, suffix with 8 tokens)")
        self.tokenizer = tokenizer
        self.passage = TemplateRenderer(tokenizer, preset.passage_template, max_length)
        self.summarize_len = len(tokenizer.encode(summarize, add_special_tokens=False))
        self.predict = tokenizer.encode(preset.query_template[-1], add_special_tokens=False)
        self.prefix_len = len(self.passage.render({"text": ""}, False).ids) - self.summarize_len
        self.special = set(tokenizer.all_special_ids)

    def targets(self, text: str) -> list[int]:
        """Unique token ids of the text's content words (the bag the special states must predict)."""
        words = [w for w in re.sub(r"\W+", " ", text).split() if w.lower() not in STOPWORDS]
        ids = self.tokenizer.encode(" " + " ".join(words), add_special_tokens=False) if words else []
        return sorted(set(ids) - self.special)


@dataclass
class States:
    ids: torch.Tensor  # [B, T] right-padded input ids
    hidden: torch.Tensor  # [B, T, H] final (post-norm) hidden states
    summarize: torch.Tensor  # [B, 8, H] at <s1..8>: the passage embedding's states
    predict: torch.Tensor  # [B, 8, H] at <s9..16>: the query embedding's states
    passage_end: list[int]  # length of quote + text + summarize suffix, per row


def llara_states(backbone, layout: Layout, texts: list[str], pad_id: int) -> States:
    """One forward of `"` + text + summarize suffix + predict suffix under the EBAE/EBAR layout."""
    passages = [layout.passage.render({"text": t}, truncate=True).ids for t in texts]
    seqs = [p + layout.predict for p in passages]
    device = next(backbone.parameters()).device
    ids, _, lengths = pad_right(seqs, pad_id, device)
    ends = [len(p) for p in passages]
    n_pred, n_sum = len(layout.predict), layout.summarize_len
    ar = torch.arange(ids.shape[1], device=device)
    pos = ar.repeat(len(seqs), 1)
    mask = (ar[None, :] <= ar[:, None])[None] & (ar[None, None, :] < lengths[:, None, None])  # causal, real keys
    for b, end in enumerate(ends):
        pos[b, end : end + n_pred] = torch.arange(end - n_sum, end - n_sum + n_pred, device=device)
        mask[b, end : end + n_pred, end - n_sum : end] = False  # EBAR cannot see the EBAE prompt
    hidden = backbone(input_ids=ids, attention_mask=mask[:, None], position_ids=pos).last_hidden_state
    summarize = gather_last(hidden, torch.tensor(ends, device=device), 8)
    return States(ids, hidden, summarize, gather_last(hidden, lengths, 8), ends)


def bow_loss(logits: torch.Tensor, targets: list[list[int]]) -> torch.Tensor | None:
    """LLaRA's bag-of-words loss: logits [B,8,V], max over the 8 positions, log-softmax, mean over targets."""
    rows = [i for i, t in enumerate(targets) if t]
    if not rows:
        return None
    logp = F.log_softmax(logits[rows].float().max(dim=1).values, dim=-1)
    return -torch.stack([logp[k, targets[i]].mean() for k, i in enumerate(rows)]).mean() / 10


def llara_loss(t: common.Trainable, layout: Layout, batch: list[Example], ar_weight: float) -> torch.Tensor:
    st = llara_states(t.backbone, layout, [e.text for e in batch], t.pad_id)
    lm_head = t.model.get_base_model().get_output_embeddings()
    ebae = bow_loss(lm_head(st.summarize), [layout.targets(e.text) for e in batch])
    ebar = bow_loss(lm_head(st.predict), [layout.targets(e.next) if e.next else [] for e in batch])
    parts = [x for x in (ebae, ebar) if x is not None]
    loss = sum(parts) / len(parts) if parts else st.hidden.sum() * 0
    if ar_weight:  # the state before each text token predicts it (the quote predicts the first)
        rows, cols = [], []
        for b, end in enumerate(st.passage_end):
            span = range(max(layout.prefix_len - 1, 0), end - layout.summarize_len - 1)
            rows += [b] * len(span)
            cols += span
        if cols:
            rows_t = torch.tensor(rows, device=st.ids.device)
            cols_t = torch.tensor(cols, device=st.ids.device)
            logits = lm_head(st.hidden[rows_t, cols_t]).float()
            loss = loss + ar_weight * F.cross_entropy(logits, st.ids[rows_t, cols_t + 1])
    return loss


def run(args) -> int:
    common.setup(args)
    preset = encoder_preset(args.preset)
    t = common.load_trainable(args, "lm", preset.special_tokens)
    train = load_train(args.dataset, args.limit_train_queries, args.seed, args.exclude_queries)
    wanted = {d for q in train.query_ids for d in train.positives[q]}  # the corpus side of these queries
    data = examples([train.corpus[d] for d in sorted(wanted)])
    with_next = sum(e.next is not None for e in data)
    log.info("LLaRA: %d sentences from %d train documents, %d with a next sentence", len(data), len(wanted),
             with_next)
    layout = Layout(t.tokenizer, preset, args.passage_max_length)

    def loss_fn(micro_step: int) -> torch.Tensor:
        batch = [data[i] for i in batch_indices(len(data), args.batch_size, micro_step, args.seed)]
        return llara_loss(t, layout, batch, args.ar_weight)

    losses = common.fit(t, loss_fn, args)
    common.export(t, args, preset.name, losses)
    return 0
