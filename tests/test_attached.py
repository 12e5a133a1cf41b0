"""Attached models under a fake /kaggle/input: every kind is found (a pretrain adapter export, a Hugging Face folder,
a 4-bit one, a GGUF), the best kind is chosen, a model folder is not searched inside, and a public checkpoint gets
the preset made for its format."""
import json

import pytest
from test_formats import TOKENIZERS, checkpoint

from solver.attached import DEFAULT_PRESET, PRESET_OF_FORMAT, classify, find_attached, preset_for
from solver.config import PRESETS


def hf_folder(path, config=None):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config or {"model_type": "qwen3"}))
    (path / "model.safetensors").write_bytes(b"weights")
    return path


def adapter_export(path):
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text("{}")
    (path / "arc_adapter.json").write_text(json.dumps({"base": "smollm2"}))
    (path / "adapter-00001.safetensors").write_bytes(b"weights")
    return path


def gguf(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF")
    return path


def test_each_kind_is_found_and_the_best_chosen(tmp_path):
    root = tmp_path / "input"
    four = hf_folder(root / "da-fr" / "architects-8b" / "transformers" / "default" / "1",
                     {"model_type": "mistral", "quantization_config": {"quant_method": "bitsandbytes",
                                                                       "load_in_4bit": True}})
    hf = hf_folder(root / "sorokin" / "qwen3_4b_grids15_sft139" / "transformers" / "default" / "1")
    file = gguf(root / "smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf")
    export = adapter_export(root / "arc-ttt-model" / "other" / "default" / "1")
    (root / "arc-prize-2025").mkdir()
    (root / "arc-prize-2025" / "config.json").write_text("{}")  # no weights: not a model
    found = find_attached(root)
    assert [(a.kind, a.spec) for a in found] == [("adapter", str(export)), ("hf", str(hf)), ("hf-4bit", str(four)),
                                                 ("gguf", str(file))]
    assert found[2].sets == ["model.load_in_4bit=true"] and "4-bit" in found[2].why and "mistral" in found[2].why
    assert "adapter export of pretrain" in found[0].why and "smollm2" in found[0].why
    assert find_attached(tmp_path / "nothing") == []


def test_a_model_folder_is_not_searched_inside(tmp_path):
    outer = hf_folder(tmp_path / "m")
    gguf(outer / "nested" / "x.gguf")
    assert [a.spec for a in find_attached(tmp_path)] == [str(outer)]
    assert classify(tmp_path / "m" / "nested" / "x.gguf").kind == "gguf"
    assert classify(tmp_path / "m" / "config.json") is None


@pytest.mark.parametrize("kind", sorted(TOKENIZERS))
def test_a_public_checkpoint_gets_the_preset_made_for_its_format(kind, tmp_path):
    directory = checkpoint(kind, tmp_path / "input" / kind)
    chosen = find_attached(tmp_path / "input")
    assert [a.kind for a in chosen] == ["hf"]
    preset = preset_for(chosen[0])
    assert preset == PRESET_OF_FORMAT[kind] and PRESETS[preset].model.format == kind
    assert directory.exists()


def test_anything_else_gets_the_kaggle_preset(tmp_path):
    assert preset_for(None) == DEFAULT_PRESET
    assert preset_for(classify(gguf(tmp_path / "a.gguf"))) == DEFAULT_PRESET
    broken = classify(hf_folder(tmp_path / "broken", {}))  # no tokenizer: the run will say what is wrong
    assert preset_for(broken) == DEFAULT_PRESET
