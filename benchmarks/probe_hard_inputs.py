"""The hard-inputs probe round of issue 35 as one command: bad inputs, faults and races against the helpers (tiny
models, CPU, a temporary folder), each classed as handled or as what a learner would meet instead.

Classes (the issue's): ``handled`` (a clear error naming the cause, or the right result), ``lost data`` (something
the course did not make is gone), ``crash`` (an exception that names no cause: TypeError, KeyError, OSError ...),
``silently wrong`` (no error, a wrong result), ``unnamed error`` (an error that does not name the argument, file or
variable). Prints one line per probe and the counts; exits 1 if any probe is not handled. The tests hold one test per
case (tests/test_files.py, test_runahead_pack.py, test_outputs.py, test_judge.py, test_losses.py, test_splits.py,
test_runtime.py, test_lock.py); this script is the next probe round's starting point, not a test.

    .venv/bin/python benchmarks/probe_hard_inputs.py                    # ~20 s on 2 cores
    .venv/bin/python benchmarks/probe_hard_inputs.py --lock-trials 100  # the lock race 100 times (~3 min)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LOCK_TRIALS = [4]  # --lock-trials N: the lock race N times (issue 35 asks 100 of 100)
HANDLED, LOST, CRASH, WRONG, UNNAMED = "handled", "lost data", "crash", "silently wrong", "unnamed error"
_CLEAR = (ValueError, FileNotFoundError, RuntimeError)  # the course's errors are these or subclasses of them


def expect_error(fn: Callable[[], object], *names: str) -> tuple[str, str]:
    """Handled if ``fn`` raises one of the course's errors whose message holds every one of ``names``."""
    try:
        got = fn()
    except Exception as e:  # noqa: BLE001 - classifying is the point
        msg = f"{type(e).__name__}: {e}"
        if type(e).__name__ in ("JSONDecodeError", "SameFileError") or not isinstance(e, _CLEAR):
            return CRASH, msg
        missing = [n for n in names if n not in str(e)]
        return (UNNAMED, f"{msg} (does not name {missing})") if missing else (HANDLED, msg)
    return WRONG, f"no error; returned {got!r}"[:160]


def expect(ok: bool, detail: str, bad: str = WRONG) -> tuple[str, str]:
    return (HANDLED if ok else bad), detail


