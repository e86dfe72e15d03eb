"""One ensemble, two kinds of backend: a local member and a member behind a real OpenAI-compatible server."""

from ensemble_instruct.backends import make_backend
from ensemble_instruct.backends.scripted import ScriptedBackend
from ensemble_instruct.config import build_config
from ensemble_instruct.run import run_generation
from ensemble_instruct.store import read_jsonl
from test_pipeline import writer


def test_local_and_http_members_in_one_run(tmp_path, smollm2_server):
    cfg = build_config({
        "members": [
            {"name": "gen", "backend": "scripted", "model": "script", "roles": ["instructions", "instances"]},
            {"name": "remote", "backend": "http", "model": "smollm2", "base_urls": [smollm2_server],
             "roles": ["outputs"]},
        ],
        "type_a": {"target": 2}, "type_b": {"target": 2}, "instructions": {"batch_size": 2},
        "consensus": {"threshold": 0.0}, "exports": ["jsonl"],
    })
    remote = make_backend(cfg.members[1])
    try:
        run_generation(cfg, tmp_path, backends={"gen": ScriptedBackend([writer], "gen"), "remote": remote})
    finally:
        remote.close()
    outputs = list(read_jsonl(tmp_path / "stages" / "outputs.jsonl"))
    assert outputs and all(o["member"] == "remote" for o in outputs)
    assert all(o["candidate"]["prompt_mode"] == "zero_shot" and o["candidate"]["error"] is None for o in outputs)
    assert any(o["candidate"]["text"] for o in outputs)  # the server's model really answered
    decided = list(read_jsonl(tmp_path / "data.jsonl")) + [
        r for r in read_jsonl(tmp_path / "rejected.jsonl") if r["stage"] == "ensemble"]
    answered = {o["instance_id"] for o in outputs}
    assert decided and all((d.get("id") or d["item_id"]) in answered for d in decided)
