"""The API key never reaches labels, Parquet files, dumped configs or error messages."""

import asyncio

from hrlaif_ray.config import JudgeEndpoint, LabelingConfig, dump_config
from hrlaif_ray.data.records import PromptRecord, Response
from hrlaif_ray.data.schemas import write_records
from hrlaif_ray.judges.launch import sim_judge_server
from hrlaif_ray.labeling.strategies import Judges, LabelItem, label_item
from hrlaif_ray.zero import free_port

SECRET = "sk-proj-THIS-MUST-NEVER-LEAK-0123456789"


def test_key_stays_in_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("HRLAIF_TEST_KEY", SECRET)
    item = LabelItem(
        PromptRecord("p", "open_qa", "Why is the sky blue?", "t"),
        [Response("Light."), Response("Rayleigh scattering.")],
    )
    labels = []
    with sim_judge_server(["p_500=1.0"]) as failing:  # every attempt fails: errors travel into the label
        for base in (failing, f"http://127.0.0.1:{free_port()}/v1"):  # and a port nobody listens on
            endpoint = JudgeEndpoint(base_url=base, api_key_env="HRLAIF_TEST_KEY", max_retries=1, timeout_s=2)
            cfg = LabelingConfig(judges=[endpoint], rewriter=endpoint)

            async def run():
                judges = Judges.from_config(cfg)
                assert SECRET not in repr(judges.judges[0])
                try:
                    return await label_item(judges, item)
                finally:
                    await judges.close()

            labels.append(asyncio.run(run()))
            assert SECRET not in dump_config(cfg)
    assert [l.status for l in labels] == ["failed", "failed"]
    assert "HTTP 500" in labels[0].error and (
        "APIConnectionError" in labels[1].error or "APITimeoutError" in labels[1].error
    )
    assert labels[1].tokens_in == 0  # no connection was made: nothing can have been billed
    path = write_records(tmp_path / "labels.parquet", labels)
    assert SECRET.encode() not in path.read_bytes()
    assert all(SECRET not in (l.error or "") for l in labels)
