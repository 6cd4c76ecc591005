"""Loading from local disk only: HF folders, PEFT LoRA adapters merged at load (score head included),
clear errors for hub ids and missing paths."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from peft import LoraConfig, get_peft_model
from tiny import build
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from models import open_encoder, open_reranker
from models.errors import ModelNotFound
from models.loading import load, model_revision, resolve

TEXT = "a yaml parser and emitter for python"
LORA = {"r": 4, "lora_alpha": 8, "init_lora_weights": False,  # non-zero B, so the adapter changes outputs
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}


def test_hub_ids_and_missing_paths_are_refused_with_a_download_hint(tmp_path):
    with pytest.raises(ModelNotFound, match="huggingface-cli download castorini/repllama-v1-7b-lora-passage"):
        resolve("castorini/repllama-v1-7b-lora-passage")
    with pytest.raises(ModelNotFound, match="never downloads"):
        resolve(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound, match="not a model"):
        resolve(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="ships no weights"):
        open_encoder("repllama")


def test_encoder_adapter_is_merged_at_load(tiny_llama, tmp_path):
    torch.manual_seed(1)
    peft_model = get_peft_model(AutoModel.from_pretrained(tiny_llama),
                                LoraConfig(task_type="FEATURE_EXTRACTION", **LORA)).eval()
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    (adapter / "reprank.json").write_text(json.dumps({"preset": "smollm2"}))

    enc = open_encoder(str(adapter))  # preset read from reprank.json, base from adapter_config.json
    try:
        ids, _ = enc.tokenize([TEXT], "query", False)
        with torch.no_grad():
            ref = peft_model(input_ids=torch.tensor(ids)).last_hidden_state[0, -1]
            plain = AutoModel.from_pretrained(tiny_llama)(input_ids=torch.tensor(ids)).last_hidden_state[0, -1]
        got = torch.from_numpy(enc.encode([TEXT], "query").vectors[0])
        assert torch.cosine_similarity(got, ref, dim=0) > 0.9999
        assert torch.cosine_similarity(got, plain, dim=0) < 0.999  # the adapter did change the model
    finally:
        enc.close()


def test_reranker_adapter_with_saved_score_head(tokenizer_dir, tmp_path):
    base = build(tmp_path / "base", AutoTokenizer.from_pretrained(tokenizer_dir), "llama", head="score")
    torch.manual_seed(2)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    peft_model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", **LORA)).eval()
    with torch.no_grad():  # a trained head differs from the base's random one
        peft_model.base_model.model.score.modules_to_save["default"].weight.normal_()
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)

    rr = open_reranker(str(adapter), "rankllama")
    try:
        ids, _ = rr.tokenize("yaml parser", [TEXT], False)
        with torch.no_grad():
            ref = peft_model(input_ids=torch.tensor(ids)).logits[0, 0].item()
        assert abs(rr.score("yaml parser", [TEXT]).scores[0] - ref) <= 1e-4
    finally:
        rr.close()


def test_adapter_base_can_be_overridden(tiny_llama, tmp_path):
    peft_model = get_peft_model(AutoModel.from_pretrained(tiny_llama), LoraConfig(task_type="FEATURE_EXTRACTION",
                                                                                  **LORA))
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "meta-llama/Llama-2-7b-hf"
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelNotFound, match="Llama-2-7b-hf"):
        load(str(adapter))
    assert load(str(adapter), base=str(tiny_llama)).dim == 64


def test_revision_follows_the_weights_not_the_folder_or_its_logs(tmp_path):
    """Copies fingerprint alike (any machine, any install); retrained weights, even of the same size,
    do not; logs and records beside the weights do not count; a large file is sampled at both ends."""
    a = tmp_path / "a"
    a.mkdir()
    (a / "adapter_config.json").write_text("{}")
    weights = bytearray(3 * 2**20)
    (a / "adapter_model.safetensors").write_bytes(weights)
    b = tmp_path / "b"
    shutil.copytree(a, b)
    (b / "train_log.jsonl").write_text('{"step": 1}\n')
    assert model_revision(str(a)) == model_revision(str(b))
    weights[-1] = 1  # the last byte of the tail sample
    (b / "adapter_model.safetensors").write_bytes(weights)
    assert model_revision(str(a)) != model_revision(str(b))
    single = tmp_path / "m.gguf"
    single.write_bytes(b"GGUF" + bytes(10))
    assert len(model_revision(str(single))) == 12


def test_dtype_auto_is_bf16_only_where_the_cpu_multiplies_it_natively():
    """auto: bf16 on a CPU with AMX or avx512_bf16 (read from torch's own CPU checks), fp32 elsewhere;
    an explicit dtype wins."""
    from models.loading import cpu_bf16
    from service.settings import Settings

    native = bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    assert (cpu_bf16() is not None) == native
    auto = Settings(device="cpu")
    assert auto.torch_dtype() == (torch.bfloat16 if native else torch.float32)
    assert ("the CPU has " + cpu_bf16() if native else "no native bf16") in auto.dtype_reason()
    assert Settings(device="cpu", dtype="float32").torch_dtype() == torch.float32
    assert Settings(device="cpu", dtype="bfloat16").torch_dtype() == torch.bfloat16


def test_default_rerank_depth_is_chosen_by_where_the_reranker_runs():
    """auto: CPU_CANDIDATES when this process reranks on its CPU, 20 on a GPU or a gateway's workers;
    an explicit setting wins."""
    from service.settings import CPU_CANDIDATES, Settings

    assert Settings(device="cpu").search_candidates() == CPU_CANDIDATES
    assert Settings(device="cuda").search_candidates() == 20
    assert Settings(device="cpu", role="gateway").search_candidates() == 20
    assert Settings(device="cpu", default_candidates=7).search_candidates() == 7


def test_bundled_minilm_matches_sentence_transformers_convention():
    """all-MiniLM-L6-v2 through reprank's encoder equals its model card's recipe (mean of the token states
    under the attention mask, L2-normalised) computed with plain transformers."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from models import open_encoder
    from models.loading import source_path

    texts = ["how to burn a CD", "A tool that writes CDs and DVDs from the command line, with a long tail " * 3]
    with open_encoder("all-minilm-l6-v2", dtype=torch.float32) as enc:
        ours = enc.encode(texts, "passage").vectors
    path = source_path("bundled:all-minilm-l6-v2")
    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].float()
    ref = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    assert ours.shape == (2, 384)
    assert (ours * ref).sum(1).min() > 0.9999


def test_a_score_adapter_without_its_head_over_a_headless_base_is_refused(tiny_llama, tmp_path):
    """The base (a causal LM) has no score head and the adapter saved none: serving it would rank with a
    random head, so loading refuses instead of warning."""
    model = AutoModelForSequenceClassification.from_pretrained(tiny_llama, num_labels=1)
    adapter = tmp_path / "adapter"
    get_peft_model(model, LoraConfig(**LORA)).save_pretrained(adapter)  # no task type: no modules_to_save
    with pytest.raises(ModelNotFound, match="carries none"):
        open_reranker(str(adapter), "rankllama")
