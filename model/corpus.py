"""Your own text as a corpus: one text file, or a folder of .txt / .md / .rst / .jsonl files.

Documents and their names (a document's split is fixed by a hash of its name, see model.data):
- a folder: every .txt, .md, .rst file below it is one document named by its path relative to
  the folder; every line of a .jsonl file is one document, a JSON object with a "text" string,
  named "<path>:<line number>". Hidden files and folders (a name starting with ".") are skipped.
- a single .jsonl file: its lines, as in a folder.
- any other single file: cut into pieces of at most PIECE_CHARS characters, each ending at its
  last line end when it has one, named "<file name>#<piece number>", so that one long text
  still falls into all three splits.

Every file is untrusted: unreadable files, text that is not UTF-8 and malformed jsonl lines are
errors that name the file (and line), never a silent skip or a replacement character.
"""

from __future__ import annotations

import json
from pathlib import Path

SUFFIXES = (".txt", ".md", ".rst", ".jsonl")
PIECE_CHARS = 4096


def read_documents(path: Path) -> list[tuple[str, str]]:
    """All (name, text) documents of the file or folder ``path``, sorted by name."""
    if path.is_dir():
        files = _corpus_files(path)
        if not files:
            raise ValueError(f"corpus: {path} has no {', '.join(SUFFIXES)} files (hidden ones are skipped)")
        docs = []
        for file in files:
            name = file.relative_to(path).as_posix()
            docs.extend(_jsonl_documents(file, name) if file.suffix == ".jsonl" else [(name, _read_text(file))])
    elif path.is_file():
        docs = _jsonl_documents(path, path.name) if path.suffix == ".jsonl" else _pieces(path.name, _read_text(path))
    else:
        what = "is not a regular file" if path.exists() else "does not exist"
        raise ValueError(f"corpus: {path} {what}; expected a text file or a folder of {', '.join(SUFFIXES)} files")
    if not docs:
        raise ValueError(f"corpus: {path} holds no documents")
    return sorted(docs)


def _corpus_files(folder: Path) -> list[Path]:
    """The corpus files below ``folder``. Broken links stay in, so that reading them names them;
    pipes and devices stay out, since reading one could block forever."""
    found = []
    for file in folder.rglob("*"):
        parts = file.relative_to(folder).parts
        readable = file.is_file() or (file.is_symlink() and not file.exists())
        if file.suffix in SUFFIXES and readable and not any(p.startswith(".") for p in parts):
            found.append(file)
    return sorted(found)


def _read_text(file: Path) -> str:
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ValueError(f"corpus: cannot read {file}: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"corpus: {file} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                         f"convert it, e.g. with iconv -t UTF-8") from None


def _jsonl_documents(file: Path, name: str) -> list[tuple[str, str]]:
    docs = []
    for number, line in enumerate(_read_text(file).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"corpus: {file} line {number}: not JSON ({str(exc)[:80]}); expected an object "
                             f'with a "text" string') from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            got = type(record).__name__ if not isinstance(record, dict) else f'"text" of type {type(record.get("text")).__name__}'
            raise ValueError(f'corpus: {file} line {number}: expected a JSON object with a "text" string, got {got}')
        docs.append((f"{name}:{number}", record["text"]))
    return docs


def _pieces(name: str, text: str) -> list[tuple[str, str]]:
    """``text`` cut into pieces of at most PIECE_CHARS characters, at line ends where it can."""
    pieces, start = [], 0
    while start < len(text):
        end = min(start + PIECE_CHARS, len(text))
        if end < len(text):
            line_end = text.rfind("\n", start, end)
            end = line_end + 1 if line_end >= start else end
        pieces.append(text[start:end])
        start = end
    # Fixed-width numbers keep the pieces in text order when sorted, and a piece's name (so its
    # split) the same when the file grows.
    return [(f"{name}#{i:06d}", piece) for i, piece in enumerate(pieces)]
