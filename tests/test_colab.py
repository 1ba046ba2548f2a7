"""Colab: the notebooks' first cell in a fresh process under a stub ``google.colab``, the Colab install files
against Colab's own package versions, ``make publish``, secrets, tokens and Google Drive (helpers.infra.colab)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import nbformat
import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from helpers.course.publish import first_cell, github_repo, publish
from helpers.infra import colab

ROOT = Path(__file__).resolve().parents[1]
COLAB_FREEZE = ROOT.parent / "shared" / "colab" / "pip-freeze.gpu.txt"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
TEST_TOOLS = {"pytest", "nbmake", "hypothesis", "ruff", "papermill", "nbclient", "nbformat"}


def _colab_versions() -> dict[str, str]:
    if not COLAB_FREEZE.exists():
        pytest.fail(f"Colab's package list expected at {COLAB_FREEZE} (../shared beside the repo)")
    out = {}
    for line in COLAB_FREEZE.read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            out[canonicalize_name(name)] = version.strip()
    return out


def _requirements(path: Path) -> list[Requirement]:
    return [Requirement(x.split("#")[0].strip()) for x in path.read_text().splitlines()
            if x.split("#")[0].strip()]


# ---------------------------------------------------------------------------------------------- the Colab install
def test_colab_install_names_no_protected_package_with_another_version_and_no_test_tool():
    colab_v = _colab_versions()
    protected = {canonicalize_name(p) for p in colab.PROTECTED}
    for path in (ROOT / "requirements-colab.txt", ROOT / "requirements-colab-nodeps.txt"):
        for req in _requirements(path):
            name = canonicalize_name(req.name)
            assert name not in TEST_TOOLS, f"{path.name} installs the test tool {req.name}"
            if name in protected:
                same = str(req.specifier) == f"=={colab_v[name]}"
                assert same, f"{path.name} names {req} but Colab has {req.name}=={colab_v[name]}"


def _colab_environment() -> dict[str, str]:
    env = default_environment()  # Colab's GPU runtime: CPython 3.13 on x86_64 Linux
    env.update(python_version="3.13", python_full_version="3.13.15", sys_platform="linux", platform_system="Linux",
               platform_machine="x86_64", implementation_name="cpython", os_name="posix")
    return env


def test_what_the_colab_install_puts_in_place_needs_no_other_version_of_a_protected_package():
    """Every requirement of every package the Colab install pins, read from its metadata (the same versions are
    installed here), is met by Colab's own version when it names a protected package. With those packages
    pinned to Colab's versions as constraints, pip could otherwise only fail (or, without them, replace them)."""
    colab_v = _colab_versions()
    protected = {canonicalize_name(p) for p in colab.PROTECTED}
    env = _colab_environment()
    checked = 0
    for path in (ROOT / "requirements-colab.txt", ROOT / "requirements-colab-nodeps.txt"):
        for req in _requirements(path):
            if not str(req.specifier).startswith("=="):
                continue
            pinned = str(req.specifier)[2:]
            try:
                dist = metadata.distribution(req.name)
            except metadata.PackageNotFoundError:
                pytest.fail(f"{req.name} is not installed here, so its requirements cannot be checked")
            assert dist.version == pinned, f"{req.name}: {dist.version} installed here, {pinned} in {path.name}"
            for r in map(Requirement, dist.requires or []):
                if r.marker is not None and not r.marker.evaluate({**env, "extra": ""}):
                    continue
                name = canonicalize_name(r.name)
                if name in protected:
                    checked += 1
                    assert r.specifier.contains(colab_v[name], prereleases=True), \
                        f"{req.name}=={pinned} requires {r}, Colab has {colab_v[name]}"
    assert checked >= 10  # torch/numpy/pandas/pillow requirements of the stack were really looked at


