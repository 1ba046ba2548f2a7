"""helpers.judge: the reward-model judge (loading, formatting, truncation, memory, trust) and the optional LLM judge
(every failure counted, never fatal)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest

from helpers.llm_judge import judge_from_env

ROOT = Path(__file__).resolve().parents[1]


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
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left, as the "sleep" step means it to

            def log_message(self, *a):
                pass

        class Server(ThreadingHTTPServer):
            # Handler threads are joined by server_close(), so none outlives its test. One that did (a "sleep" step
            # waking after the test) printed a traceback from its thread while a later test called ast.parse:
            # Python 3.11.7's traceback carets call ast.parse too, and its AST constructor keeps one recursion counter
            # per interpreter (CPython gh-106905, fixed in 3.11.8), so CI's test_layers failed with "AST constructor
            # recursion depth mismatch".
            daemon_threads = False
            block_on_close = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        self._serving = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._serving.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()  # joins the handler threads
        self._serving.join(timeout=10)


def _rows(n):
    return [{"prompt": f"q{i}", "reference": f"r{i}", "policy": f"p{i}"} for i in range(n)]


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


def test_the_judge_sees_the_whole_conversation_and_the_win_rate_has_a_wilson_interval():
    from helpers.judge import wilson_interval
    from helpers.llm_judge import conversation_text, judge_pairs

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


# ------------------------------------------------------------------------------------------------ the LLM judge
def test_judge_replies_are_parsed_robustly():
    from helpers.llm_judge import parse_verdict

    for text, want in [("A", "A"), ("Answer: B", "B"), ("**B**", "B"), ("B.", "B"), ("tie", "tie"),
                       ("Final answer: **A**", "A"), ("Verdict - tie", "tie"), ("`A`", "A"), ("Response B", "B")]:
        assert parse_verdict(text) == want, text
    for text in ["Both are fine", "", None, "I cannot decide between them", "AB"]:
        assert parse_verdict(text) is None, text


def test_every_judge_failure_is_counted_per_prompt_and_the_rest_still_judged(monkeypatch):
    """Defect 6: any judge failure killed notebook 05; "Answer: B" counted as a tie."""
    from helpers.llm_judge import judge_from_env, judge_pairs

    script = [("content", "A"), ("content", "Answer: B"), ("content", "**B**"), ("content", "Both are fine"),
              ("status", 401), ("html", None), ("content", None), ("json", {"error": {"message": "overloaded"}}),
              ("sleep", 3), ("content", "tie")]
    threads_before = set(threading.enumerate())
    srv = _JudgeServer(script)
    try:
        monkeypatch.setenv("DPO_JUDGE_URL", srv.url)
        monkeypatch.setenv("DPO_JUDGE_KEY", "sk-test")
        judge = judge_from_env(timeout=1.0)
        rows = _rows(10)
        res = judge_pairs(judge, rows, n=10, seed=0)
    finally:
        srv.close()
    left = [t.name for t in threading.enumerate() if t not in threads_before and t.is_alive()]
    assert not left, f"the judge server left threads running after its test: {left}"
    assert res["asked"] == 10 and res["judged"] == 4
    assert res["errors"] == {"unparseable": 1, "HTTP 401": 1, "not JSON": 1, "no content": 2, "timeout": 1}
    assert res["tie"] == 1 and res["policy"] + res["reference"] == 3
    assert res["win_rate"] == (res["policy"] + 0.5) / 4
    assert rows[3]["llm_judge"] == "error: unparseable" and rows[4]["llm_judge"] == "error: HTTP 401"


def test_an_unreachable_judge_gives_no_win_rate_instead_of_an_exception(monkeypatch):
    import socket

    from helpers.llm_judge import judge_from_env, judge_pairs

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("DPO_JUDGE_URL", f"http://127.0.0.1:{port}/v1")
    monkeypatch.setenv("DPO_JUDGE_KEY", "sk-test")
    res = judge_pairs(judge_from_env(timeout=2.0), _rows(5), n=5)
    assert res == {"judged": 0, "asked": 5, "errors": {"connection": 3, "skipped (judge down)": 2}, "policy": 0,
                   "reference": 0, "tie": 0, "win_rate": None, "win_rate_ci": None}


# ---------------------------------------------------------------------------------------- the reward-model judge
@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory):
    """A reward model of the default judge's architecture (tiny Qwen3, one logit), random weights, built here."""
    from helpers.infra.tinymodel import build_tiny_reward_model
    from tests.conftest import PAIRS

    return build_tiny_reward_model(tmp_path_factory.mktemp("rm") / "model", [t for x in PAIRS for t in x] * 4)


