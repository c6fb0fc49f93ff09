"""The images' build context: what `docker build` would send, given the repository's .dockerignore.

A checkout is rebuilt in a temporary folder (the tracked files), with credentials, hospital data, runs
and proxy state put exactly where deploy/docker/compose.yaml mounts them from, plus the usual clutter
(.venv, .git, caches, a stray key). The context is then computed with Docker's own matching rules
(moby/patternmatcher, ported below) and checked: no key, no PKI or data file, and every COPY source
of both Dockerfiles still there.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from deploy.pki import add_site, init_pki

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "deploy" / "docker"
DOCKERFILES = (DOCKER / "Dockerfile.superlink", DOCKER / "Dockerfile.supernode")
COMPOSE = DOCKER / "compose.yaml"


# -- .dockerignore as Docker reads it (moby/patternmatcher: ignorefile.ReadAll, Pattern.compile/match,
#    PatternMatcher.MatchesOrParentMatches) ---------------------------------------------------------


@dataclass(frozen=True)
class DockerPattern:
    text: str  # cleaned: filepath.Clean, no leading "/" and no "!"
    exclusion: bool  # a "!" line: lets matching paths back in
    kind: str  # "exact", "prefix" (ends in **), "suffix" (starts with **, no other wildcard) or "regexp"
    regexp: re.Pattern | None

    def match(self, path: str) -> bool:
        if self.kind == "exact":
            return path == self.text
        if self.kind == "prefix":
            return path.startswith(self.text[:-2])
        if self.kind == "suffix":
            suffix = self.text[2:]
            return path.endswith(suffix) or (suffix.startswith("/") and path == suffix[1:])
        return self.regexp.fullmatch(path) is not None


def read_dockerignore(text: str) -> list[DockerPattern]:
    patterns = []
    for line in text.splitlines():
        if line.startswith("#"):  # comments are dropped before spaces are trimmed, as Docker does
            continue
        line = line.strip()
        if not line:
            continue
        exclusion = line.startswith("!")
        if exclusion:
            line = line[1:].strip()
        if not line:
            raise ValueError("illegal exclusion pattern: '!'")
        line = posixpath.normpath(line)
        if len(line) > 1 and line.startswith("/"):
            line = line.lstrip("/")
        patterns.append(_compile(line, exclusion))
    return patterns


def _compile(pattern: str, exclusion: bool) -> DockerPattern:
    """Pattern.compile: '*' and '?' never cross '/', '**' crosses any number of folders, '[...]' as in Go."""
    regexp, kind, i = "", "exact", 0
    while i < len(pattern):
        char, first = pattern[i], i == 0
        i += 1
        if char == "*":
            if i < len(pattern) and pattern[i] == "*":
                i += 1
                if i < len(pattern) and pattern[i] == "/":
                    i += 1
                if i == len(pattern):
                    if kind == "exact":
                        kind = "prefix"
                    else:
                        regexp, kind = regexp + ".*", "regexp"
                else:
                    regexp, kind = regexp + "(.*/)?", "regexp"
                if first:
                    kind = "suffix"
            else:
                regexp, kind = regexp + "[^/]*", "regexp"
        elif char == "?":
            regexp, kind = regexp + "[^/]", "regexp"
        elif char in ".+()|{}$":
            regexp += "\\" + char
        elif char == "\\":
            if i == len(pattern):
                raise ValueError(f"{pattern!r}: trailing backslash")  # Docker refuses it too
            regexp += "\\" + pattern[i]
            i += 1
        elif char in "[]":
            regexp, kind = regexp + char, "regexp"
        else:
            regexp += char
    return DockerPattern(pattern, exclusion, kind, re.compile(regexp) if kind == "regexp" else None)


def ignored(patterns: list[DockerPattern], path: str) -> bool:
    """MatchesOrParentMatches: the last pattern that matches PATH or one of its folders decides."""
    parent = posixpath.dirname(path)
    folders = parent.split("/") if parent else []
    matched = False
    for pattern in patterns:
        if pattern.exclusion != matched:
            continue
        hit = pattern.match(path) or any(pattern.match("/".join(folders[: n + 1])) for n in range(len(folders)))
        if hit:
            matched = not pattern.exclusion
    return matched


def build_context(root: Path) -> set[str]:
    """The files `docker build ROOT` sends: every file not excluded by ROOT/.dockerignore (if any)."""
    ignore = root / ".dockerignore"
    patterns = read_dockerignore(ignore.read_text()) if ignore.is_file() else []
    context = set()
    for folder, _, files in os.walk(root):
        for name in files:
            path = (Path(folder) / name).relative_to(root).as_posix()
            if not ignored(patterns, path):
                context.add(path)
    return context


@pytest.mark.parametrize(
    ("patterns", "path", "excluded"),
    [
        pytest.param(["*.key"], "ca.key", True, id="star-at-root"),
        pytest.param(["*.key"], "pki/ca.key", False, id="star-only-at-root"),
        pytest.param(["**/*.key"], "ca.key", True, id="double-star-zero-folders"),
        pytest.param(["**/*.key"], "a/b/ca.key", True, id="double-star-any-depth"),
        pytest.param(["*/temp*"], "somedir/temporary.txt", True, id="docs-one-level"),
        pytest.param(["*/temp*"], "somedir/sub/temporary.txt", False, id="docs-not-two-levels"),
        pytest.param(["temp?"], "tempa", True, id="docs-question-mark"),
        pytest.param(["deploy/docker/pki"], "deploy/docker/pki/sites/hospital_a", True, id="folder-takes-contents"),
        pytest.param(["*.md", "!README.md"], "README.md", False, id="docs-exception"),
        pytest.param(["*.md", "!README*.md", "README-secret.md"], "README-secret.md", True, id="docs-last-line-wins"),
        pytest.param(["*", "!deploy", "**/*.pem"], "deploy/docker/pki/crl.pem", True, id="allowlist-then-deny"),
        pytest.param(["*", "!deploy"], "deploy/pki.py", False, id="allowlist-lets-folder-back"),
        pytest.param(["/data/"], "data/x.dcm", True, id="leading-and-trailing-slash"),
    ],
)
def test_matcher_follows_docker_rules(patterns, path, excluded):
    assert ignored(read_dockerignore("\n".join(patterns)), path) is excluded


# -- the checkout ------------------------------------------------------------------------------------


def _compose_context_and_mounts() -> tuple[Path, list[str]]:
    """Build context of both images (resolved) and the host side of every bind mount, as compose.yaml has them."""
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    contexts = {(DOCKER / s["build"]["context"]).resolve() for s in services.values() if "build" in s}
    mounts = {v.split(":")[0] for s in services.values() for v in s.get("volumes", []) if v.startswith("./")}
    assert len(contexts) == 1, contexts
    return contexts.pop(), sorted(mounts)


@dataclass
class Checkout:
    root: Path
    tracked: list[str]
    secrets: list[str]  # what must never be in the context
    context: set[str]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Iterator[Checkout]:
    if shutil.which("git") is None:
        pytest.skip("git is needed to list the checkout's files")
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip(f"not a git checkout: {listed.stderr.strip()}")
    tracked = [p for p in listed.stdout.split("\0") if p and (ROOT / p).is_file()]
    root = tmp_path_factory.mktemp("checkout")
    for path in tracked:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / path, root / path)
    if (ROOT / ".dockerignore").is_file():  # the file under test, committed or not
        shutil.copyfile(ROOT / ".dockerignore", root / ".dockerignore")

    context_dir, mounts = _compose_context_and_mounts()
    assert context_dir == ROOT, f"compose.yaml builds from {context_dir}, expected the repository root"
    compose_dir = root / DOCKER.relative_to(ROOT)
    # Credentials where compose.yaml's instructions make them: `sarcofed pki init deploy/docker/pki`, add-site.
    pki = init_pki(compose_dir / "pki", ["proxy"])
    for site in sorted({Path(m).name for m in mounts if m.startswith("./pki/sites/")}):
        add_site(pki.root, site)
    for mount in mounts:  # everything else compose mounts: data/<site>, runs, proxy/nginx.conf
        host = compose_dir / mount
        if host.exists():
            continue
        if host.suffix:
            host.parent.mkdir(parents=True, exist_ok=True)
            host.write_text("state\n")
        else:
            host.mkdir(parents=True)
            for name in ("manifest.csv", "patient-001/ct/slice-001.dcm", "patient-001/mask.nii.gz", "metrics.csv"):
                (host / name).parent.mkdir(parents=True, exist_ok=True)
                (host / name).write_text("hospital data\n")
    (compose_dir / "proxy" / "access.log").parent.mkdir(parents=True, exist_ok=True)
    (compose_dir / "proxy" / "access.log").write_text('GET /v1/control/ client_dn="CN=sarcofed-coordinator"\n')
    # The same mistakes elsewhere: a PKI made at the root (deploy/README.md) or inside the code, keys and
    # data dropped in code folders, and what a working checkout accumulates.
    init_pki(root / "pki")
    init_pki(root / "deploy" / "pki")
    add_site(root / "deploy" / "pki", "hospital_z")
    clutter = {
        "deploy/stray.key": "-----BEGIN PRIVATE KEY-----\n",
        "simulations/id_ed25519": "-----BEGIN OPENSSH PRIVATE KEY-----\n",
        "common/.env": "TOKEN=1\n",
        "server/superlink-state.db": "db",
        "client/runs/latest/metrics.csv": "x",
        "data/site/manifest.csv": "x",
        "runs/demo/summary.json": "{}",
        ".cache/sites/demo/manifest.csv": "x",
        ".venv/bin/python": "",
        ".git/config": "[core]\n",
        ".flwr_home/config.toml": "",
        "common/__pycache__/errors.cpython-311.pyc": "",
        ".pytest_cache/README.md": "",
        "sarcofed.egg-info/PKG-INFO": "",
        "common/data/site.dcm": "x",
        "server/model.pt": "x",
    }
    for name, text in clutter.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    tracked_set = set(tracked)
    secrets = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.relative_to(root).as_posix() not in tracked_set and p.name != ".dockerignore"
    )
    yield Checkout(root, tracked, secrets, build_context(root))


def _copy_sources(dockerfile: Path) -> list[str]:
    sources = []
    for line in dockerfile.read_text().splitlines():
        words = line.split()
        if words and words[0].upper() in {"COPY", "ADD"}:
            args = [w for w in words[1:] if not w.startswith("--")]
            sources += [posixpath.normpath(a) for a in args[:-1]]
    return sources


def test_dockerignore_sits_at_the_build_context_root():
    context_dir, _ = _compose_context_and_mounts()
    assert (context_dir / ".dockerignore").is_file(), (
        "no .dockerignore where compose.yaml builds: keys and data go into the images"
    )


def test_no_private_key_in_the_context(checkout):
    keys = [p for p in sorted(checkout.context) if b"PRIVATE KEY-----" in (checkout.root / p).read_bytes()]
    assert not keys, f"private keys in the build context: {keys}"


def test_no_pki_data_runs_or_clutter_in_the_context(checkout):
    _, mounts = _compose_context_and_mounts()
    mounted = {posixpath.normpath(f"deploy/docker/{m}").split("/")[2] for m in mounts}
    assert {"pki", "data"} <= mounted  # the folders compose.yaml mounts from, planted above
    under_mounts = [p for p in checkout.context if p.split("/")[:3] in [["deploy", "docker", m] for m in mounted]]
    assert not under_mounts, f"files that compose.yaml mounts are in the build context: {under_mounts}"
    assert not [p for p in checkout.context if p.endswith((".key", ".crt", ".pem")) or "/sites/" in p]
    leaked = sorted(set(checkout.secrets) & checkout.context)
    assert not leaked, f"kept out nowhere: {leaked}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_copy_source_is_in_the_context(checkout, dockerfile):
    sources = _copy_sources(dockerfile)
    assert {"pyproject.toml", "deploy", "common"} <= set(sources)
    for source in sources:
        wanted = [p for p in checkout.tracked if p == source or p.startswith(source + "/")]
        assert wanted, f"{dockerfile.name}: COPY {source} names nothing in the checkout"
        missing = [p for p in wanted if p not in checkout.context]
        assert not missing, f"{dockerfile.name}: COPY {source} would miss {missing}"
