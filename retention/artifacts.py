"""Pinned, verifiable model artifacts: one immutable folder per trained version.

Layout: `<models_root>/<version>/model.joblib` + `metadata.json` (the trainer adds `report.html` later).
`metadata.json` records what the model was trained on and with (feature version, library versions) and the
SHA-256 of the model file, so the loader can refuse an artifact that would misbehave instead of serving
silently wrong predictions.

joblib files are pickles: loading one executes code. Every check here therefore runs BEFORE anything is
unpickled. The checksum protects against accidents (truncated copy, bit rot, a half-written deploy, a file
from another version); it is not a signature, since anyone who can edit the model file can edit
metadata.json too. Only load artifacts from a folder you trust.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import joblib

from retention.jsonvalues import dumps

MODEL_FILE = "model.joblib"
METADATA_FILE = "metadata.json"
# Keys save_artifact writes itself; a caller passing a different value for one of them is a bug.
RESERVED_KEYS = ("version", "created_at", "feature_version", "library_versions", "artifact")
# Packages whose versions are recorded. Only scikit-learn must match exactly on load: its estimators'
# pickled internals change between releases, and an unpickled model from another release can predict wrong
# numbers without raising. The others are recorded for diagnosis.
_RECORDED_PACKAGES = ("scikit-learn", "numpy", "scipy", "joblib")
_VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_CHUNK = 1 << 20


class ArtifactError(RuntimeError):
    """A model artifact cannot be saved or loaded; the message names the file, the problem and the fix."""


def library_versions() -> dict[str, str]:
    """Versions of the interpreter and the libraries a pickled model depends on."""
    versions = {"python": platform.python_version()}
    for name in _RECORDED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    # Without fsync a crash right after the rename can leave a complete-looking folder with empty files.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _utc_iso(ts: datetime) -> str:
    # Microseconds so that two versions saved within one second still order correctly.
    return ts.isoformat(timespec="microseconds").replace("+00:00", "Z")


def save_artifact(
    models_root: str | Path,
    model: object,
    metadata: dict,
    *,
    feature_version: str,
    version: str | None = None,
    extra_files: dict[str, Callable[[Path], None]] | None = None,
) -> Path:
    """Write `model` and its metadata as a new immutable version folder and return the folder's path.

    `extra_files` maps file names to functions writing them (e.g. the compiled scorer); their checksums are
    recorded under `artifact.extras` and verified by `verify_version` like the model file's.

    The default version id is `YYYYMMDDTHHMMSSZ-<first 8 hex of the model file's sha256>` (UTC). Everything
    is written into a hidden temporary folder under `models_root` and renamed into place, so a reader never
    sees a half-written version. An existing version is never overwritten.
    """
    models_root = Path(models_root)
    if version is not None and not _VERSION_RE.fullmatch(version):
        raise ValueError(
            f"version {version!r} is not a valid folder name: use letters, digits, '.', '_' and '-', "
            "not starting with '.' or '-'"
        )
    if not isinstance(feature_version, str) or not feature_version:
        raise ValueError("feature_version must be a non-empty string")
    now = datetime.now(UTC)
    models_root.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkdtemp: its 0700 mode would carry over to the version folder and hide the model from a
    # service running as another user. A hidden name keeps list_versions from ever seeing it.
    tmp = models_root / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        model_path = tmp / MODEL_FILE
        joblib.dump(model, model_path)
        _fsync(model_path)
        digest = sha256_file(model_path)
        version = version or f"{now:%Y%m%dT%H%M%SZ}-{digest[:8]}"
        final = models_root / version
        if final.exists():
            raise ArtifactError(
                f"{final}: version {version} already exists and versions are immutable; "
                "save under a new version id (or delete the old folder deliberately)"
            )
        extras = {}
        for name, write in (extra_files or {}).items():
            if Path(name).name != name or name in (MODEL_FILE, METADATA_FILE) or name.startswith("."):
                raise ValueError(f"extra file name {name!r} must be a plain, unused file name")
            write(tmp / name)
            _fsync(tmp / name)
            extras[name] = {"sha256": sha256_file(tmp / name), "bytes": (tmp / name).stat().st_size}
        fixed = {
            "version": version,
            "created_at": _utc_iso(now),
            "feature_version": feature_version,
            "library_versions": library_versions(),
            "artifact": {"file": MODEL_FILE, "sha256": digest, "bytes": model_path.stat().st_size,
                         "extras": extras},
        }
        clashes = sorted(k for k in RESERVED_KEYS if k in metadata and metadata[k] != fixed[k])
        if clashes:
            raise ValueError(f"metadata keys {clashes} are written by save_artifact; do not pass them")
        meta_path = tmp / METADATA_FILE
        meta_path.write_text(
            dumps({**metadata, **fixed}, indent=2, sort_keys=True) + "\n"
        )
        _fsync(meta_path)
        try:
            # rename() would silently replace an *empty* directory of the same name; the exists() check
            # above covers that, and a non-empty one created concurrently makes rename fail.
            os.rename(tmp, final)
        except OSError as exc:
            raise ArtifactError(
                f"{final}: cannot move the new version into place ({exc}); "
                "another process may have saved the same version"
            ) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    with contextlib.suppress(OSError):  # not every filesystem lets you fsync a directory
        _fsync(models_root)
    return final


def read_metadata(version_dir: str | Path) -> dict:
    """The parsed metadata.json of a version folder (no checksum or version checks)."""
    version_dir = Path(version_dir)
    if not version_dir.is_dir():
        raise ArtifactError(
            f"{version_dir}: model version folder does not exist; list the available versions "
            "or train a model first"
        )
    path = version_dir / METADATA_FILE
    if not path.is_file():
        raise ArtifactError(
            f"{path}: metadata.json is missing, so the model cannot be verified; "
            "this is not a complete model version (re-train or restore the folder from a backup)"
        )
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(
            f"{path}: metadata.json cannot be parsed ({exc}); the file is corrupt, "
            "restore the version folder from a backup or re-train"
        ) from exc
    if not isinstance(meta, dict):
        raise ArtifactError(f"{path}: metadata.json must hold a JSON object, found {type(meta).__name__}")
    return meta


def verify_version(version_dir: str | Path, *, feature_version: str) -> dict:
    """Check a version folder without loading anything from it; returns its metadata.

    Refused with ArtifactError: missing folder, missing/corrupt metadata.json, a missing model or extra
    file, a size or SHA-256 mismatch of any of them, or a feature version other than the running code's
    (the model would be fed columns it was not trained on).
    """
    version_dir = Path(version_dir)
    meta = read_metadata(version_dir)
    meta_path = version_dir / METADATA_FILE
    art = meta.get("artifact")
    if not isinstance(art, dict) or not isinstance(art.get("sha256"), str) or not isinstance(art.get("file"), str):
        raise ArtifactError(
            f"{meta_path}: metadata.json has no valid 'artifact' entry (file, sha256); "
            "the model cannot be verified, re-train"
        )
    _verify_file(version_dir, art["file"], art)
    extras = art.get("extras") or {}
    if not isinstance(extras, dict):
        raise ArtifactError(f"{meta_path}: 'artifact.extras' must be an object")
    for name, entry in extras.items():
        _verify_file(version_dir, name, entry)
    if meta.get("feature_version") != feature_version:
        raise ArtifactError(
            f"{meta_path}: model was trained on feature version {meta.get('feature_version')!r} but the "
            f"running code builds feature version {feature_version!r}; re-train the model with this code "
            "or deploy the code that matches the model"
        )
    return meta


def _verify_file(version_dir: Path, name: str, entry: dict) -> Path:
    meta_path = version_dir / METADATA_FILE
    # The file name comes from an editable JSON file: keep it inside the version folder.
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        raise ArtifactError(f"{meta_path}: artifact file {name!r} must be a plain file name")
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
        raise ArtifactError(f"{meta_path}: artifact file {name!r} has no sha256; it cannot be verified, re-train")
    path = version_dir / name
    if not path.is_file():
        raise ArtifactError(
            f"{path}: model file is missing; the version folder is incomplete, "
            "restore it from a backup or re-train"
        )
    expected_bytes = entry.get("bytes")
    actual_bytes = path.stat().st_size
    if isinstance(expected_bytes, int) and actual_bytes != expected_bytes:
        raise ArtifactError(
            f"{path}: size is {actual_bytes} bytes but metadata.json says {expected_bytes}; "
            "the file is truncated or was replaced, restore it from a backup or re-train"
        )
    actual = sha256_file(path)
    if actual != entry["sha256"]:
        raise ArtifactError(
            f"{path}: sha256 {actual} does not match {entry['sha256']} in metadata.json; the file is "
            "corrupt or was modified, so it was not loaded; restore it from a backup or re-train"
        )
    return path


def load_artifact(version_dir: str | Path, *, feature_version: str) -> tuple[object, dict]:
    """Verify a version folder (`verify_version`) and the scikit-learn version, and only then unpickle its
    model; returns (model, metadata)."""
    version_dir = Path(version_dir)
    meta = verify_version(version_dir, feature_version=feature_version)
    model_path = version_dir / meta["artifact"]["file"]
    trained_with = (meta.get("library_versions") or {}).get("scikit-learn")
    installed = library_versions()["scikit-learn"]
    if trained_with != installed:
        raise ArtifactError(
            f"{version_dir / METADATA_FILE}: model was trained with scikit-learn {trained_with} but {installed} "
            f"is installed; install scikit-learn=={trained_with} or re-train the model with the installed version"
        )
    try:
        model = joblib.load(model_path)
    except Exception as exc:
        raise ArtifactError(
            f"{model_path}: passed all checks but could not be unpickled ({type(exc).__name__}: {exc}); "
            "re-train the model"
        ) from exc
    return model, meta


def _sort_key(version_dir: Path) -> tuple[float, str]:
    # created_at orders versions with custom ids too; an unreadable metadata.json falls back to the file's
    # mtime so a broken newest version still sorts last and "latest" refuses loudly instead of silently
    # serving an older model.
    meta_path = version_dir / METADATA_FILE
    try:
        created = json.loads(meta_path.read_text()).get("created_at")
        ts = datetime.fromisoformat(created).timestamp()
    except (OSError, ValueError, TypeError, AttributeError):
        ts = meta_path.stat().st_mtime
    return ts, version_dir.name


def list_versions(models_root: str | Path) -> list[str]:
    """Version ids under `models_root` (folders holding a metadata.json), oldest first."""
    models_root = Path(models_root)
    if not models_root.is_dir():
        return []
    dirs = [
        d for d in models_root.iterdir()
        if d.is_dir() and not d.name.startswith(".") and (d / METADATA_FILE).is_file()
    ]
    return [d.name for d in sorted(dirs, key=_sort_key)]


def resolve_version(models_root: str | Path, ref: str = "latest") -> Path:
    """The folder of a version: `ref` is an alias of the registry ("champion", "challenger";
    retention.registry), "latest" (the newest trained), a version id under `models_root`, or a folder path."""
    from retention.registry import ALIASES, RegistryError, read_registry

    models_root = Path(models_root)
    if ref in ALIASES:
        try:
            version = read_registry(models_root).version_of(ref)
        except RegistryError as exc:
            raise ArtifactError(str(exc)) from exc
        if version is None:
            hint = (f"promote one with `retention models promote VERSION` (the newest is {list_versions(models_root)[-1]})"
                    if list_versions(models_root) else "train a model first, then promote it")
            raise ArtifactError(f"{models_root}: no {ref} model version yet; {hint}")
        if not (models_root / version).is_dir():
            raise ArtifactError(f"{models_root}: the {ref} is {version}, which is not there any more; promote "
                                "another version or restore it")
        return models_root / version
    if ref == "latest":
        versions = list_versions(models_root)
        if not versions:
            raise ArtifactError(f"{models_root}: no trained model versions found; train a model first")
        return models_root / versions[-1]
    if _VERSION_RE.fullmatch(ref) and (models_root / ref).is_dir():
        return models_root / ref
    if Path(ref).is_dir():
        return Path(ref)
    known = list_versions(models_root)
    hint = f"available: {', '.join(known[-5:])}" if known else "there are no versions yet; train a model first"
    raise ArtifactError(f"{models_root}: unknown model version {ref!r}; use 'latest', a version id or a path ({hint})")
