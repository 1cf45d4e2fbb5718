"""The Hugging Face cache shared with `huggingface_hub` (the real client,
pinned in requirements.txt), driven by crates/symbi-slm/tests/hub.rs.

    hf_cache.py sees REPO FILE SHA256 SNAPSHOT
        the file `symbi-slm models pull` put in $HF_HUB_CACHE is cached for
        huggingface_hub: found offline (local_files_only, HF_HUB_OFFLINE's
        path), by try_to_load_from_cache and scan_cache_dir, and is the
        same file, with the same bytes.
    hf_cache.py pulls REPO FILE
        huggingface_hub downloads the file from $HF_ENDPOINT into
        $HF_HUB_CACHE; prints the path.
"""

import hashlib
import json
import os
import sys

from huggingface_hub import hf_hub_download, scan_cache_dir, try_to_load_from_cache


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sees(repo, file, digest, snapshot):
    offline = hf_hub_download(repo_id=repo, filename=file, revision="main", local_files_only=True)
    assert os.path.realpath(offline) == os.path.realpath(snapshot), (offline, snapshot)
    assert sha256(offline) == digest, "the bytes are the pinned ones"
    cached = try_to_load_from_cache(repo_id=repo, filename=file)
    assert isinstance(cached, str) and os.path.samefile(cached, snapshot), cached
    info = scan_cache_dir()
    assert not info.warnings, info.warnings
    repos = {r.repo_id: r for r in info.repos}
    assert repo in repos, list(repos)
    files = [f for rev in repos[repo].revisions for f in rev.files]
    assert any(f.file_name == file and f.size_on_disk == os.path.getsize(snapshot) for f in files), files
    assert "main" in {ref for rev in repos[repo].revisions for ref in rev.refs}
    print(json.dumps({"path": offline, "checks": 5}))


def pulls(repo, file):
    path = hf_hub_download(repo_id=repo, filename=file, revision="main")
    print(json.dumps({"path": path}))


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    {"sees": sees, "pulls": pulls}[mode](*args)
