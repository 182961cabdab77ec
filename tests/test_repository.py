"""The repository is self-contained: no file cites a document that is not in the tree."""
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE = ("DESIGN.md", "notes.md", "../shared", "papers/")


def test_nothing_cites_documents_outside_the_tree():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    hits = []
    for rel in files:
        path = ROOT / rel
        if path == Path(__file__) or not path.is_file() or path.suffix in (".bit", ".so", ".gz"):
            continue
        text = path.read_text(errors="replace")
        hits += [f"{rel}: {name}" for name in OUTSIDE if name in text]
    assert not hits, "cites of documents outside the repository:\n" + "\n".join(hits)
