import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hrlaif_ray.config import ModelConfig
from hrlaif_ray.models import ScalarHeadModel, build_tiny_causal_lm, save_model_folder
from hrlaif_ray.models.scalar_head import last_token_index


def test_tokenizer_splits_digits_and_speaks_chatml(tiny_tokenizer):
    tok = tiny_tokenizer
    assert len(tok) == 384
    ids = tok("Tom has 123 apples", add_special_tokens=False)["input_ids"]
    digit_tokens = [tok.decode([i]) for i in ids if tok.decode([i]).strip().isdigit()]
    assert digit_tokens == ["1", "2", "3"]
    text = "Zoë has 23 pens — and 4 more? ✓"
    assert tok.decode(tok(text)["input_ids"]) == text  # byte-level: nothing is out of vocabulary
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tok.eos_token == "<|im_end|>" and tok.pad_token_id != tok.eos_token_id


def test_tiny_model_is_seeded_and_leaves_global_rng_alone(tiny_tokenizer):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = build_tiny_causal_lm(ModelConfig(seed=7), tiny_tokenizer)
    assert torch.equal(torch.rand(3), expected)
    b = build_tiny_causal_lm(ModelConfig(seed=7), tiny_tokenizer)
    c = build_tiny_causal_lm(ModelConfig(seed=8), tiny_tokenizer)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), name
    assert not all(torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def test_saved_folder_loads_in_transformers(tmp_path, tiny_tokenizer):
    for arch in ("qwen2", "llama"):
        cfg = ModelConfig(arch=arch, hidden_size=64, num_heads=4, num_kv_heads=2, intermediate_size=128)
        model = build_tiny_causal_lm(cfg, tiny_tokenizer)
        folder = save_model_folder(model, tiny_tokenizer, tmp_path / arch)
        loaded = AutoModelForCausalLM.from_pretrained(folder)
        tok = AutoTokenizer.from_pretrained(folder)
        assert type(loaded).__name__.lower().startswith(arch) and loaded.config.num_key_value_heads == 2
        batch = tok(["Tom has 23 apples.", "Hi"], return_tensors="pt", padding=True)
        with torch.no_grad():
            assert torch.allclose(model(**batch).logits, loaded(**batch).logits, atol=1e-6)
            out = loaded.generate(**batch, max_new_tokens=5, do_sample=False, min_new_tokens=5)
        assert out.shape == (2, batch["input_ids"].shape[1] + 5)


def test_last_token_index_any_padding():
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert last_token_index(mask).tolist() == [2, 4, 4]


def test_scalar_head_reads_last_real_token_and_roundtrips(tmp_path, tiny_model_dir, tiny_tokenizer):
    rm = ScalarHeadModel.from_pretrained(tiny_model_dir, kind="reward").eval()
    texts = ["Tom has 23 apples and buys 4 more.", "Hi"]
    with torch.no_grad():
        alone = torch.stack([rm(**tiny_tokenizer([t], return_tensors="pt")) for t in texts]).squeeze(1)
        for side in ("left", "right"):
            tiny_tokenizer.padding_side = side
            batch = tiny_tokenizer(texts, return_tensors="pt", padding=True)
            assert torch.allclose(rm(**batch), alone, atol=1e-5), side
        tiny_tokenizer.padding_side = "left"
        batch = tiny_tokenizer(texts, return_tensors="pt", padding=True)
        critic = ScalarHeadModel(rm.backbone, kind="critic", head=rm.head)
        values = critic(**batch)
        assert values.shape == batch["input_ids"].shape
        assert torch.allclose(values[:, -1], alone, atol=1e-5)
        saved = rm.save_pretrained(tmp_path / "rm", tokenizer=tiny_tokenizer)
        again = ScalarHeadModel.from_pretrained(saved).eval()
        assert again.kind == "reward"
        assert torch.allclose(again(**batch), rm(**batch), atol=1e-6)
        # The backbone came from the policy folder: same hidden states as the causal LM's body.
        lm = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        ids = tiny_tokenizer(["Hi"], return_tensors="pt")
        h_lm = lm.model(**ids).last_hidden_state
        assert torch.allclose(rm.backbone(**ids).last_hidden_state, h_lm, atol=1e-6)


def test_a_trained_copy_keeps_its_folders_generation_config(tmp_path, tiny_tokenizer):
    """A policy saved after training (SFT, PPO's actor, DPO) keeps the generation settings of the folder it started
    from (a pretrained model's sampling defaults), rather than a bare config written over them."""
    from transformers import GenerationConfig

    model = build_tiny_causal_lm(ModelConfig(hidden_size=64, intermediate_size=128), tiny_tokenizer)
    model.generation_config = GenerationConfig(
        eos_token_id=tiny_tokenizer.eos_token_id, temperature=0.3, top_p=0.8, do_sample=True, max_new_tokens=77
    )
    start = save_model_folder(model, tiny_tokenizer, tmp_path / "start")
    trained = save_model_folder(AutoModelForCausalLM.from_pretrained(start), tiny_tokenizer, tmp_path / "trained")
    again = GenerationConfig.from_pretrained(trained)
    assert (again.temperature, again.top_p, again.max_new_tokens) == (0.3, 0.8, 77)
    assert GenerationConfig.from_pretrained(save_model_folder(model, tiny_tokenizer, tmp_path / "new")).eos_token_id
