"""Exported models on the Hugging Face Hub: `ldlm push DIR REPO_ID` and `load_model("owner/name")`.

Plain `huggingface_hub` calls (`snapshot_download`, `HfApi.create_repo/upload_folder`) on the folder
that `ldlm export` writes; only its listed files travel (export.FILES), and nothing is executed on
load (safetensors + JSON). Downloads go to the usual hub cache, so a model fetched once loads offline.
"""
from __future__ import annotations

import re
from pathlib import Path

from .errors import UserError
from .export import FILES, is_export, read_marker

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*(@[A-Za-z0-9._/-]+)?$")


def looks_like_hub_id(name: str) -> bool:
    """'owner/name' or 'owner/name@revision' (and not an existing local path)."""
    return bool(_HUB_ID.match(str(name))) and not Path(name).exists()


def _reason(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:160]


def download(repo_id: str) -> Path:
    """The exported model `owner/name[@revision]`, from the hub cache or downloaded into it."""
    from huggingface_hub import snapshot_download

    repo, _, revision = repo_id.partition("@")
    try:
        folder = Path(snapshot_download(repo, revision=revision or None, allow_patterns=FILES))
    except Exception as e:  # noqa: BLE001 - network, auth, not found, offline: all end in the same advice
        raise UserError(f"'{repo_id}' is not a local folder and could not be fetched from the Hugging Face Hub "
                        f"({type(e).__name__}: {_reason(e)}); pass a folder from `ldlm export`, or check the id "
                        f"and the network") from None
    if not is_export(folder):
        raise UserError(f"hub repo '{repo_id}' holds no ldlm export (no ldlm.json); push one with `ldlm push`")
    return folder


def push(folder: str | Path, repo_id: str, private: bool = False, message: str | None = None, api=None) -> str:
    """Upload an export folder to `repo_id` (created if needed); returns the commit URL."""
    folder = Path(folder)
    if not is_export(folder):
        raise UserError(f"'{folder}' is not an export (no ldlm.json); run `ldlm export RUN {folder}` first: "
                        f"run folders hold optimizer state and are not meant to be shared")
    meta = read_marker(folder)
    if "@" in repo_id or not _HUB_ID.match(repo_id):
        raise UserError(f"'{repo_id}' is not a hub repo id; use owner/name, e.g. alice/ldlm-tiny")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=str(folder), allow_patterns=FILES,
                                 commit_message=message or f"ldlm export of {meta['source_checkpoint']}")
    except Exception as e:  # noqa: BLE001 - network, auth, permissions: one line with the fix
        raise UserError(f"push to '{repo_id}' failed ({type(e).__name__}: {_reason(e)}); check the network, "
                        f"your token (`hf auth login` or HF_TOKEN) and that you may write to that repo") from None
    return str(getattr(info, "commit_url", info))
