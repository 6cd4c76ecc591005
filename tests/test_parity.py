"""Every preset gives the same vector / score alone, inside a batch with much longer neighbours
(padded, as on CPU, or packed without padding, as on CUDA), and in a plain single-example reference
forward of the full HF model (fp32)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny import LLARA_TOKENS, build
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from models.encoder import Encoder
from models.errors import InputTooLong
from models.loading import load
from models.presets import ENCODERS, RERANKERS
from models.reranker import Reranker

SHORT = "compress files with zstd"
LONG = " ".join(["the package provides a library for parsing and writing archive formats"] * 40)
MIDDLE = "A fast lossless compression algorithm with a command line tool and a shared library."


def _model_dir(tmp_path_factory, tokenizer_dir, arch, head, extra=None):
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    return build(tmp_path_factory.mktemp(f"{arch}-{head}"), tok, arch, head, extra_tokens=extra)


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("arch", ["llama", "qwen3"])
@pytest.mark.parametrize("name", [n for n, p in ENCODERS.items() if "<cls>" not in p.query_template])  # decoder
# presets: a BERT one (all-minilm-l6-v2) is checked against its model card in test_loading.py
def test_encoder_parity(tmp_path_factory, tokenizer_dir, arch, name, packed):
    preset = ENCODERS[name]
    folder = _model_dir(tmp_path_factory, tokenizer_dir, arch, "none", list(preset.special_tokens) or None)
    enc = Encoder(load(str(folder), "none", special_tokens=preset.special_tokens), preset, max_batch_tokens=100_000,
                  packed=packed)
    try:
        for side in ("query", "passage"):
            alone = enc.encode([SHORT], side).vectors[0]
            batch = enc.encode([LONG, SHORT, MIDDLE, LONG + " more"], side).vectors[1]
            assert float(np.dot(alone, batch)) >= 0.9999
            assert abs(np.linalg.norm(alone) - 1) < 1e-5

            # reference: the full HF model on the unpadded ids, pooled by hand
            ids, _ = enc.tokenize([SHORT], side, truncate=False)
            ref_model = AutoModelForCausalLM.from_pretrained(folder).eval()
            with torch.no_grad():
                h = ref_model.model(torch.tensor(ids)).last_hidden_state[0, -preset.pool_last :].mean(0)
            ref = torch.nn.functional.normalize(h, dim=-1).numpy()
            assert float(np.dot(alone, ref)) >= 0.9999
    finally:
        enc.close()


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("arch", ["llama", "qwen3"])
@pytest.mark.parametrize("name", list(RERANKERS))
def test_reranker_parity(tmp_path_factory, tokenizer_dir, arch, name, packed):
    preset = RERANKERS[name]
    folder = _model_dir(tmp_path_factory, tokenizer_dir, arch, preset.head)
    rr = Reranker(load(str(folder), preset.head, yes_no=preset.yes_no), preset, max_batch_tokens=100_000,
                  packed=packed)
    try:
        alone = rr.score(SHORT, [MIDDLE]).scores[0]
        batch = rr.score(SHORT, [LONG, MIDDLE, LONG + " again"]).scores[1]
        assert abs(alone - batch) <= 1e-4
        # two requests' pairs in one batch: each keeps its own score (a likelihood head scores each
        # pair's own query span, whatever the other queries' lengths)
        other = rr.submit(LONG[:200], [MIDDLE, SHORT])
        mine = rr.submit(SHORT, [MIDDLE])
        assert abs(mine.result().scores[0] - alone) <= 1e-4
        assert other.result().scores == pytest.approx(rr.score(LONG[:200], [MIDDLE, SHORT]).scores, abs=1e-4)

        ids, _ = rr.tokenize(SHORT, [MIDDLE], truncate=False)
        x = torch.tensor(ids)
        with torch.no_grad():
            if preset.head == "score":
                ref = AutoModelForSequenceClassification.from_pretrained(folder).eval()(x).logits[0, 0].item()
            elif preset.head == "query_likelihood":  # mean log P(query token | everything before it)
                logp = AutoModelForCausalLM.from_pretrained(folder).eval()(x).logits[0].log_softmax(-1)
                tail = len(rr.tokenizer.encode(preset.template[-1].format(query=SHORT), add_special_tokens=False))
                targets = x[0, -tail:]
                ref = logp[-tail - 1 : -1].gather(1, targets[:, None]).mean().item()
            else:
                logits = AutoModelForCausalLM.from_pretrained(folder).eval()(x).logits[0, -1]
                yes, no = (rr.tokenizer.encode(w, add_special_tokens=False)[0] for w in preset.yes_no)
                ref = (logits[yes] - logits[no]).item()
        if preset.activation == "sigmoid":
            ref = 1 / (1 + np.exp(-ref))
        elif preset.activation == "exp":
            ref = float(np.exp(ref))
        assert abs(alone - ref) <= 1e-4
    finally:
        rr.close()


def test_templates_follow_the_model_cards(tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.add_special_tokens({"additional_special_tokens": LLARA_TOKENS})
    from models.templates import TemplateRenderer

    rep = TemplateRenderer(tok, ENCODERS["repllama"].query_template, 512).render({"text": "hi"}, False).ids
    assert rep[0] == tok.bos_token_id and rep[-1] == tok.eos_token_id
    assert tok.decode(rep[1:-1]) == "query: hi"

    llara = ENCODERS["llara"]
    q = TemplateRenderer(tok, llara.query_template, 533).render({"text": "hi"}, False).ids
    p = TemplateRenderer(tok, llara.passage_template, 533).render({"text": "hi"}, False).ids
    assert q[-8:] == tok.convert_tokens_to_ids(LLARA_TOKENS[8:])
    assert p[-8:] == tok.convert_tokens_to_ids(LLARA_TOKENS[:8])
    assert "predict the following passage" in tok.decode(q) and "summarize the above" in tok.decode(p)

    rank = TemplateRenderer(tok, RERANKERS["rankllama"].template, 512).render({"query": "q", "document": "d"}, False)
    assert rank.ids.count(tok.bos_token_id) == 2 and rank.ids[-1] != tok.eos_token_id


def test_truncation_is_explicit_and_keeps_the_suffix(tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    from models.templates import TemplateRenderer

    r = TemplateRenderer(tok, ENCODERS["smollm2"].passage_template, 32)
    with pytest.raises(InputTooLong):
        r.render({"text": LONG}, truncate=False)
    out = r.render({"text": LONG}, truncate=True)
    assert len(out.ids) == 32 and out.ids[-1] == tok.eos_token_id
    full = len(tok.encode("passage: " + LONG, add_special_tokens=False)) + 1
    assert out.truncated == full - 32 > 0