def _convs():
    from tests.conftest import PAIRS

    return [[{"role": "user", "content": p}] for p, _, _ in PAIRS], [c for _, c, _ in PAIRS]


def test_a_reward_model_judge_says_it_is_random_and_reads_the_whole_conversation(rm_dir, capsys):
    from helpers.judge import judge_texts, load_judge

    judge = load_judge(str(rm_dir), batch_size=4)
    out = capsys.readouterr().out
    assert judge.random_weights and "RANDOM WEIGHTS" in out and "meaningless" not in judge.name
    assert judge.name == f"reward_model:{rm_dir}" and judge.parameters > 0
    prompts, answers = _convs()
    text = judge_texts(judge, prompts[:1], answers[:1])[0]
    assert text == judge.tokenizer.apply_chat_template(prompts[0] + [{"role": "assistant", "content": answers[0]}],
                                                       tokenize=False)
    assert text.startswith("<|im_start|>user") and text.count("<|im_start|>") == 2  # nothing stripped
    multi = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there!"},
             {"role": "user", "content": "Soup?"}]
    assert "Hello there!" in judge_texts(judge, [multi], ["Yes."])[0]
    with pytest.raises(ValueError, match="equal length"):
        judge_texts(judge, prompts, answers[:2])


def test_scores_do_not_depend_on_the_batch_and_change_with_the_answer(rm_dir):
    import numpy as np

    from helpers.judge import load_judge, score

    prompts, answers = _convs()
    judge = load_judge(str(rm_dir), batch_size=4, verbose=False)
    s = score(judge, prompts, answers, progress=False)
    judge.batch_size = 1
    one = score(judge, prompts, answers, progress=False)
    np.testing.assert_allclose(s["scores"], one["scores"], atol=1e-5)  # padding never reaches the read-out token
    assert s["truncated"] == 0 and len(s["scores"]) == len(answers) and s["tokens_per_s"] > 0
    other = score(judge, prompts[:1], ["Something else entirely, and longer."], progress=False)["scores"][0]
    assert abs(other - s["scores"][0]) > 1e-6


def test_truncation_is_counted_and_cuts_from_the_left(rm_dir):
    from helpers.judge import load_judge, score

    judge = load_judge(str(rm_dir), max_length=16, verbose=False)
    long = [[{"role": "user", "content": "tell me " * 100}]] * 2
    s = score(judge, long, ["Short answer.", "Spiders have eight legs."], progress=False)
    assert s["truncated"] == 2 and s["tokens"].max() == 16
    assert s["scores"][0] != s["scores"][1]  # the answers (the end) survived the cut


def test_out_of_memory_halves_the_batch_then_says_what_to_change(rm_dir, monkeypatch, capsys):
    import numpy as np
    import torch

    from helpers.judge import load_judge, score

    prompts, answers = _convs()
    judge = load_judge(str(rm_dir), batch_size=8, verbose=False)
    want = score(judge, prompts, answers, progress=False)["scores"]
    real = judge.model.forward

    def fits_two(*a, **kw):
        if kw["input_ids"].shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(*a, **kw)

    monkeypatch.setattr(judge.model, "forward", fits_two)
    got = score(judge, prompts, answers, progress=False)
    np.testing.assert_allclose(got["scores"], want, atol=1e-5)
    assert got["batch_size"] == judge.batch_size == 2
    out = capsys.readouterr().out
    assert "batch size down to 4" in out and "batch size down to 2" in out

    def never(*a, **kw):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(judge.model, "forward", never)
    with pytest.raises(RuntimeError, match="JUDGE_MAX_LENGTH"):
        score(judge, prompts, answers, progress=False)


