"""Notebook 05 helpers: win rate, implicit rewards, the optional judge (on a fake endpoint), export."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from helpers.compare import export_comparison, generate_side_by_side, implicit_rewards, judge_from_env, win_rate


def test_win_rate_counts_ties_half_and_checks_input():
    assert win_rate([1, 0, 2, 3], [0, 0, 5, 1]) == (1 + 0.5 + 0 + 1) / 4
    with pytest.raises(ValueError, match="equal length"):
        win_rate([1], [1, 2])


def test_judge_is_off_unless_configured_and_parses_the_answer(monkeypatch):
    monkeypatch.delenv("DPO_JUDGE_URL", raising=False)
    monkeypatch.delenv("DPO_JUDGE_KEY", raising=False)
    assert judge_from_env() is None
    seen = {}

    class Fake(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            seen["auth"] = self.headers["Authorization"]
            seen["body"] = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            out = json.dumps({"choices": [{"message": {"content": "B."}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *a):
            pass

    srv = HTTPServer(("127.0.0.1", 0), Fake)
    threading.Thread(target=srv.handle_request, daemon=True).start()
    monkeypatch.setenv("DPO_JUDGE_URL", f"http://127.0.0.1:{srv.server_port}/v1")
    monkeypatch.setenv("DPO_JUDGE_KEY", "sk-test")
    monkeypatch.setenv("DPO_JUDGE_MODEL", "judge-1")
    assert judge_from_env()("hi", "rude", "polite") == "B"
    assert seen["auth"] == "Bearer sk-test" and seen["body"]["model"] == "judge-1"
    assert "polite" in seen["body"]["messages"][0]["content"]
    srv.server_close()


def test_fresh_adapter_generates_like_the_reference_with_zero_implicit_reward(toy_sft_dir):
    from helpers.data import TOY, resolve_hh
    from helpers.evaluation import chat_prompts
    from helpers.models import load_model
    from helpers.toy_model import TOY_DECODING

    model, tok = load_model(toy_sft_dir, use_unsloth=False)  # fresh LoRA: policy == reference
    prompts = chat_prompts(resolve_hh(TOY).data["test"])[:12]
    rows = generate_side_by_side(model, tok, prompts, decoding=TOY_DECODING, seed=3)
    assert all(r["reference"] == r["policy"] for r in rows)  # same seed, same model: same text
    ref_r, pol_r = implicit_rewards(model, tok, rows, beta=0.1)
    assert max(abs(x) for x in ref_r + pol_r) < 1e-5


def test_export_writes_csv_and_escaped_html(tmp_path):
    rows = [{"prompt": "a<b", "reference": "x", "policy": "y", "score": 1.0}]
    p = export_comparison(rows, tmp_path, columns=["prompt", "reference", "policy", "score"])
    assert p["csv"].read_text().splitlines()[1] == "a<b,x,y,1.0"
    assert "a&lt;b" in p["html"].read_text()


def test_the_judge_sees_the_whole_conversation_and_the_win_rate_has_a_wilson_interval():
    from helpers.compare import conversation_text, judge_pairs, wilson_interval

    seen = []

    def judge(conversation, a, b):
        seen.append(conversation)
        return "A" if "polite" in a else "B"

    messages = [{"role": "user", "content": "Hi, I need a recipe."}, {"role": "assistant", "content": "For what?"},
                {"role": "user", "content": "Soup."}]
    rows = [{"prompt": "Soup.", "messages": messages, "reference": "rude", "policy": "polite"} for _ in range(50)]
    res = judge_pairs(judge, rows, n=50)
    assert seen[0] == conversation_text(messages) == "User: Hi, I need a recipe.\n\nAssistant: For what?\n\nUser: Soup."
    assert res["win_rate"] == 1.0 and res["win_rate_ci"][1] == 1.0 and 0.92 < res["win_rate_ci"][0] < 0.94
    lo, hi = wilson_interval(25, 50)  # 50 judged prompts at 0.5: about +-0.14, as the issue says
    assert lo == pytest.approx(0.366, abs=1e-3) and hi == pytest.approx(0.634, abs=1e-3)
    with pytest.raises(ValueError, match="n must"):
        wilson_interval(1, 0)


def test_expected_generation_counts_decode_steps_and_names_its_source():
    """Notebook 05 prints this before generating: 2 sides x batches x new tokens, at the CPU rate measured for
    SmolLM2 or the GPU arithmetic (labelled); its online parameters fit a workshop on a GPU."""
    from pathlib import Path

    import nbformat

    from helpers.compare import CPU_DECODE_STEP_S, expected_generation

    ROOT = Path(__file__).resolve().parents[1]

    cpu, why = expected_generation(64, {"max_new_tokens": 128}, device="cpu")
    assert "measured" in why and cpu == pytest.approx(2 * 2 * 128 * CPU_DECODE_STEP_S)  # 2 sides x 2 batches x 128
    gpu, why = expected_generation(64, {"max_new_tokens": 128}, device="cuda")
    assert "not a measurement" in why and gpu < cpu / 10
    c = json.loads((ROOT / "benchmarks" / "results" / "quality_calibration.json").read_text())["smollm2_reference"]
    steps = math.ceil(c["prompts"] / 32) * c["decoding"]["max_new_tokens"]  # one side, batches of 32
    assert CPU_DECODE_STEP_S == pytest.approx(c["seconds"] / steps, rel=0.25)  # the constant follows the measurement
    assert expected_generation(65, {"max_new_tokens": 128}, device="cuda")[0] == pytest.approx(gpu * 1.5)
    assert expected_generation(6, {"max_new_tokens": 32}, device="cpu", toy=True)[0] is None
    for bad, match in (({"n_prompts": 0}, "n_prompts"), ({"device": "tpu"}, "device")):
        kw = {"n_prompts": 8, "device": "cpu", **bad}
        with pytest.raises(ValueError, match=match):
            expected_generation(kw.pop("n_prompts"), {"max_new_tokens": 8}, **kw)
    params = {}
    exec(next(c for c in nbformat.read(ROOT / "notebooks" / "05_before_after_generation.ipynb", as_version=4).cells
              if "parameters" in c.metadata.get("tags", [])).source, params)
    minutes = expected_generation(params["N_PROMPTS"], params["DECODING"], device="cuda")[0] / 60
    assert minutes < 5, minutes
