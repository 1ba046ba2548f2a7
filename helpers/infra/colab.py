"""Google Colab: the course's install on a runtime, which packages Colab owns, secrets, and Google Drive.

Everything here is a no-op (or returns None) outside Colab, so the notebooks call it unconditionally, and it imports
only the standard library: ``setup_course`` runs before the packages it installs exist. The notebooks' first cell
(``helpers.course.publish.FIRST_CELL``) finds or clones the course and calls ``setup_course``, which installs
``requirements-colab.txt`` with these ``PROTECTED`` packages pinned to the versions the runtime already has: Colab
imports some of them before the first cell runs, and replacing them mid-session breaks the session until a restart.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path, PurePosixPath

from helpers.infra.files import write_text

__all__ = ["setup_course", "PROTECTED", "REPLACEABLE", "on_colab", "secret", "hub_token", "persist_path", "DRIVE_ROOT"]

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
INSTALLED_MARKER = ".colab-installed"  # in the course folder: this runtime has the install (a restart keeps it)
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


def _installed(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def install_on_colab(root: str | os.PathLike) -> None:
    """Install what Colab lacks into this runtime, once: ``requirements-colab.txt`` with Colab's own versions of
    ``PROTECTED`` as constraints, then ``requirements-colab-nodeps.txt`` without dependencies (pip runs in ``root``).

    A marker file (``INSTALLED_MARKER``) makes a rerun, a kernel restart or another notebook on the same runtime skip
    it. When the install replaced a module that was already imported (pandas loads pyarrow before cell 1), the old
    copy stays loaded and the next import of it fails; then this says why and restarts the runtime (it kills its own
    process, Colab's way to restart), and the rerun after it skips the install."""
    root = Path(root)
    if (root / INSTALLED_MARKER).exists():
        print("packages: already installed on this runtime")
        return
    keep = [f"{n}=={_installed(n)}" for n in PROTECTED if _installed(n)]  # Colab's own versions stay
    write_text(root / ".colab-constraints.txt", "\n".join(keep) + "\n")
    before = {d: _installed(d) for d, _ in REPLACEABLE}
    subprocess.run(["pip", "install", "-q", "-r", "requirements-colab.txt", "-c", ".colab-constraints.txt"],
                   cwd=root, check=True)
    subprocess.run(["pip", "install", "-q", "--no-deps", "-r", "requirements-colab-nodeps.txt"], cwd=root, check=True)
    write_text(root / INSTALLED_MARKER, "")
    importlib.invalidate_caches()
    stale = [m for d, m in REPLACEABLE if m in sys.modules and _installed(d) != before[d]]
    if stale:  # an old copy is loaded while the new one is on disk: the next import of it would fail
        print(f"packages: installed, but this runtime had already imported the old {', '.join(stale)} (loaded "
              "before this cell ran). Restarting the runtime now; when it is back, run the notebook again (Run "
              "all): the install is skipped.", flush=True)
        os.kill(os.getpid(), 9)  # Colab's own way to restart a runtime
    print("packages: installed (Colab's torch, numpy and kernel packages kept)")


def setup_course(root: str | os.PathLike | None) -> None:
    """What every notebook's first cell does once the course folder ``root`` is known (None: not found, and not on
    Colab, where the cell would have cloned it; ``helpers`` is then an installed package and nothing is changed).

    On Colab, ``install_on_colab(root)``. Everywhere: the working folder becomes ``root/notebooks`` (the notebooks'
    relative paths, ``../runs`` and ``../data``, start there), and ``root`` goes on ``sys.path`` and ``PYTHONPATH``
    (so ``helpers`` imports without installing it, in this kernel and in the processes it starts)."""
    if root is None:
        return
    root = os.path.abspath(root)
    if not os.path.isfile(os.path.join(root, "helpers", "__init__.py")):
        raise ValueError(f"root must be the course folder (the one holding helpers/), got {root!r}")
    print(f"course folder: {root}")
    if "google.colab" in sys.modules:
        install_on_colab(root)
    os.chdir(os.path.join(root, "notebooks"))
    if root not in sys.path:
        sys.path.insert(0, root)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)


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
