"""The CLI's settings flags are derived from service.settings.Settings: one declaration per setting."""

from __future__ import annotations

import pytest

from cli import build_parser, settings_from
from service.settings import Settings

SECRETS = {"api_keys", "worker_api_key"}


def serve_help() -> str:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sub.choices["serve"].format_help()


def test_every_setting_is_a_serve_flag_with_the_fields_help():
    text = serve_help()
    flat = "".join(text.split())  # argparse wraps at spaces and hyphens
    for name, field in Settings.model_fields.items():
        flag = (field.json_schema_extra or {}).get("flag", "--" + name.replace("_", "-"))
        if name in SECRETS:
            assert flag is None and f"--{name.replace('_', '-')} " not in text, name
            continue
        assert f"{flag} " in text and f"envREPRANK_{name.upper()}" in flat, name
        assert "".join(field.description.split()) in flat, name


def test_flags_parse_into_settings_and_unset_flags_keep_the_env(monkeypatch):
    monkeypatch.setenv("REPRANK_MAX_DOCUMENTS", "7")
    monkeypatch.setenv("REPRANK_MAX_INPUTS", "9")
    args = build_parser().parse_args(["serve", "--max-documents", "5", "--no-hybrid", "--encoder-url", "http://a,http://b",
                                      "--encoder-url", "http://c", "--qdrant-quantization", "int8",
                                      "--worker-timeout", "2.5", "--max-batch-tokens", "512"])
    s = settings_from(args)
    assert (s.max_documents, s.max_inputs, s.hybrid, s.qdrant_quantization) == (5, 9, False, "int8")
    assert s.encoder_urls == ["http://a", "http://b", "http://c"]
    assert (s.worker_timeout_s, s.max_batch_tokens) == (2.5, 512)


@pytest.mark.parametrize("argv", [["serve", "--api-keys", "k"], ["serve", "--rerank-fusion", "borda"],
                                  ["eval", "--dataset", "d", "--max-documents", "3"]])
def test_secrets_bad_choices_and_other_commands_settings_are_refused(argv, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv)
    assert "error" in capsys.readouterr().err
