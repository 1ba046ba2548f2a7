"""Google Colab: which packages Colab owns, secrets, and Google Drive for outputs that outlive a runtime.

Everything here is a no-op (or returns None) outside Colab, so the notebooks call it unconditionally.
The notebooks' first cell (``helpers.course.publish.FIRST_CELL``) installs ``requirements-colab.txt`` with these
``PROTECTED`` packages pinned to the versions the runtime already has: Colab imports some of them before the first
cell runs, and replacing them mid-session breaks the session until a restart.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path, PurePosixPath

__all__ = ["PROTECTED", "REPLACEABLE", "on_colab", "secret", "hub_token", "persist_path", "DRIVE_ROOT"]

# Never installed with a version other than Colab's own (numpy and the kernel are loaded before cell 1).
PROTECTED: tuple[str, ...] = ("torch", "numpy", "ipykernel", "ipython", "ipywidgets", "jupyter_client",
                              "jupyter_core", "notebook", "tornado", "traitlets", "matplotlib", "pandas", "pyzmq",
                              "scipy", "pillow")
# What the install may replace although Colab has it (distribution, module): if a module of these was imported
# before the first cell ran (pandas imports pyarrow, for one), the new files are on disk while the old extension
# stays loaded, and the next import fails ("pyarrow.lib.IpcReadOptions size changed"; ../shared/STACK.md). The
# first cell then restarts the runtime, and its rerun skips the install.
REPLACEABLE: tuple[tuple[str, str], ...] = (
    ("pyarrow", "pyarrow"), ("datasets", "datasets"), ("transformers", "transformers"), ("tokenizers", "tokenizers"),
    ("accelerate", "accelerate"), ("peft", "peft"), ("torchao", "torchao"), ("huggingface_hub", "huggingface_hub"),
    ("safetensors", "safetensors"), ("bitsandbytes", "bitsandbytes"), ("fsspec", "fsspec"), ("certifi", "certifi"))
DRIVE_ROOT = "/content/drive"  # where google.colab.drive mounts Google Drive
DRIVE_FOLDER = "MyDrive/dpo-course"  # this course's folder in the user's Drive


def on_colab() -> bool:
    """True inside a Google Colab runtime (``google.colab`` is imported or importable). Without any ``google``
    package (a fresh venv with no protobuf) ``find_spec("google.colab")`` raises instead of returning None: found by
    scripts/colab_faithful_check.sh, where every notebook died in its banner cell."""
    if "google.colab" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("google.colab") is not None
    except (ImportError, ValueError):
        return False


def secret(name: str) -> str | None:
    """The Colab secret ``name`` (the key icon in Colab's sidebar), or None: not on Colab, not set, or the
    notebook was not granted access. Never raises."""
    if not on_colab():
        return None
    try:
        from google.colab import userdata

        value = userdata.get(name)
    except Exception:  # SecretNotFoundError, NotebookAccessError, TimeoutException, ...: all mean "not available"
        return None
    return value or None


def hub_token() -> tuple[str | None, str]:
    """A Hugging Face token and where it came from: the Colab secret ``HF_TOKEN``, else the env var ``HF_TOKEN``.

    Returns ``(None, message)`` with what to do when neither is set."""
    token = secret("HF_TOKEN")
    if token:
        return token, "the Colab secret HF_TOKEN"
    token = os.environ.get("HF_TOKEN", "").strip()
    if token:
        return token, "the environment variable HF_TOKEN"
    return None, ("no Hugging Face token: on Colab add a secret named HF_TOKEN (key icon in the left sidebar, "
                  "with notebook access on); elsewhere set the environment variable HF_TOKEN. A token with 'write' "
                  "permission is needed to push (huggingface.co/settings/tokens).")


def _mount_drive() -> None:
    if not os.path.isdir(os.path.join(DRIVE_ROOT, "MyDrive")):
        from google.colab import drive

        drive.mount(DRIVE_ROOT)


def persist_path(path: str | os.PathLike, persist: bool) -> str:
    """Where ``path`` (a notebook's relative output path such as ``../runs/notebooks/03_dpo``) should live.

    ``persist=False``: ``path`` itself. ``persist=True`` on Colab: Google Drive is mounted (Colab asks for
    permission once) and the same relative path under ``MyDrive/dpo-course/`` is returned, so checkpoints and the
    adapter outlive a lost runtime. ``persist=True`` elsewhere: ``path`` itself, with a note (a local disk persists).
    """
    if not isinstance(persist, bool):
        raise ValueError(f"persist must be True or False, got {persist!r}")
    if not persist:
        return str(path)
    if not on_colab():
        print(f"NOTE: PERSIST has an effect only on Colab (Google Drive); keeping {path} on this machine's disk.")
        return str(path)
    parts = [p for p in PurePosixPath(os.path.normpath(str(path))).parts if p not in ("..", ".", "/")]
    if str(path).startswith(DRIVE_ROOT):
        return str(path)
    _mount_drive()
    target = Path(DRIVE_ROOT, DRIVE_FOLDER, *parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"PERSIST: {path} -> {target} (Google Drive: survives a lost runtime)")
    return str(target)