def test_no_deps_packages_find_their_requirements_on_colab_or_in_the_colab_install():
    """unsloth and unsloth_zoo are installed --no-deps: each requirement they declare must be met by Colab's
    packages or by requirements-colab.txt, except xformers (optional for unsloth; its wheels pin one torch)."""
    colab_v = _colab_versions()
    ours = {canonicalize_name(r.name): r for f in ("requirements-colab.txt", "requirements-colab-nodeps.txt")
            for r in _requirements(ROOT / f)}
    env = _colab_environment()
    missing = []
    for req in _requirements(ROOT / "requirements-colab-nodeps.txt"):
        for r in map(Requirement, metadata.distribution(req.name).requires or []):
            name = canonicalize_name(r.name)
            if (r.marker is not None and not r.marker.evaluate({**env, "extra": ""})) or name == "xformers":
                continue
            if name in ours:
                spec = str(ours[name].specifier)
                ok = r.specifier.contains(spec[2:], prereleases=True) if spec.startswith("==") else \
                    spec == str(r.specifier) or not r.specifier
            else:
                ok = name in colab_v and r.specifier.contains(colab_v[name], prereleases=True)
            if not ok:
                missing.append(f"{req.name} needs {r}")
    assert not missing, missing


# ------------------------------------------------------------------------------------- the first cell, for real
def _git(*args, cwd):
    subprocess.run(["git", "-c", "user.email=t@example.org", "-c", "user.name=t", *args], cwd=cwd, check=True,
                   capture_output=True)


@pytest.fixture(scope="module")
def course_repo(tmp_path_factory) -> Path:
    """A git repository holding the course's helpers, notebooks and Colab install files (two commits)."""
    repo = tmp_path_factory.mktemp("remote") / "dpo-course.git"
    repo.mkdir()
    shutil.copytree(ROOT / "helpers", repo / "helpers", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "notebooks").mkdir()
    for p in NOTEBOOKS:
        shutil.copy(p, repo / "notebooks" / p.name)
    for name in ("requirements-colab.txt", "requirements-colab-nodeps.txt"):
        shutil.copy(ROOT / name, repo / name)
    _git("init", "-q", "-b", "main", cwd=repo)
    _git("add", "-A", cwd=repo)
    _git("commit", "-q", "-m", "course", cwd=repo)
    (repo / "VERSION").write_text("2\n")
    _git("add", "-A", cwd=repo)
    _git("commit", "-q", "-m", "second", cwd=repo)
    return repo