def test_bad_judge_arguments_are_refused_before_anything_loads():
    from helpers.judge import load_judge

    for kw, match in (({"model_id": ""}, "model_id"), ({"batch_size": 0}, "batch_size"),
                      ({"max_length": 4}, "max_length")):
        with pytest.raises(ValueError, match=match):
            load_judge(**{"model_id": "x/y", **kw}, verbose=False)


def test_agreement_counts_ties_half_and_measures_the_taste_for_length():
    from helpers.judge import agreement

    a = agreement([2, 1, 0, 5], [1, 1, 3, 0], [10, 5, 20, 10], [5, 5, 10, 11])
    assert a["n"] == 4 and a["agreement"] == (1 + 0.5 + 0 + 1) / 4
    assert a["interval"][0] < a["agreement"] < a["interval"][1]
    assert a["prefers_longer"] == pytest.approx(1 / 3)  # its picks: longer in pair 0, shorter in 2 and 3, 1 a tie
    assert a["humans_prefer_longer"] == pytest.approx(2 / 3)
    assert a["matched_n"] == 2 and a["matched_agreement"] == 0.75  # pairs 1 (5 vs 5) and 3 (10 vs 11)
    with pytest.raises(ValueError, match="equal length"):
        agreement([], [], [], [])


def test_expected_time_is_arithmetic_until_a_rate_is_measured(rm_dir):
    from helpers.judge import expected_seconds, load_judge

    judge = load_judge(str(rm_dir), verbose=False)
    prompts, answers = _convs()
    s, why = expected_seconds(judge, prompts, answers)
    assert s > 0 and "arithmetic, not a measurement" in why and "CPU" in why
    s2, why2 = expected_seconds(judge, prompts, answers, measured_tokens_per_s=100.0)
    assert "measured on this runtime" in why2 and s2 > 0


def test_a_judge_the_hub_lacks_is_said_with_its_id_and_parameter_and_the_notebook_goes_on(monkeypatch, capsys):
    import helpers.judge as J
    from helpers.infra.hubio import HubDownloadError

    def missing(model_id, **kw):
        raise HubDownloadError(f"{model_id}: 404 Repository Not Found")

    monkeypatch.setattr(J, "load_judge", missing)
    assert J.try_load_judge("someone/other-rm", parameter="JUDGE_MODEL") is None
    out = capsys.readouterr().out
    assert "NO JUDGE" in out and "JUDGE_MODEL='someone/other-rm'" in out and "without judge numbers" in out
    assert J.try_load_judge("", parameter="JUDGE_MODEL") is None
    assert "JUDGE_MODEL is empty" in capsys.readouterr().out


