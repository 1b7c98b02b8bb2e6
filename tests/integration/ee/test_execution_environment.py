"""The execution environment builds (issue 9): ``ansible-builder create`` gives a context whose
install steps work. No container runtime here, so the steps of the generated Containerfile that do
not need one are replayed with the same working directory as in the image: the galaxy collection
install from the context, the introspection that merges the collections' requirements, and the pip
resolution of what the image installs.

Before the fix the galaxy step installed ``type: dir, source: .`` from /build, which holds only the
context's ``_build`` (requirements files and scripts), not the collection: the build failed there.
"""
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
EE_FILE = ROOT / "execution-environment.yml"


def _run(cmd, cwd, env=None, timeout=600):
    proc = subprocess.run(cmd, cwd=str(cwd), env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, "%s (cwd %s) failed:\n%s\n%s" % (cmd, cwd, proc.stdout[-3000:], proc.stderr[-3000:])
    return proc


def _tarball_src():
    ee = yaml.safe_load(EE_FILE.read_text())
    files = ee.get("additional_build_files") or []
    assert len(files) == 1, files
    return files[0]["src"]


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    """The checkout's EE inputs laid out as in the repository, the tarball made as `make ee-tarball`
    makes it, then `ansible-builder create`."""
    if shutil.which("ansible-builder") is None:
        pytest.fail("ansible-builder is not installed (requirements-dev.txt)")
    work = tmp_path_factory.mktemp("ee")
    for name in ("execution-environment.yml", "requirements.txt", "bindep.txt"):
        shutil.copy(ROOT / name, work / name)
    src = work / _tarball_src()
    src.parent.mkdir(parents=True)
    _run(["ansible-galaxy", "collection", "build", "--force", "--output-path", str(src.parent), str(ROOT)], ROOT)
    built = list(src.parent.glob("apex-ops-*.tar.gz"))
    assert len(built) == 1, built
    built[0].rename(src)
    ctx = work / "context"
    _run(["ansible-builder", "create", "-f", str(work / "execution-environment.yml"), "-c", str(ctx),
          "--output-filename", "Containerfile"], work)
    return ctx


def _stages(containerfile):
    """{stage: [(instruction, argument)]} with line continuations joined."""
    text = containerfile.read_text().replace("\\\n", " ")
    stages, current = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, dummy, arg = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            match = re.search(r"\bAS\s+(\S+)", arg, re.I)
            current = match.group(1) if match else arg
            stages[current] = []
        elif current is not None:
            stages[current].append((instruction, arg.strip()))
    return stages


def _local_dir(ctx, steps, workdir):
    """The context directory that a stage COPYed to ``workdir``."""
    for instruction, arg in steps:
        if instruction == "COPY" and not arg.startswith("--"):
            src, dest = arg.split()
            if dest.rstrip("/") == workdir.rstrip("/"):
                return ctx / src
    raise AssertionError("nothing of the context is copied to %s" % workdir)


def _replay_run(arg, build_args, path_map):
    """A RUN line as an argument list and environment: ARGs substituted, image paths mapped. The image
    has none of the checkout's Ansible settings (``make`` exports ANSIBLE_CONFIG, whose collections_path
    already holds apex.ops, and ansible-galaxy would then skip the install as done)."""
    env = dict((k, v) for k, v in os.environ.items() if not k.startswith("ANSIBLE_"))
    words = []
    for word in shlex.split(arg):
        if not words and re.match(r"^[A-Z_]+=", word):
            key, dummy, value = word.partition("=")
            env[key] = value
            continue
        word = re.sub(r"\$(\w+)", lambda m: build_args.get(m.group(1), ""), word)
        if word == "":
            continue
        words.append(path_map.get(word, word))
    return words, env


def _build_args(ctx):
    args = {}
    for line in (ctx / "Containerfile").read_text().splitlines():
        match = re.match(r'^ARG (\w+)="?(.*?)"?$', line.strip())
        if match:
            args[match.group(1)] = match.group(2)
    return args


def test_galaxy_step_installs_the_collection_with_its_plugins(context, tmp_path):
    stages = _stages(context / "Containerfile")
    steps = stages["galaxy"]
    workdir = [a for i, a in steps if i == "WORKDIR"][-1]
    cwd = _local_dir(context, steps, workdir)
    assert (cwd / "collections" / "apex-ops.tar.gz").is_file()  # the tarball is inside the context
    runs = [a for i, a in steps if i == "RUN" and "ansible-galaxy collection install" in a]
    assert len(runs) == 1, runs
    dest = tmp_path / "usr-share-ansible-collections"
    cmd, env = _replay_run(runs[0], _build_args(context), {"/usr/share/ansible/collections": str(dest)})
    # the image's HOME holds no collections: a copy of apex.ops in this user's ~/.ansible/collections (an
    # ansible-lint run without the checkout's config installs one there) would make ansible-galaxy skip it
    env["HOME"] = str(tmp_path / "home")
    assert cmd[:3] == ["ansible-galaxy", "collection", "install"] and "-r" in cmd
    _run(cmd, cwd, env)
    installed = dest / "ansible_collections" / "apex" / "ops"
    for rel in ("MANIFEST.json", "plugins/modules/apex_cert.py", "plugins/module_utils/tls.py",
                "playbooks/health_check.yml", "playbooks/_target_check.yml", "roles/backup/tasks/main.yml"):
        assert (installed / rel).is_file(), rel
    assert not (installed / "tests" / "lab").exists() and not (installed / ".lab").exists()
    # the plugins load from there, as the EE's ansible would load them
    (tmp_path / "ansible.cfg").write_text("[defaults]\n")
    doc_env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(dest), ANSIBLE_CONFIG=str(tmp_path / "ansible.cfg"))
    doc = _run(["ansible-doc", "-t", "module", "apex.ops.apex_cert"], tmp_path, doc_env)
    assert "APEX.OPS.APEX_CERT" in doc.stdout.upper()
    listing = _run(["ansible-doc", "-l", "apex.ops"], tmp_path, doc_env)
    for module in ("apex_backup", "apex_cert", "apex_db_maint", "apex_info", "apex_queue", "apex_scale"):
        assert "apex.ops." + module in listing.stdout


