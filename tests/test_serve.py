"""`facet serve` command line and adapter merging (no vLLM needed: tiny random model)."""

from __future__ import annotations

import json

import pytest


@pytest.fixture()
def tiny_adapter(tmp_path, tiny_model_dir):
    """A LoRA with random (non-zero) weights on the tiny model, saved in PEFT format."""
    import torch
    from peft import LoraConfig, get_peft_model

    from engine.models import load_model

    torch.manual_seed(1)
    cfg = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False,
                     task_type="CAUSAL_LM")
    model = get_peft_model(load_model(tiny_model_dir), cfg)
    path = tmp_path / "adapter"
    model.save_pretrained(path)
    (path / "facet_provenance.json").write_text(json.dumps({"task": "extract"}))
    return path


def test_serve_command_has_the_settings_clients_rely_on(tiny_model_dir, tiny_adapter):
    from engine.serve import serve_command

    argv, env = serve_command(str(tiny_model_dir), {"extract": str(tiny_adapter)}, port=8123, cpu=True,
                              extra=["--tensor-parallel-size", "2"])
    joined = " ".join(argv)
    assert argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]  # the CPU build's `vllm` script is broken
    cfg = json.loads(argv[argv.index("--structured-outputs-config") + 1])
    assert cfg == {"backend": "xgrammar", "disable_any_whitespace": True}
    assert f"--lora-modules extract={tiny_adapter.resolve()}" in joined
    assert argv[argv.index("--max-lora-rank") + 1] == "8"
    assert argv[argv.index("--served-model-name") + 1] == str(tiny_model_dir)
    assert argv[argv.index("--port") + 1] == "8123" and "--enable-prefix-caching" in argv
    assert argv[argv.index("--dtype") + 1] == "float32" and env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    assert argv[argv.index("--block-size") + 1] == "32" and "--enable-prompt-tokens-details" in argv
    assert argv[-2:] == ["--tensor-parallel-size", "2"]
    gpu_argv, _ = serve_command(str(tiny_model_dir), {}, cpu=False)
    assert "--dtype" not in gpu_argv and "--block-size" not in gpu_argv and "--enable-lora" not in gpu_argv


def test_serve_refuses_an_adapter_vllm_cannot_load(tiny_model_dir, tiny_adapter):
    from engine.errors import EngineError
    from engine.serve import serve_command

    cfg = json.loads((tiny_adapter / "adapter_config.json").read_text())
    (tiny_adapter / "adapter_config.json").write_text(json.dumps({**cfg, "use_dora": True}))
    with pytest.raises(EngineError, match="DoRA"):
        serve_command(str(tiny_model_dir), {"extract": str(tiny_adapter)}, cpu=True)


def test_cli_serve_dry_run_names_adapters_by_task(tiny_model_dir, tiny_adapter, capsys):
    from engine.cli import main

    assert main(["serve", "--model", str(tiny_model_dir), "--adapter", str(tiny_adapter), "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert f"extract={tiny_adapter.resolve()}" in err
    assert (f"clients: facet TASK FILE --backend openai --base-url http://127.0.0.1:8000/v1 --model {tiny_model_dir} "
            "--adapter extract --schema-as grammar -o OUT.jsonl") in err  # what a client types, faster schema form
    assert main(["serve", "--model", str(tiny_model_dir), "--grammar", "llguidance", "--host", "0.0.0.0",
                 "--port", "8011", "--dry-run"]) == 0
    assert (f"clients: facet TASK FILE --backend openai --base-url http://127.0.0.1:8011/v1 --model {tiny_model_dir} "
            "-o OUT.jsonl") in capsys.readouterr().err  # no grammar form for a server on llguidance
    assert main(["serve", "--model", str(tiny_model_dir), "--adapter", str(tiny_adapter),
                 "--adapter", str(tiny_adapter), "--dry-run"]) == 2
    assert "two adapters are named 'extract'" in capsys.readouterr().err


def test_serve_client_hint_names_what_the_server_serves():
    from engine.cli import serve_client_hint

    two = serve_client_hint("smollm2-135m", ["extract", "normalize"], "::", 8000, "xgrammar")
    assert two == ("clients: facet TASK FILE --backend openai --base-url http://127.0.0.1:8000/v1 --adapter NAME "
                   "--schema-as grammar -o OUT.jsonl (NAME: extract | normalize)")
    merged = serve_client_hint("/m/other", ["extract"], "10.0.0.5", 9000, "xgrammar", merged=True)
    assert merged == ("clients: facet TASK FILE --backend openai --base-url http://10.0.0.5:9000/v1 --adapter extract "
                      "--schema-as grammar -o OUT.jsonl")  # a merged server serves the adapter's name only


def test_merged_model_computes_what_base_plus_lora_computes(tiny_model_dir, tiny_adapter, tmp_path, monkeypatch):
    import torch
    from peft import PeftModel

    from engine.backends.vllm import merged_model
    from engine.models import load_model
    from engine.serve import serve_command

    monkeypatch.setenv("FACET_CACHE", str(tmp_path / "cache"))
    merged = merged_model(tiny_model_dir, tiny_adapter)
    assert merged_model(tiny_model_dir, tiny_adapter) == merged  # cached: built once
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.inference_mode():
        want = PeftModel.from_pretrained(load_model(tiny_model_dir), str(tiny_adapter))(ids).logits
        base = load_model(tiny_model_dir)(ids).logits
        got = load_model(merged)(ids).logits
    assert not torch.allclose(want, base, atol=1e-3)  # the adapter matters...
    torch.testing.assert_close(got, want, atol=0.05, rtol=0.02)  # ...and merging keeps it (bf16 weights)
    argv, _ = serve_command(str(tiny_model_dir), {"extract": str(tiny_adapter)}, cpu=True, merge=True)
    assert argv[argv.index("--model") + 1] == str(merged) and "--enable-lora" not in argv
    assert argv[argv.index("--served-model-name") + 1] == "extract"
