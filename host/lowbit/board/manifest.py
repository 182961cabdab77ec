"""manifest.json beside a bitstream: what ``lowbit build`` wrote, checked before a board is opened
(wire version, our IP, every listed file's sha256, nothing outside its folder)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional

from lowbit.kernel import wire

MANIFEST = "manifest.json"


class ManifestMismatch(RuntimeError):
    """The bitstream's manifest.json does not describe a build for this host library."""


def hint(board: str) -> str:
    return (f"build one with `lowbit build --board {board}` or download the release bitstream for wire "
            f"version {wire.WIRE_VERSION} into bitstreams/{board}/")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_manifest(board_dir: Path) -> dict:
    """Load a manifest and check its files' sha256 and its WIRE_VERSION; raises ValueError."""
    board_dir = Path(board_dir)
    path = board_dir / MANIFEST
    if not path.is_file():
        raise ValueError(f"{path} not found: build the overlay with `lowbit build --board ...` first")
    manifest = _load_json_object(path)
    if manifest.get("wire_version") != wire.WIRE_VERSION:
        raise ValueError(f"{path}: overlay speaks wire version {manifest.get('wire_version')!r:.40}, this host "
                         f"{wire.WIRE_VERSION}; rebuild it with `lowbit build --board {manifest.get('board')!s:.40}`")
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(e, dict) and isinstance(e.get("sha256"), str)
                                              for e in files.values()):
        raise ValueError(f'{path}: "files" must map each file name to {{"sha256": ..., "bytes": ...}} as '
                         "`lowbit build` writes it; rebuild or restore the manifest")
    for name, entry in files.items():
        f = _listed_file(board_dir, name, path)
        if not f.is_file() or sha256_file(f) != entry["sha256"]:
            raise ValueError(f"{f}: missing or its sha256 differs from {path}; rebuild or restore the file")
    return manifest


def _load_json_object(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not JSON ({err}); rebuild or restore it") from None
    if not isinstance(manifest, dict):
        kind = {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}.get(type(manifest), "null")
        raise ValueError(f"{path} holds a JSON {kind}, not the object `lowbit build` writes; "
                         "rebuild or restore it")
    return manifest


def _listed_file(board_dir: Path, name: str, manifest: Path) -> Path:
    """A file a manifest lists: only files inside its folder (no absolute paths, no ``..``, no link
    out of it), so a manifest a user is handed cannot point the checks at other files."""
    f = board_dir / name
    outside = (not name or Path(name).is_absolute() or ".." in Path(name).parts
               or not f.resolve().is_relative_to(board_dir.resolve()))
    if outside:
        raise ValueError(f"{manifest} lists {name!r:.80}, which is not a file inside {board_dir}; a manifest "
                         "lists only the files beside it: rebuild or restore it")
    return f


def read_manifest(path: Path) -> dict:
    """The manifest.json beside a bitstream (``lowbit.apps.build`` writes it), checked: wire version,
    files' sha256 (``lowbit.apps.build.verify_manifest``), and that it describes our IP."""
    folder = path.parent if path.suffix else path
    if not (folder / "manifest.json").is_file():
        raise ManifestMismatch(f"no manifest.json beside {path}: lowbit cannot tell which wire protocol it speaks; "
                               + hint(folder.name or "<board>"))
    try:
        manifest = verify_manifest(folder)
    except (ValueError, KeyError, TypeError) as err:  # JSON errors are ValueErrors too
        raise ManifestMismatch(f"{err}; or download the release bitstream for wire version {wire.WIRE_VERSION} "
                               f"into bitstreams/{folder.name}/") from err
    board = str(manifest.get("board", folder.name))
    if manifest.get("vlnv", wire.VLNV) != wire.VLNV:
        raise ManifestMismatch(f"{folder / 'manifest.json'} describes IP {manifest.get('vlnv')}, expected {wire.VLNV}; "
                               + hint(board))
    expected_id = (wire.IP_ID << 16) | wire.WIRE_VERSION
    if manifest.get("id_version", expected_id) != expected_id:
        found = manifest["id_version"]
        found = f"0x{found:08x}" if isinstance(found, int) else f"{found!r:.40}"
        raise ManifestMismatch(f"{folder / 'manifest.json'} says ID_VERSION {found}, this host "
                               f"expects 0x{expected_id:08x}; " + hint(board))
    return manifest


def manifest_units(manifest: dict) -> Optional[int]:
    """The compute units a manifest says its build holds, when it says (None otherwise)."""
    units = manifest.get("compute_units")
    if units is None:
        return None
    if not isinstance(units, int) or isinstance(units, bool) or units < 1:
        raise ManifestMismatch(f"manifest compute_units {units!r:.40} is not a positive integer; rebuild with `lowbit build`")
    return units


def find_file(path: Path, suffix: str) -> Path:
    if path.is_dir():
        found = sorted(path.glob(f"*{suffix}"))
        if len(found) != 1:
            raise FileNotFoundError(f"expected one {suffix} file in {path}, found {len(found)}; pass the file itself")
        return found[0]
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; " + hint(path.parent.name or "<board>"))
    return path


