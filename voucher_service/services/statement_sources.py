"""Where a reconciliation's statement rows come from: one file or several, a directory, a zip, a gzip.

Every `--statement` is a file or a directory (its regular files, by name, hidden ones skipped). A file
whose first bytes are a zip's (`PK\\x03\\x04`) is expanded into its members (for `alipay`, only the
业务明细 CSVs, not their 汇总 summary); one whose first bytes are gzip's (`\\x1f\\x8b`) is decompressed
while it is read, whatever its name. Each source is decoded as UTF-8 (BOM accepted), or for the
providers' bills as GB18030 when its first 64 KiB are not UTF-8.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

ZIP_MAGIC = b"PK\x03\x04"
EMPTY_ZIP_MAGIC = b"PK\x05\x06"
GZIP_MAGIC = b"\x1f\x8b"
SNIFF_BYTES = 1 << 16
MAX_SOURCES = 10_000
ALIPAY_DETAIL, ALIPAY_SUMMARY = "业务明细", "汇总"
READ_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error, zipfile.BadZipFile)


class SourceUnusable(Exception):
    """A statement file that cannot be opened or expanded; the message names it and says why."""


@dataclass(frozen=True)
class Source:
    """One statement text: `name` as reports show it, `label` as error messages name it."""

    name: str
    label: str
    open_bytes: Callable[[], IO[bytes]]  # a fresh stream of the (decompressed) bytes
    gzipped: bool = False


def _magic(path: Path) -> bytes:
    with path.open("rb") as fh:
        return fh.read(4)


def _member_name(info: zipfile.ZipInfo) -> str:
    # Zips made on Chinese Windows (Alipay's among them) store GBK names without the UTF-8 flag.
    if info.flag_bits & 0x800:
        return info.filename
    try:
        return info.filename.encode("cp437").decode("gbk")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return info.filename


def _gunzip(opener: Callable[[], IO[bytes]]) -> Callable[[], IO[bytes]]:
    def open_gzip() -> IO[bytes]:
        raw = opener()
        stream = gzip.GzipFile(fileobj=raw, mode="rb")
        stream.myfileobj = raw  # type: ignore[assignment]  # closed with the gzip stream, as gzip.open does
        return stream  # type: ignore[return-value]

    return open_gzip


def _file_sources(path: Path, name: str, fmt: str) -> list[Source]:
    try:
        magic = _magic(path)
    except OSError as exc:
        raise SourceUnusable(f"{path}: cannot read the statement: {exc.strerror or exc}") from None
    if magic.startswith((ZIP_MAGIC, EMPTY_ZIP_MAGIC)):
        return _zip_sources(path, name, fmt)
    if magic.startswith(GZIP_MAGIC):
        return [Source(name, f"{path} (gzip)", _gunzip(lambda: path.open("rb")), gzipped=True)]
    return [Source(name, str(path), lambda: path.open("rb"))]


def _zip_sources(path: Path, name: str, fmt: str) -> list[Source]:
    try:
        with zipfile.ZipFile(path) as zf:
            infos = [i for i in zf.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError) as exc:
        raise SourceUnusable(f"{path}: not a readable zip: {exc}") from None
    members = sorted(
        ((_member_name(i), i) for i in infos if not i.filename.startswith("__MACOSX/")), key=lambda m: m[0]
    )
    members = [(n, i) for n, i in members if not Path(n).name.startswith(".")]
    if fmt == "alipay":
        chosen = [(n, i) for n, i in members if ALIPAY_DETAIL in n and ALIPAY_SUMMARY not in n]
        if not chosen:
            listed = ", ".join(n for n, _ in members) or "none"
            raise SourceUnusable(
                f"{path}: the zip holds no Alipay 业务明细 CSV (a member named …业务明细.csv); members: {listed}"
            )
        members = chosen
    if not members:
        raise SourceUnusable(f"{path}: the zip is empty")
    out = []
    for member, info in members:

        def opener(info: zipfile.ZipInfo = info) -> IO[bytes]:
            zf = zipfile.ZipFile(path)
            return io.BufferedReader(_ClosingMember(zf, zf.open(info)), 1 << 20)

        label = f"{path}!{member}"
        try:
            with opener() as fh:
                head = fh.read(4)
        except (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError) as exc:
            raise SourceUnusable(f"{label}: cannot read the zip member: {exc}") from None
        if head.startswith((ZIP_MAGIC, EMPTY_ZIP_MAGIC)):
            raise SourceUnusable(f"{label}: a zip inside the zip; unpack it and give the inner zip")
        gzipped = head.startswith(GZIP_MAGIC)
        out.append(
            Source(
                f"{name}!{member}",
                label + (" (gzip)" if gzipped else ""),
                _gunzip(opener) if gzipped else opener,
                gzipped,
            )
        )
    return out


class _ClosingMember(io.RawIOBase):
    """A zip member's stream that closes its archive too."""

    def __init__(self, zf: zipfile.ZipFile, member: IO[bytes]) -> None:
        self._zf, self._member = zf, member

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._member.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._member.close()
        self._zf.close()
        super().close()