@pytest.fixture()
def colab_sandbox(tmp_path) -> dict:
    """A stub ``google.colab`` package, a fake ``pip`` on PATH that records its calls, an empty working folder."""
    stub = tmp_path / "stub"
    (stub / "google" / "colab").mkdir(parents=True)
    (stub / "google" / "__init__.py").write_text("")
    (stub / "google" / "colab" / "__init__.py").write_text("")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "pip-calls.jsonl"
    pip = bin_dir / "pip"
    pip.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import json, os, sys
        args = sys.argv[1:]
        files = {{v: open(v).read() for f, v in zip(args, args[1:]) if f in ("-r", "-c")}}
        with open({str(log)!r}, "a") as out:
            out.write(json.dumps({{"args": args, "cwd": os.getcwd(), "files": files}}) + "\\n")
        """))
    pip.chmod(0o755)
    work = tmp_path / "content"
    work.mkdir()
    return {"stub": stub, "bin": bin_dir, "log": log, "work": work, "tmp": tmp_path}


def _run_first_cell(sb: dict, cell: str, cwd: Path, **env_extra) -> subprocess.CompletedProcess:
    """Run ``cell`` as Colab would (``google.colab`` imported before cell 1) in a fresh Python process."""
    script = sb["tmp"] / "run_cell.py"
    script.write_text(
        f"import sys\nsys.path.insert(0, {str(sb['stub'])!r})\nimport google.colab\n"
        f"exec(compile({cell!r}, 'first_cell', 'exec'))\n"
        "import os, json, helpers\nprint('RESULT ' + json.dumps({'helpers': helpers.__file__, 'cwd': os.getcwd()}))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DPO_COURSE_REPO")}
    env["PATH"] = f"{sb['bin']}{os.pathsep}{env['PATH']}"
    env.update(env_extra)
    return subprocess.run([sys.executable, str(script)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def _result(proc) -> dict:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))[7:])


def _pip_calls(sb) -> list[dict]:
    return [json.loads(x) for x in sb["log"].read_text().splitlines()] if sb["log"].exists() else []


def test_every_notebook_starts_with_the_same_first_cell_rendered_by_helpers_publish():
    cells = {next(c for c in nbformat.read(p, as_version=4).cells if c.cell_type == "code").source for p in NOTEBOOKS}
    assert len(cells) == 1
    cell = cells.pop()
    assert any(cell == first_cell(url, ref) for url, ref in [("", "")] + [_stamped(cell)]), \
        "the first cell must be helpers.course.publish.first_cell (edit the template, then `make publish`)"


def _stamped(cell: str) -> tuple[str, str]:
    vals = {}
    for line in cell.splitlines():
        for key in ("COURSE_REPO", "COURSE_REF"):
            if line.startswith(f"{key} = "):
                vals[key] = line.split("=", 1)[1].split("#")[0].strip().strip("'")
    return vals.get("COURSE_REPO", ""), vals.get("COURSE_REF", "")


def test_first_cell_clones_once_installs_once_and_leaves_helpers_importable(course_repo, colab_sandbox):
    sb = colab_sandbox
    cell = first_cell(str(course_repo))
    clone = sb["work"] / "dpo-course"

    first = _result(_run_first_cell(sb, cell, sb["work"]))
    assert (clone / ".git").is_dir() and not (sb["work"] / "dpo-course.partial").exists()
    assert Path(first["helpers"]).resolve() == (clone / "helpers" / "__init__.py").resolve()
    assert Path(first["cwd"]).resolve() == (clone / "notebooks").resolve()
    calls = _pip_calls(sb)
    assert [c["args"][:2] for c in calls] == [["install", "-q"], ["install", "-q"]]
    assert calls[0]["args"][2:] == ["-r", "requirements-colab.txt", "-c", ".colab-constraints.txt"]
    assert calls[1]["args"][2:] == ["--no-deps", "-r", "requirements-colab-nodeps.txt"]
    assert all(Path(c["cwd"]).resolve() == clone.resolve() for c in calls)
    # the constraints pin every protected package installed in that process to its own version
    constraints = dict(x.split("==") for x in calls[0]["files"][".colab-constraints.txt"].split())
    for name in colab.PROTECTED:
        try:
            here = metadata.version(name)
        except metadata.PackageNotFoundError:
            here = None
        assert constraints.get(name) == here
    assert {"torch", "numpy", "ipykernel"} <= set(constraints)
    for text in calls[0]["files"].values():  # what pip was told to install names no protected package at all
        names = {canonicalize_name(Requirement(x.split("#")[0]).name) for x in text.splitlines()
                 if x.split("#")[0].strip()}
        if text is not calls[0]["files"][".colab-constraints.txt"]:
            assert not names & {canonicalize_name(p) for p in colab.PROTECTED}
    head = subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD"], capture_output=True, text=True).stdout

    # a kernel restart: a fresh process, Colab's working folder again; then a rerun from the notebooks folder
    for cwd in (sb["work"], clone / "notebooks"):
        again = _run_first_cell(sb, cell, cwd)
        res = _result(again)
        assert "cloned" not in again.stdout and "already installed" in again.stdout
        assert Path(res["helpers"]).resolve() == (clone / "helpers" / "__init__.py").resolve()
    assert len(_pip_calls(sb)) == 2, "no second install on the same runtime"
    assert subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout == head


def test_first_cell_without_a_url_says_what_to_do_and_creates_nothing(colab_sandbox):
    proc = _run_first_cell(colab_sandbox, first_cell(""), colab_sandbox["work"])
    assert proc.returncode != 0 and "make publish" in proc.stderr and "DPO_COURSE_REPO" in proc.stderr
    assert not any(colab_sandbox["work"].iterdir()) and not _pip_calls(colab_sandbox)


def test_env_var_overrides_the_stamped_url_and_ref_is_checked_out(course_repo, colab_sandbox):
    first_commit = subprocess.run(["git", "-C", str(course_repo), "rev-list", "--max-parents=0", "HEAD"],
                                  capture_output=True, text=True, check=True).stdout.strip()
    cell = first_cell("https://example.invalid/not-the-course.git", first_commit)
    _result(_run_first_cell(colab_sandbox, cell, colab_sandbox["work"], DPO_COURSE_REPO=str(course_repo)))
    clone = colab_sandbox["work"] / "dpo-course"
    head = subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert head.strip() == first_commit and not (clone / "VERSION").exists()


def test_first_cell_off_colab_installs_nothing(colab_sandbox):
    cell = first_cell("https://example.invalid/x.git")
    script = colab_sandbox["tmp"] / "plain.py"
    script.write_text(f"exec(compile({cell!r}, 'c', 'exec'))\nimport helpers, os\nprint(os.getcwd())\n")
    env = {**os.environ, "PATH": f"{colab_sandbox['bin']}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run([sys.executable, str(script)], cwd=ROOT / "notebooks", env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert not _pip_calls(colab_sandbox) and Path(proc.stdout.split()[-1]) == ROOT / "notebooks"


# ----------------------------------------------------------------------------------------------- make publish
def _course_copy(tmp_path) -> Path:
    root = tmp_path / "course"
    (root / "notebooks").mkdir(parents=True)
    for p in NOTEBOOKS:
        shutil.copy(p, root / "notebooks" / p.name)
    shutil.copy(ROOT / "README.md", root / "README.md")
    return root


def test_publish_stamps_the_url_writes_badges_and_is_idempotent(tmp_path):
    root = _course_copy(tmp_path)
    changed = publish("https://github.com/someone/dpo-course.git", "v1.0", root)
    assert len(changed) == len(NOTEBOOKS) + 1
    readme = (root / "README.md").read_text()
    for p in sorted((root / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(p, as_version=4)
        nbformat.validate(nb)
        code = next(c for c in nb.cells if c.cell_type == "code").source
        assert code == first_cell("https://github.com/someone/dpo-course.git", "v1.0")
        url = f"https://colab.research.google.com/github/someone/dpo-course/blob/v1.0/notebooks/{p.name}"
        title = next(c for c in nb.cells if c.cell_type == "markdown").source
        assert title.splitlines()[0].startswith("# ") and url in title.splitlines()[1]
        assert readme.count(url) == 1
    assert publish("https://github.com/someone/dpo-course.git", "v1.0", root) == []
    # a new URL replaces the badges instead of adding more
    publish("git@github.com:other/course.git", "", root)
    readme = (root / "README.md").read_text()
    assert "someone/dpo-course" not in readme and readme.count("colab-badge.svg") == len(NOTEBOOKS)
    nb = nbformat.read(root / "notebooks" / NOTEBOOKS[0].name, as_version=4)
    title = next(c for c in nb.cells if c.cell_type == "markdown").source
    assert title.count("colab-badge.svg") == 1 and "other/course/blob/main/" in title


@pytest.mark.subprocess
def test_make_publish_runs_the_cli_and_bad_input_is_refused(tmp_path):
    root = _course_copy(tmp_path)
    shutil.copy(ROOT / "Makefile", root / "Makefile")
    out = subprocess.run(["make", "-s", "publish", "URL=https://github.com/a/b", "REF=abc123",
                          f"PY={sys.executable}"], cwd=root, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "github/a/b/blob/abc123/notebooks/01_" in (root / "README.md").read_text()
    bad = subprocess.run(["make", "-s", "publish", f"PY={sys.executable}"], cwd=root, capture_output=True, text=True)
    assert bad.returncode != 0 and "URL=" in bad.stdout + bad.stderr
    with pytest.raises(ValueError, match="url"):
        first_cell("https://x'; import os; os.system('rm -rf /')#")
    with pytest.raises(ValueError, match="root"):
        publish("https://github.com/a/b", "", tmp_path / "empty")


def test_a_url_off_github_is_stamped_without_badges(tmp_path, capsys):
    root = _course_copy(tmp_path)
    publish("https://gitlab.com/a/b.git", "", root)
    assert "not a GitHub URL" in capsys.readouterr().out
    assert "colab-badge.svg" not in (root / "README.md").read_text()
    nb = nbformat.read(root / "notebooks" / NOTEBOOKS[0].name, as_version=4)
    assert next(c for c in nb.cells if c.cell_type == "code").source == first_cell("https://gitlab.com/a/b.git")


def test_github_repo_forms():
    assert github_repo("https://github.com/o/r") == github_repo("git@github.com:o/r.git") == "o/r"
    assert github_repo("https://github.com/o/r.git/") == "o/r"
    assert github_repo("https://gitlab.com/o/r") is None and github_repo("/tmp/x") is None


# ------------------------------------------------------------------------------- secrets, token, Google Drive
@pytest.fixture()
def fake_colab(monkeypatch, tmp_path):
    """``google.colab`` with ``userdata`` and ``drive`` modules as in Colab (secrets in a dict, a fake mount)."""
    import types

    google = types.ModuleType("google")
    google.__path__ = []
    mod = types.ModuleType("google.colab")
    userdata, drive = types.ModuleType("google.colab.userdata"), types.ModuleType("google.colab.drive")
    secrets, mounts = {}, []

    class SecretNotFoundError(Exception):
        pass

    def get(name):
        if name not in secrets:
            raise SecretNotFoundError(name)
        return secrets[name]

    def mount(path):
        mounts.append(path)
        Path(path, "MyDrive").mkdir(parents=True, exist_ok=True)

    userdata.get, drive.mount = get, mount
    mod.userdata, mod.drive = userdata, drive
    for name, m in {"google": google, "google.colab": mod, "google.colab.userdata": userdata,
                    "google.colab.drive": drive}.items():
        monkeypatch.setitem(sys.modules, name, m)
    monkeypatch.setattr(colab, "DRIVE_ROOT", str(tmp_path / "drive"))
    return {"secrets": secrets, "mounts": mounts, "drive": tmp_path / "drive"}


def test_secrets_and_hub_token(fake_colab, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    token, why = colab.hub_token()
    assert token is None and "HF_TOKEN" in why and "secret" in why
    monkeypatch.setenv("HF_TOKEN", "env-token")
    assert colab.hub_token() == ("env-token", "the environment variable HF_TOKEN")
    fake_colab["secrets"]["HF_TOKEN"] = "colab-token"
    assert colab.hub_token() == ("colab-token", "the Colab secret HF_TOKEN")
    assert colab.secret("MISSING") is None


def test_judge_key_from_a_colab_secret(fake_colab, monkeypatch):
    from helpers.llm_judge import judge_from_env

    for k in ("DPO_JUDGE_URL", "DPO_JUDGE_KEY", "DPO_JUDGE_MODEL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("DPO_JUDGE_URL", "http://127.0.0.1:9")
    assert judge_from_env() is None
    fake_colab["secrets"]["DPO_JUDGE_KEY"] = "sk-test"
    assert callable(judge_from_env())


def test_persist_mounts_drive_on_colab_and_is_a_no_op_elsewhere(fake_colab, monkeypatch, capsys):
    assert colab.persist_path("../runs/notebooks/03_dpo", False) == "../runs/notebooks/03_dpo"
    target = colab.persist_path("../runs/notebooks/03_dpo", True)
    assert target == str(fake_colab["drive"] / "MyDrive" / "dpo-course" / "runs" / "notebooks" / "03_dpo")
    assert fake_colab["mounts"] == [str(fake_colab["drive"])]
    colab.persist_path("../runs/notebooks/05", True)
    assert len(fake_colab["mounts"]) == 1, "mounted once"
    for name in ("google", "google.colab", "google.colab.userdata", "google.colab.drive"):
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(colab, "on_colab", lambda: False)
    assert colab.persist_path("../runs/x", True) == "../runs/x" and "only on Colab" in capsys.readouterr().out
    with pytest.raises(ValueError, match="persist"):
        colab.persist_path("../runs/x", "yes")


def test_first_cell_restarts_the_runtime_when_it_replaced_a_module_already_imported(course_repo, colab_sandbox):
    """pandas (which imports pyarrow) loaded before cell 1, then the install upgrades pyarrow: the old extension would
    stay loaded and the next `import datasets` fail. The cell says why and restarts the runtime (kills its own
    process, as Colab's restart does); the rerun finds the install done and carries on. A fake pyarrow 18.1.0 and a
    pip that 'upgrades' it to 26.0.1 stand in for the real ones."""
    sb = colab_sandbox
    site = sb["tmp"] / "site"
    (site / "pyarrow").mkdir(parents=True)
    (site / "pyarrow" / "__init__.py").write_text("OLD = True\n")

    def dist(version):
        for old in site.glob("pyarrow-*.dist-info"):
            shutil.rmtree(old)
        d = site / f"pyarrow-{version}.dist-info"
        d.mkdir()
        (d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: pyarrow\nVersion: {version}\n")

    dist("18.1.0")
    upgrade = (f"import pathlib, shutil\nsite = pathlib.Path({str(site)!r})\n"
               "for old in site.glob('pyarrow-*.dist-info'): shutil.rmtree(old)\n"
               "(site / 'pyarrow-26.0.1.dist-info').mkdir()\n"
               "(site / 'pyarrow-26.0.1.dist-info' / 'METADATA').write_text("
               "'Metadata-Version: 2.1\\nName: pyarrow\\nVersion: 26.0.1\\n')\n")
    pip = sb["bin"] / "pip"
    pip.write_text(pip.read_text() + upgrade)
    preload = f"import sys\nsys.path.insert(0, {str(site)!r})\nimport pyarrow  # what `import pandas` does\n"
    cell = first_cell(str(course_repo))

    first = _run_first_cell(sb, preload + cell, sb["work"])
    assert first.returncode == -9, first.stdout + first.stderr  # the runtime restarted itself
    assert "already imported the old pyarrow" in first.stdout and "run the notebook again" in first.stdout
    assert "RESULT" not in first.stdout and (sb["work"] / "dpo-course" / ".colab-installed").exists()

    again = _run_first_cell(sb, preload + cell, sb["work"])  # after the restart: install skipped, no restart
    assert again.returncode == 0 and "already installed" in again.stdout, again.stdout + again.stderr
    assert len(_pip_calls(sb)) == 2


def test_first_cell_does_not_restart_when_nothing_it_replaced_was_loaded(course_repo, colab_sandbox):
    proc = _run_first_cell(colab_sandbox, first_cell(str(course_repo)), colab_sandbox["work"])
    assert proc.returncode == 0 and "Restarting" not in proc.stdout and "packages: installed" in proc.stdout


def test_first_cell_is_short_and_setup_course_refuses_a_folder_that_is_not_the_course(tmp_path):
    """The install logic lives in helpers.infra.colab (linted, tested above through the real cell); the cell keeps only
    what runs before helpers exists, and a wrong folder is named instead of being set up."""
    assert len([x for x in first_cell("https://github.com/a/b", "v1").splitlines() if x.strip()]) <= 12
    with pytest.raises(ValueError, match="root must be the course folder"):
        colab.setup_course(tmp_path)
    before = os.getcwd()
    colab.setup_course(None)  # not found and not on Colab: nothing changes
    assert os.getcwd() == before
