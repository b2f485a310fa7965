from collections import Counter

from hrlaif_ray.categories import CHOICE_LETTERS
from hrlaif_ray.config import PromptMixConfig
from hrlaif_ray.data.prompt_mix import generate_prompt_mix


def test_seeded_and_correct():
    cfg = PromptMixConfig(n=2000, seed=3)
    records = generate_prompt_mix(cfg)
    assert records == generate_prompt_mix(cfg)
    assert records != generate_prompt_mix(cfg.model_copy(update={"seed": 4}))
    counts = Counter(r.category for r in records)
    for cat, share in [
        ("math", cfg.math),
        ("multiple_choice", cfg.multiple_choice),
        ("harmful", cfg.harmful),
        ("open_qa", cfg.open_qa),
    ]:
        assert abs(counts[cat] / cfg.n - share) < 0.04, (cat, counts)
    for r in records:
        if r.category in ("math", "multiple_choice"):
            m = r.metadata
            value = m["a"] + m["b"] if m["op"] == "+" else m["a"] - m["b"]
            assert cfg.a_min <= m["a"] <= cfg.a_max and cfg.b_min <= m["b"] <= cfg.b_max
            if r.category == "math":
                assert r.answer == str(value)
            else:
                assert r.choices[CHOICE_LETTERS.index(r.answer)] == str(value) and len(set(r.choices)) == 4
                assert f"({r.answer}) {value}" in r.text
        else:
            assert r.answer is None