def collect(paths: tuple[Path, ...], fmt: str) -> list[Source]:
    """Every statement text of the run, in order: the paths as given, a directory's files by name."""
    out: list[Source] = []
    for path in paths:
        if path.is_dir():
            try:
                entries = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            except OSError as exc:
                raise SourceUnusable(f"{path}: cannot list the directory: {exc.strerror or exc}") from None
            if not entries:
                raise SourceUnusable(f"{path}: the directory holds no statement files")
            for entry in entries:
                out.extend(_file_sources(entry, f"{path.name}/{entry.name}", fmt))
        else:
            out.extend(_file_sources(path, path.name, fmt))
        if len(out) > MAX_SOURCES:
            raise SourceUnusable(f"more than {MAX_SOURCES} statement files in one run")
    return out


def file_sha256(paths: tuple[Path, ...]) -> str:
    """The run's input hash: one file's SHA-256; for several, the SHA-256 of `sha256  name` lines."""
    files: list[Path] = []
    for path in paths:
        files.extend(
            sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            if path.is_dir()
            else [path]
        )
    digests = []
    for f in files:
        sha = hashlib.sha256()
        with f.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                sha.update(chunk)
        digests.append((sha.hexdigest(), f.name))
    if len(digests) == 1:
        return digests[0][0]
    manifest = "".join(f"{d}  {n}\n" for d, n in digests)
    return hashlib.sha256(manifest.encode()).hexdigest()


def encoding_of(source: Source, fmt: str) -> str:
    """`utf-8` for native statements; for bills, GB18030 when the first 64 KiB are not UTF-8. (A BOM is
    dropped by the parsers.) A stream that fails while sniffed is sniffed on what could be read: the
    failure is reported, with its line, when the lines are read."""
    if fmt == "native":
        return "utf-8"
    head = b""
    try:
        with source.open_bytes() as fh:
            while len(head) < SNIFF_BYTES and (chunk := fh.read(SNIFF_BYTES - len(head))):
                head += chunk
    except READ_ERRORS:
        pass
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        return "utf-8"
    except UnicodeDecodeError:
        return "gb18030"


def text_lines(source: Source, encoding: str) -> Iterator[str]:
    """The source's lines, each decoded on its own (so an undecodable byte is reported on its line; a
    newline byte is never part of a UTF-8, GBK or GB18030 character). A corrupt gzip or zip member
    raises SourceUnusable naming the line it was read up to."""
    read = 0
    try:
        with source.open_bytes() as fh:
            for raw in fh:
                read += 1
                yield raw.decode(encoding)
    except READ_ERRORS as exc:
        what = "gzip data" if source.gzipped else "zip member"
        reason = str(exc) or type(exc).__name__
        raise SourceUnusable(
            f"{source.label}:{read + 1}: the {what} is corrupt or truncated: {reason}"
        ) from None