def test_python_requirements_introspect_and_resolve(context, tmp_path):
    """The builder stage's introspection (collections' + user requirements), then pip's resolution of
    what the image installs (ansible-core and ansible-runner included), without installing."""
    collections = tmp_path / "collections"
    galaxy = [a for i, a in _stages(context / "Containerfile")["galaxy"] if i == "RUN" and "collection install" in a][0]
    cmd, env = _replay_run(galaxy, _build_args(context), {"/usr/share/ansible/collections": str(collections)})
    _run(cmd, context / "_build", env)
    steps = _stages(context / "Containerfile")["builder"]
    introspect = [a for i, a in steps if i == "RUN" and "introspect.py introspect" in a]
    assert len(introspect) == 1, introspect
    pip_out, bindep_out = tmp_path / "src" / "requirements.txt", tmp_path / "src" / "bindep.txt"
    args = _build_args(context)
    args["PYCMD"] = sys.executable
    cmd, env = _replay_run(introspect[0], args, {
        "/output/scripts/introspect.py": str(context / "_build" / "scripts" / "introspect.py"),
        "--write-bindep=/tmp/src/bindep.txt": "--write-bindep=%s" % bindep_out,
        "--write-pip=/tmp/src/requirements.txt": "--write-pip=%s" % pip_out})
    cmd.insert(cmd.index("introspect", 2) + 1, str(collections))  # the image reads /usr/share/ansible/collections
    _run(cmd, context / "_build", env)  # cwd: the builder stage's /build holds _build/requirements.txt
    wanted = pip_out.read_text()
    for package in ("kubernetes", "psycopg", "redis", "boto3", "cryptography>=45", "helm-python-sdk"):
        assert package in wanted, wanted
    assert "postgresql15" in bindep_out.read_text()
    refs = shlex.split(args["ANSIBLE_INSTALL_REFS"])
    report = _run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                   "--disable-pip-version-check", "-r", str(pip_out)] + refs, tmp_path, timeout=900)
    assert report.returncode == 0


def test_prepend_step_keeps_the_pgdg_repository(context):
    runs = [a for i, a in _stages(context / "Containerfile")["base"] if i == "RUN"]
    assert any("pgdg-redhat-repo-latest.noarch.rpm" in a and "module disable postgresql" in a for a in runs)


def test_makefile_builds_the_tarball_the_ee_file_names():
    makefile = (ROOT / "Makefile").read_text()
    assert "mv build/ee/apex-ops-*.tar.gz %s" % _tarball_src() in makefile
    assert "  - build\n" in (ROOT / "galaxy.yml").read_text()  # the context never ends up in the collection
