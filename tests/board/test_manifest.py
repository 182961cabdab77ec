"""The manifest reader on manifests a user is handed: wrong JSON types and files outside the
bitstream folder get one clear error (issue 14); a manifest from `lowbit build` still opens."""
import json
import os

import pytest

from lowbit.apps import build
from lowbit.kernel import wire
from lowbit.board.device import ManifestMismatch, read_manifest


@pytest.fixture
def folder(tmp_path):
    board = tmp_path / "pynq-z2"
    board.mkdir()
    (board / "lowbit_gemm.bit").write_bytes(b"\x00bit")
    (board / "lowbit_gemm.hwh").write_text("<hwh/>")
    build.write_manifest(board, "pynq-z2", ["lowbit_gemm.bit", "lowbit_gemm.hwh"], tool_version="test", commit="abc")
    return board


def _rewrite(folder, text):
    path = folder / "manifest.json"
    path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)


def test_a_manifest_from_the_build_opens(folder):
    assert read_manifest(folder / "lowbit_gemm.bit")["board"] == "pynq-z2"


@pytest.mark.parametrize("text, says", [("[]", "holds a JSON array"), ('"pynq-z2"', "holds a JSON string"),
                                        ("3", "holds a JSON number"), ("null", "holds a JSON null"),
                                        ("{not json", "is not JSON"), (b"\xff\xfe{}", "is not JSON")])
def test_a_manifest_that_is_not_a_json_object_says_so(folder, text, says):
    _rewrite(folder, text)
    with pytest.raises(ManifestMismatch, match=says):
        read_manifest(folder / "lowbit_gemm.bit")


@pytest.mark.parametrize("files", [[], "lowbit_gemm.bit", {"lowbit_gemm.bit": "00ff"}, {"lowbit_gemm.bit": {}},
                                   {"lowbit_gemm.bit": {"sha256": 7}}, None])
def test_files_of_the_wrong_type_say_what_is_expected(folder, files):
    m = json.loads((folder / "manifest.json").read_text())
    m["files"] = files
    _rewrite(folder, json.dumps(m))
    with pytest.raises(ManifestMismatch, match='"files" must map each file name to'):
        read_manifest(folder / "lowbit_gemm.bit")


def _listing(folder, name: str, target):
    m = json.loads((folder / "manifest.json").read_text())
    m["files"][name] = {"sha256": build.sha256_file(target), "bytes": target.stat().st_size}
    _rewrite(folder, json.dumps(m))


@pytest.mark.parametrize("name", ["../secret.txt", "sub/../../secret.txt", "ABS"])
def test_a_manifest_listing_files_outside_its_folder_is_refused(folder, name):
    secret = folder.parent / "secret.txt"
    secret.write_text("a file the manifest should not reach")
    name = str(secret) if name == "ABS" else name
    _listing(folder, name, secret)  # the checksum even matches: it is the place that is wrong
    with pytest.raises(ManifestMismatch, match="is not a file inside .*lists only the files beside it"):
        read_manifest(folder / "lowbit_gemm.bit")


def test_a_link_out_of_the_folder_is_refused(folder):
    secret = folder.parent / "secret.txt"
    secret.write_text("x")
    os.symlink(secret, folder / "notes.txt")
    _listing(folder, "notes.txt", secret)
    with pytest.raises(ManifestMismatch, match="'notes.txt', which is not a file inside"):
        read_manifest(folder / "lowbit_gemm.bit")


def test_a_non_integer_id_version_is_reported_not_a_format_error(folder):
    m = json.loads((folder / "manifest.json").read_text())
    m["id_version"] = "x" * 1000
    _rewrite(folder, json.dumps(m))
    with pytest.raises(ManifestMismatch, match=f"says ID_VERSION 'xxx.*expects 0x{(wire.IP_ID << 16) | 1:08x}") as err:
        read_manifest(folder / "lowbit_gemm.bit")
    assert len(str(err.value)) < 400