class World:
    """Shared fixtures built once: a tiny Llama, a LoRA adapter of it, a tiny reward model, a notebook-03 folder."""

    def __init__(self, tmp: Path):
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from helpers.infra.tinymodel import build_tiny_model, build_tiny_reward_model
        from helpers.recipe import DPORecipe

        self.tmp = tmp
        texts = ["Human: hello there\n\nAssistant: hi, how can I help?", "please be polite", "thank you kindly"] * 8
        self.base = build_tiny_model(tmp / "base", texts, seed=0, vocab_size=300)
        self.rm = build_tiny_reward_model(tmp / "rm", texts)
        from helpers.infra.quiet import progress_bars_off

        self.tok = AutoTokenizer.from_pretrained(self.base)
        with progress_bars_off():
            lm = AutoModelForCausalLM.from_pretrained(self.base)
        peft = get_peft_model(lm, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
        self.train = tmp / "03_dpo"
        peft.save_pretrained(self.train / "adapter")
        (self.train / "metrics.json").write_text(json.dumps({"recipe": DPORecipe().to_dict(), "model": str(self.base),
                                                             "global_step": 3}))
        self.sweep = tmp / "04_sweep"
        self.sweep.mkdir()
        for i in range(2):
            (self.sweep / f"{i:016x}.json").write_text(json.dumps({"beta": i + 1.0, "kl": 0.1}))

    def fresh(self, name: str) -> Path:
        p = self.tmp / f"{name}-{time.time_ns()}"
        p.mkdir()
        return p


def probes(w: World) -> list[tuple[str, Callable[[], tuple[str, str]]]]:
    import torch

    from helpers.infra.settings import setting

    def env(name, value, fn):
        old = os.environ.get(name)
        os.environ[name] = value
        try:
            return fn()
        finally:
            os.environ.pop(name, None) if old is None else os.environ.__setitem__(name, old)

    def save_merged_over_a_run():
        from helpers.course.export import save_merged

        out = w.fresh("run")
        (out / "metrics.json").write_text("{}")
        (out / "checkpoint-2").mkdir()
        verdict = expect_error(lambda: save_merged(w.train, w.base, out), "out_dir", str(out))
        kept = (out / "metrics.json").exists() and (out / "checkpoint-2").is_dir()
        return verdict if kept else (LOST, f"{out} emptied; {verdict[1]}")

    def truncated_optimizer():
        from safetensors.torch import save_file

        from helpers.infra.outputs import checkpoint_problem

        ck = w.fresh("checkpoint-4")
        (ck / "trainer_state.json").write_text("{}")
        save_file({"a": torch.ones(3)}, str(ck / "adapter_model.safetensors"))
        torch.save({"state": {0: torch.ones(100)}}, ck / "optimizer.pt")
        data = (ck / "optimizer.pt").read_bytes()
        (ck / "optimizer.pt").write_bytes(data[: len(data) // 2])
        why = checkpoint_problem(ck)
        return expect(why is not None and "optimizer.pt" in why, f"checkpoint_problem: {why!r}")

    def truncated_sweep_entry():
        from helpers.sweep import _cached

        d = w.fresh("sweep")
        (d / "abc.json").write_text('{"beta": 0.1, "kl"')
        got = _cached(d / "abc.json")
        return expect(got is None and (d / "abc.json.broken").exists(), f"_cached: {got!r}, set aside: "
                      f"{(d / 'abc.json.broken').exists()}")

    def racing_split_saves():
        out = w.fresh("race") / "02_hh"
        code = ("import sys; sys.path.insert(0, sys.argv[2]); from helpers.infra.files import building_dir\n"
                "for i in range(4):\n    with building_dir(sys.argv[1], kind='saved splits') as t:\n"
                "        [(t / f'p{k}').write_text('x' * 999) for k in range(20)]\n")
        ps = [subprocess.Popen([sys.executable, "-c", code, str(out), str(ROOT)], stderr=subprocess.PIPE, text=True)
              for _ in range(3)]
        failed = sum(p.wait(timeout=120) != 0 for p in ps)
        left = [p.name for p in out.parent.iterdir() if p.name != "02_hh"]
        return expect(not failed and not left, f"{failed} of 3 writers failed, temporary copies left: {left}", CRASH)

    def pack_into_own_folder():
        from helpers.course.runahead import pack_run_ahead

        before = sorted(p.name for p in w.train.rglob("*"))
        v = expect_error(lambda: pack_run_ahead(w.train, train_dir=w.train), "overlaps", str(w.train))
        return v if sorted(p.name for p in w.train.rglob("*")) == before else (LOST, v[1])

    def lock_race():
        racer = ("import sys, time; sys.path.insert(0, sys.argv[3]); from helpers.infra import lock\n"
                 "while time.time() < float(sys.argv[2]): time.sleep(0.0005)\n"
                 "try:\n    lock.acquire(sys.argv[1]); print('got', flush=True); time.sleep(1.0)\n"
                 "except lock.OutputDirLocked:\n    print('locked', flush=True)\n")
        doubles, trials = 0, LOCK_TRIALS[0]
        for trial in range(trials):
            out, go = w.fresh(f"lock{trial}") / "run", time.time() + 1.5
            ps = [subprocess.Popen([sys.executable, "-c", racer, str(out), str(go), str(ROOT)], text=True,
                                   stdout=subprocess.PIPE) for _ in range(4)]
            got = [p.communicate(timeout=60)[0].split().count("got") for p in ps]
            doubles += sum(got) != 1
        return expect(doubles == 0, f"trials with other than exactly one holder: {doubles} of {trials}")

    def nan_agreement():
        from helpers.judge import agreement

        a = agreement([1.0, float("nan"), float("nan"), float("nan")], [0.0, 0.0, 0.0, 0.0], [5, 5, 5, 5], [5, 5, 5, 5])
        return expect(a.get("nan_excluded") == 3 and a.get("n") == 1, f"agreement n={a.get('n')}, "
                      f"nan_excluded={a.get('nan_excluded')}")

    def nan_comparison():
        from helpers.compare import score_comparison

        c = score_comparison([float("nan")] * 3 + [2.0], [1.0] * 4, [False] * 4, [False] * 4)
        return expect(c.get("nan_excluded") == 3 and c.get("n") == 1, f"n={c.get('n')}, "
                      f"nan_excluded={c.get('nan_excluded')}, win_rate={c.get('win_rate')}")

    def causal_lm_as_judge():
        import shutil

        from helpers.judge import load_judge

        lm = w.fresh("lm") / "m"
        shutil.copytree(w.base, lm)
        cfg = json.loads((lm / "config.json").read_text())
        (lm / "config.json").write_text(json.dumps({**cfg, "id2label": {"0": "LABEL_0"}}))
        return expect_error(lambda: load_judge(str(lm), verbose=False), "score head")

    def judge():
        from helpers.judge import load_judge

        return load_judge(str(w.rm), verbose=False)

    def answers_as_string():
        from helpers.judge import judge_texts

        return expect_error(lambda: judge_texts(judge(), [[{"role": "user", "content": "hi"}]], "hello"), "answers")

    def answer_none():
        from helpers.judge import judge_texts

        prompts = [[{"role": "user", "content": "hi"}]] * 2
        return expect_error(lambda: judge_texts(judge(), prompts, ["ok", None]), "item 1")

    def prompt_as_string():
        from helpers.judge import judge_texts

        return expect_error(lambda: judge_texts(judge(), ["hi"], ["ok"]), "item 0", "prompt")

    def negative_rate():
        from helpers.judge import expected_seconds

        prompts = [[{"role": "user", "content": "hi"}]]
        return expect_error(lambda: expected_seconds(judge(), prompts, ["ok"], measured_tokens_per_s=-5.0),
                            "measured_tokens_per_s")

    def beta(value, loss_type):
        def run():
            from helpers.losses import dpo_loss

            lp = [torch.full((2,), -5.0) for _ in range(4)]
            n = torch.full((2,), 4.0)
            return expect_error(lambda: dpo_loss(*lp, beta=value, loss_type=loss_type, chosen_lengths=n,
                                                 rejected_lengths=n), "beta")
        return run

    def weightless_pack():
        from helpers.course.runahead import pack_run_ahead

        t = w.fresh("t")
        (t / "adapter").mkdir()
        (t / "adapter" / "adapter_config.json").write_text("{}")
        (t / "metrics.json").write_text((w.train / "metrics.json").read_text())
        return expect_error(lambda: pack_run_ahead(w.fresh("p") / "pack", train_dir=t), "adapter weights")

    def truncated_sweep_pack():
        from helpers.course.runahead import pack_run_ahead

        s = w.fresh("s")
        (s / "a.json").write_text('{"beta": 1')
        return expect_error(lambda: pack_run_ahead(w.fresh("p") / "pack", sweep_dir=s), str(s / "a.json"))

    def save_adapter_without_lora():
        from transformers import AutoModelForCausalLM

        from helpers.infra.quiet import progress_bars_off
        from helpers.recipe import save_adapter

        out = w.fresh("sa")
        with progress_bars_off():
            plain = AutoModelForCausalLM.from_pretrained(w.base)
        v = expect_error(lambda: save_adapter(plain, w.tok, out), "LoRA")
        return v if not (out / "adapter" / "model.safetensors").exists() else (WRONG, "the full model was written")

    def setting_probe(name, value, default, *names):
        return lambda: env(name, value, lambda: expect_error(lambda: setting(name, default), name, *names))

    def run_dir_blank():
        got = env("DPO_RUN_DIR", "", lambda: setting("DPO_RUN_DIR", "../runs/notebooks"))
        return expect(got == "../runs/notebooks", f"DPO_RUN_DIR='' -> {got!r}")

    def hub_timeout(value):
        def run():
            from helpers.infra.runtime import probe_timeout

            return env("DPO_HUB_TIMEOUT", value, lambda: expect_error(probe_timeout, "DPO_HUB_TIMEOUT", value))
        return run

    def quick_y():
        got = env("DPO_QUICK", "y", lambda: setting("DPO_QUICK", False))
        return expect(got is True, f"DPO_QUICK=y -> {got!r} (a usual spelling of yes)")

    def weightless_run_ahead_in_05():
        from helpers.course.export import trained_adapter

        t = w.fresh("t")
        (t / "adapter_config.json").write_text("{}")
        (t / "metrics.json").write_text((w.train / "metrics.json").read_text())
        return expect_error(lambda: trained_adapter(t), "no adapter weights", str(t))

    def other_version_run_ahead():
        from helpers.course.export import trained_adapter

        t = w.fresh("t")
        (t / "adapter").mkdir()
        for f in (w.train / "adapter").iterdir():
            (t / "adapter" / f.name).write_bytes(f.read_bytes())
        m = json.loads((w.train / "metrics.json").read_text())
        m["recipe"]["dpo_variant"] = "x"
        (t / "metrics.json").write_text(json.dumps(m))
        return expect_error(lambda: trained_adapter(t), "dpo_variant", "another version")

    def sweep_pack_matching_nothing():
        from helpers.sweep import RUN_AHEAD_NOTE, _miss_note

        d = w.fresh("c")
        (d / "x.json").write_text(json.dumps({"settings": {"recipe": {"beta": 9.0}}}))
        (d / RUN_AHEAD_NOTE).write_text(json.dumps({"source": "pack", "files": ["x.json"]}))
        note = _miss_note(d, 2, [{"recipe": {"beta": 0.1}}, {"recipe": {"beta": 0.2}}])
        return expect(bool(note) and "recipe.beta 0.1 here, 9.0 there" in (note or ""), f"note: {note!r}")

    def mistyped_run_ahead():
        from helpers.course.runahead import fetch_sweep

        here = os.getcwd()
        os.chdir(w.fresh("cwd"))
        try:
            return env("HF_HUB_OFFLINE", "1", lambda: expect_error(lambda: fetch_sweep("runs/run-ahaed", "x"),
                                                                   "no folder"))
        finally:
            os.chdir(here)

    def truncated_metrics():
        from helpers.course.export import trained_adapter

        t = w.fresh("t")
        (t / "adapter").mkdir()
        (t / "adapter" / "adapter_config.json").write_text("{}")
        (t / "metrics.json").write_text('{"recipe": {')
        return expect_error(lambda: trained_adapter(t), str(t / "metrics.json"))

    def bad_line_12():
        from helpers.worlds.splits import resolve_hh

        f = w.fresh("hh") / "mine.jsonl"
        good = json.dumps({"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: go"})
        f.write_text("\n".join([good] * 11 + [json.dumps({"chosen": 5, "rejected": "x"})] + [good] * 8) + "\n")
        return expect_error(lambda: resolve_hh(source=str(f)), f"{f}, line 12")

    def splits_over_a_foreign_folder():
        from helpers.worlds.splits import TOY, resolve_hh, save_splits

        out = w.fresh("mine")
        (out / "thesis.tex").write_text("mine")
        v = expect_error(lambda: save_splits(resolve_hh(source=TOY), out), str(out))
        return v if (out / "thesis.tex").exists() else (LOST, v[1])

    return [
        ("save_merged into a run's own folder", save_merged_over_a_run),
        ("checkpoint with a truncated optimizer.pt", truncated_optimizer),
        ("truncated sweep-cache entry", truncated_sweep_entry),
        ("three processes saving one split folder", racing_split_saves),
        ("pack_run_ahead into notebook 03's folder", pack_into_own_folder),
        (f"four runs taking one lock at once ({LOCK_TRIALS[0]} trials)", lock_race),
        ("NaN scores in judge.agreement", nan_agreement),
        ("NaN scores in score_comparison", nan_comparison),
        ("a causal LM with num_labels=1 as the judge", causal_lm_as_judge),
        ("answers passed as one string", answers_as_string),
        ("a judge answer of None", answer_none),
        ("a prompt passed as a string", prompt_as_string),
        ("expected_seconds with a negative rate", negative_rate),
        ("beta 1e39 (sigmoid)", beta(1e39, "sigmoid")),
        ("beta 1e-320 (IPO)", beta(1e-320, "ipo")),
        ("a run-ahead pack of a weightless adapter", weightless_pack),
        ("a run-ahead pack of a truncated sweep file", truncated_sweep_pack),
        ("save_adapter on a model without LoRA", save_adapter_without_lora),
        ("DPO_RUN_DIR='' (blank: the default)", run_dir_blank),
        ("DPO_QUICK=2", setting_probe("DPO_QUICK", "2", False, "'2'")),
        ("DPO_QUICK=ture", setting_probe("DPO_QUICK", "ture", False, "'ture'")),
        ("DPO_QUICK=y (accepted: yes)", quick_y),
        ("DPO_HUB_TIMEOUT=inf", hub_timeout("inf")),
        ("DPO_HUB_TIMEOUT=-1", hub_timeout("-1")),
        ("notebook 05 given a weightless run-ahead", weightless_run_ahead_in_05),
        ("notebook 05 given another course version's run-ahead", other_version_run_ahead),
        ("a sweep pack whose settings match nothing here", sweep_pack_matching_nothing),
        ("a mistyped run-ahead folder (runs/run-ahaed)", mistyped_run_ahead),
        ("a truncated metrics.json", truncated_metrics),
        ("a bad row on line 12 of a local file", bad_line_12),
        ("save_splits over a folder of something else", splits_over_a_foreign_folder),
    ]


def main(argv: list[str] | None = None) -> int:
    import argparse

    from helpers.infra import quiet

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lock-trials", type=int, default=4, help="how often the lock race runs (4 real processes each)")
    LOCK_TRIALS[0] = max(1, ap.parse_args(argv).lock_trials)

    quiet.install()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="probe-") as tmp:
        world = World(Path(tmp))
        counts: Counter = Counter()
        for name, probe in probes(world):
            try:
                verdict, detail = probe()
            except Exception as e:  # noqa: BLE001 - a probe that itself fails is a crash of the code it probes
                verdict, detail = CRASH, f"{type(e).__name__}: {e}"
            counts[verdict] += 1
            print(f"{verdict:>14}  {name}: {' '.join(str(detail).split())[:150]}")
    total = sum(counts.values())
    print(f"\n{total} probes in {time.perf_counter() - t0:.0f} s: " + ", ".join(
        f"{counts[c]} {c}" for c in (HANDLED, LOST, CRASH, WRONG, UNNAMED)))
    return 0 if counts[HANDLED] == total else 1


if __name__ == "__main__":
    raise SystemExit(main())