def test_a_causal_lm_checkpoint_is_refused_as_a_judge_not_scored_by_a_random_head(tiny_model_dir, tmp_path):
    """Issue 35: a causal-LM checkpoint whose config says num_labels=1 was accepted as a judge with a freshly
    initialised score head, and not labelled random."""
    import shutil

    from helpers.judge import load_judge

    lm = tmp_path / "lm"
    shutil.copytree(tiny_model_dir, lm)
    cfg = json.loads((lm / "config.json").read_text())
    (lm / "config.json").write_text(json.dumps({**cfg, "id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}))
    with pytest.raises(ValueError, match=r"has no trained score head \(score.weight newly initialised\)"):
        load_judge(str(lm), verbose=False)


def test_whole_turns_are_cut_first_and_system_messages_are_dropped(rm_dir):
    """Issue 34: truncation cut raw tokens from the left, dropping the opening of the first turn; a system message
    passed in was kept (Skywork's documented usage has none)."""
    from helpers.judge import _encode, judge_texts, load_judge, score

    judge = load_judge(str(rm_dir), verbose=False)
    sys_conv = [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "Hi"}]
    assert "pirate" not in judge_texts(judge, [sys_conv], ["Hello."])[0]
    old = [{"role": "user", "content": "first question " * 30}, {"role": "assistant", "content": "an answer " * 30}]
    last = [{"role": "user", "content": "Which legs?"}]
    kept = len(_encode(judge, [last], ["Eight."])[0])
    judge.max_length = kept + 2  # room for the last turn and the answer, not for the old turns
    s = score(judge, [old + last], ["Eight."], progress=False)
    alone = score(judge, [last], ["Eight."], progress=False)
    assert s["truncated"] == 1 and s["tokens"][0] == kept, "the two old turns went whole, nothing else"
    assert s["scores"][0] == pytest.approx(alone["scores"][0], abs=1e-5)


def test_a_non_finite_half_precision_score_is_scored_again_in_fp32_and_never_counted(rm_dir, capsys):
    """Issue 34: the judge in fp16 could print a false verdict silently (Qwen-family models overflow in fp16); NaN
    scores counted as disagreements and losses."""
    import torch

    from helpers.judge import load_judge, score

    judge = load_judge(str(rm_dir), verbose=False)
    judge.model.to(torch.bfloat16)

    def overflow_in_half(module, args, out):  # what an fp16 overflow looks like from outside: a NaN logit
        if module.dtype != torch.float32:
            out.logits[:] = float("nan")
        return out

    judge.model.register_forward_hook(overflow_in_half)
    prompts, answers = _convs()
    s = score(judge, prompts, answers, progress=False)
    assert np.isfinite(s["scores"]).all() and judge.model.dtype == torch.float32
    assert f"{len(answers)} of {len(answers)} judge scores were not finite in torch.bfloat16" in capsys.readouterr().out
    judge.model.register_forward_hook(lambda m, a, out: setattr(out, "logits", out.logits * float("nan")) or out)
    with pytest.raises(ValueError, match="non-finite scores .* in fp32"):
        score(judge, prompts, answers, progress=False)


def test_the_verdict_waits_for_the_trust_check_and_subsets_are_in_the_summary(rm_dir):
    """Issue 34: "the DPO policy's answers score higher/lower" printed whether or not the judge's agreement with the
    human labels was beyond chance; no untruncated or length-matched win rate."""
    from helpers.compare import judge_rows
    from helpers.judge import load_judge

    judge = load_judge(str(rm_dir), verbose=False)
    prompts, answers = _convs()
    rows = [{"messages": p, "reference": "No.", "policy": a, "stopped_reference": True, "stopped_policy": i % 2 == 0,
             "tokens_reference": 2, "tokens_policy": 2 if i < 2 else 9}
            for i, (p, a) in enumerate(zip(prompts, answers, strict=True))]
    bad = {"reference": [False] * len(rows), "policy": [False] * len(rows)}
    base = {"tokens_reference": 2.0, "tokens_policy": 5.0}
    for interval, trusted in (([0.45, 0.75], False), ([0.55, 0.80], True)):
        trust = {"agreement": 0.6, "interval": interval, "n": 50, "tokens_per_s": 1000.0}
        summary = dict(base)
        text = judge_rows(judge, trust, rows, bad, summary)
        assert summary["judge_trusted"] is trusted
        assert ("the judge cannot decide here" in text) is not trusted
        assert not trusted or "the judge cannot decide" not in text
        assert summary["win_rate_untruncated_n"] == sum(r["stopped_policy"] for r in rows)
        assert summary["win_rate_length_matched_n"] == 2 and summary["win_rate_length_matched"] is not None
