"""Notebook 05 helpers: win rate, implicit rewards, the optional judge (on a fake endpoint), export."""

from __future__ import annotations

import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from helpers.compare import export_comparison, generate_side_by_side, implicit_rewards, judge_from_env, win_rate

ROOT = Path(__file__).resolve().parents[1]


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
    from helpers.evaluation import chat_prompts
    from helpers.models import load_model
    from helpers.worlds.splits import TOY, resolve_hh
    from helpers.worlds.toy_model import TOY_DECODING

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


# ------------------------------------------------------------------------------------------------ the LLM judge
def test_judge_replies_are_parsed_robustly():
    from helpers.compare import parse_verdict

    for text, want in [("A", "A"), ("Answer: B", "B"), ("**B**", "B"), ("B.", "B"), ("tie", "tie"),
                       ("Final answer: **A**", "A"), ("Verdict - tie", "tie"), ("`A`", "A"), ("Response B", "B")]:
        assert parse_verdict(text) == want, text
    for text in ["Both are fine", "", None, "I cannot decide between them", "AB"]:
        assert parse_verdict(text) is None, text


class _JudgeServer:
    """An OpenAI-compatible endpoint that answers each request with the next scripted behaviour."""

    def __init__(self, script):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        script = list(script)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers["Content-Length"]))
                kind, value = script.pop(0)
                if kind == "sleep":
                    time.sleep(value)
                    kind, value = "content", "A"
                status, ctype, body = 200, "application/json", b""
                if kind == "content":
                    body = json.dumps({"choices": [{"message": {"content": value}}]}).encode()
                elif kind == "status":
                    status, body = value, b'{"error": {"message": "invalid api key"}}'
                elif kind == "html":
                    ctype, body = "text/html", b"<html><body>Bad gateway</body></html>"
                elif kind == "json":
                    body = json.dumps(value).encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _rows(n):
    return [{"prompt": f"q{i}", "reference": f"r{i}", "policy": f"p{i}"} for i in range(n)]


def test_every_judge_failure_is_counted_per_prompt_and_the_rest_still_judged(monkeypatch):
    """Defect 6: any judge failure killed notebook 05; "Answer: B" counted as a tie."""
    from helpers.compare import judge_from_env, judge_pairs

    script = [("content", "A"), ("content", "Answer: B"), ("content", "**B**"), ("content", "Both are fine"),
              ("status", 401), ("html", None), ("content", None), ("json", {"error": {"message": "overloaded"}}),
              ("sleep", 3), ("content", "tie")]
    srv = _JudgeServer(script)
    try:
        monkeypatch.setenv("DPO_JUDGE_URL", srv.url)
        monkeypatch.setenv("DPO_JUDGE_KEY", "sk-test")
        judge = judge_from_env(timeout=1.0)
        rows = _rows(10)
        res = judge_pairs(judge, rows, n=10, seed=0)
    finally:
        srv.close()
    assert res["asked"] == 10 and res["judged"] == 4
    assert res["errors"] == {"unparseable": 1, "HTTP 401": 1, "not JSON": 1, "no content": 2, "timeout": 1}
    assert res["tie"] == 1 and res["policy"] + res["reference"] == 3
    assert res["win_rate"] == (res["policy"] + 0.5) / 4
    assert rows[3]["judge"] == "error: unparseable" and rows[4]["judge"] == "error: HTTP 401"


def test_an_unreachable_judge_gives_no_win_rate_instead_of_an_exception(monkeypatch):
    import socket

    from helpers.compare import judge_from_env, judge_pairs

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("DPO_JUDGE_URL", f"http://127.0.0.1:{port}/v1")
    monkeypatch.setenv("DPO_JUDGE_KEY", "sk-test")
    res = judge_pairs(judge_from_env(timeout=2.0), _rows(5), n=5)
    assert res == {"judged": 0, "asked": 5, "errors": {"connection": 3, "skipped (judge down)": 2}, "policy": 0,
                   "reference": 0, "tie": 0, "win_rate": None, "win_rate_ci": None}


@pytest.mark.notebook
def test_notebook_05_completes_and_exports_with_a_dead_judge(tmp_path, monkeypatch):
    import nbformat

    from helpers.course.suite import run_notebook

    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("DPO_JUDGE_URL", f"http://127.0.0.1:{port}/v1")
    monkeypatch.setenv("DPO_JUDGE_KEY", "sk-test")
    nb = ROOT / "notebooks" / "05_before_after_generation.ipynb"
    res = run_notebook(nb, tmp_path / "05.ipynb", run_dir=tmp_path, timeout=600)
    assert res.ok, res.error
    assert (tmp_path / "05_generation" / "comparison.csv").exists()
    metrics = json.loads((tmp_path / "metrics" / "05_before_after_generation.json").read_text())
    assert metrics["judge"]["errors"] == {"connection": 3, "skipped (judge down)": 47}
    assert metrics["judge"]["win_rate"] is None
    assert metrics["win_rate"] is not None  # offline: the ground-truth win rate is still there
    out = "".join("".join(o.get("text", "")) for c in nbformat.read(tmp_path / "05.ipynb", as_version=4).cells
                  if c.cell_type == "code" for o in c.outputs)
    assert "connection x3, skipped (judge down) x47" in out
