"""Load a model folder in vLLM (in-process engine) and greedily generate; writes token ids and logprobs as JSON.

Usage: python vllm_generate.py MODEL_DIR OUT_JSON MAX_TOKENS PROMPT [PROMPT ...]
"""

import json
import sys

from vllm import LLM, SamplingParams


def main() -> None:
    model_dir, out, max_tokens, prompts = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    llm = LLM(
        model=model_dir,
        dtype="float32",
        enforce_eager=True,
        max_model_len=256,
        seed=0,
        logprobs_mode="processed_logprobs",
    )
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True, logprobs=1)
    rows = []
    for o in llm.generate(prompts, params, use_tqdm=False):
        c = o.outputs[0]
        rows.append(
            {
                "prompt_token_ids": list(o.prompt_token_ids),
                "token_ids": list(c.token_ids),
                "logprobs": [step[t].logprob for step, t in zip(c.logprobs, c.token_ids)],
                "text": c.text,
            }
        )
    with open(out, "w") as fh:
        json.dump(rows, fh)


if __name__ == "__main__":
    main()
