"""Model artifacts: round trip, and every refusal happens with a message that says what is wrong."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import sklearn
from sklearn.linear_model import LogisticRegression

from retention.artifacts import (
    ArtifactError,
    library_versions,
    list_versions,
    load_artifact,
    read_metadata,
    resolve_version,
    save_artifact,
    sha256_file,
)

FV = "fv-test-1"


def _fitted() -> LogisticRegression:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = (X[:, 0] + 0.5 * rng.normal(size=200) > 0).astype(int)
    return LogisticRegression().fit(X, y)


def _edit_metadata(version_dir: Path, **changes) -> None:
    path = version_dir / "metadata.json"
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


def _write_marker(path: str) -> None:
    Path(path).write_text("unpickled!")


class Booby:
    """Unpickling this object writes a marker file: proves whether the loader unpickled anything."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return _write_marker, (str(self.marker),)


@pytest.fixture
def saved(tmp_path):
    model = _fitted()
    vdir = save_artifact(tmp_path / "models", model, {"data_window": {"end": "2025-01-01"}}, feature_version=FV)
    return model, vdir


def test_round_trip(saved):
    model, vdir = saved
    assert sorted(p.name for p in vdir.iterdir()) == ["metadata.json", "model.joblib"]
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{8}", vdir.name)
    loaded, meta = load_artifact(vdir, feature_version=FV)
    X = np.random.default_rng(1).normal(size=(20, 3))
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    assert meta["version"] == vdir.name
    assert meta["feature_version"] == FV
    assert meta["data_window"] == {"end": "2025-01-01"}
    assert meta["library_versions"] == library_versions()
    assert meta["library_versions"]["scikit-learn"] == sklearn.__version__
    digest = sha256_file(vdir / "model.joblib")
    assert meta["artifact"] == {"file": "model.joblib", "sha256": digest, "bytes": (vdir / "model.joblib").stat().st_size,
                                "extras": {}}
    assert vdir.name.endswith(digest[:8])
    assert meta["created_at"].endswith("Z")
    # Pretty-printed with sorted keys, so diffs between versions are readable.
    text = (vdir / "metadata.json").read_text()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
    assert read_metadata(vdir) == meta


def test_metadata_accepts_numpy_values(tmp_path):
    vdir = save_artifact(tmp_path, _fitted(), {"auc": np.float64(0.7), "n": np.int64(3)}, feature_version=FV)
    meta = read_metadata(vdir)
    assert meta["auc"] == 0.7 and meta["n"] == 3


def test_reserved_metadata_key_with_other_value_is_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"\['feature_version'\] are written by save_artifact"):
        save_artifact(tmp_path, _fitted(), {"feature_version": "other"}, feature_version=FV)
    assert list(tmp_path.iterdir()) == []  # no temp folder left behind


def test_tampered_model_file_refused(saved):
    _, vdir = saved
    path = vdir / "model.joblib"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"model\.joblib: sha256 [0-9a-f]{64} does not match .* corrupt or was modified"):
        load_artifact(vdir, feature_version=FV)


def test_truncated_model_file_refused(saved):
    _, vdir = saved
    path = vdir / "model.joblib"
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[: size // 2])
    with pytest.raises(ArtifactError, match=rf"model\.joblib: size is {size // 2} bytes but metadata\.json says {size}; the file is truncated"):
        load_artifact(vdir, feature_version=FV)


def test_truncated_file_refused_by_checksum_even_without_recorded_size(saved):
    _, vdir = saved
    meta = read_metadata(vdir)
    del meta["artifact"]["bytes"]
    (vdir / "metadata.json").write_text(json.dumps(meta))
    path = vdir / "model.joblib"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ArtifactError, match=r"sha256 .* does not match"):
        load_artifact(vdir, feature_version=FV)


def test_missing_metadata_refused(saved):
    _, vdir = saved
    (vdir / "metadata.json").unlink()
    with pytest.raises(ArtifactError, match=r"metadata\.json: metadata\.json is missing, so the model cannot be verified"):
        load_artifact(vdir, feature_version=FV)


def test_corrupt_metadata_refused(saved):
    _, vdir = saved
    (vdir / "metadata.json").write_text('{"version": "x", ')
    with pytest.raises(ArtifactError, match=r"metadata\.json: metadata\.json cannot be parsed \(.*\); the file is corrupt"):
        load_artifact(vdir, feature_version=FV)


def test_missing_model_file_refused(saved):
    _, vdir = saved
    (vdir / "model.joblib").unlink()
    with pytest.raises(ArtifactError, match=r"model\.joblib: model file is missing"):
        load_artifact(vdir, feature_version=FV)


def test_missing_folder_refused(tmp_path):
    with pytest.raises(ArtifactError, match=r"nope: model version folder does not exist"):
        load_artifact(tmp_path / "nope", feature_version=FV)


def test_artifact_file_outside_folder_refused(saved, tmp_path):
    _, vdir = saved
    meta = read_metadata(vdir)
    meta["artifact"]["file"] = "../elsewhere.joblib"
    (vdir / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match=r"artifact file '\.\./elsewhere\.joblib' must be a plain file name"):
        load_artifact(vdir, feature_version=FV)


def test_sklearn_version_mismatch_refused(saved):
    _, vdir = saved
    meta = read_metadata(vdir)
    meta["library_versions"]["scikit-learn"] = "0.24.2"
    (vdir / "metadata.json").write_text(json.dumps(meta))
    # The model file is untouched, so its checksum still matches: the refusal is about the version alone.
    assert sha256_file(vdir / "model.joblib") == meta["artifact"]["sha256"]
    with pytest.raises(
        ArtifactError,
        match=rf"trained with scikit-learn 0\.24\.2 but {re.escape(sklearn.__version__)} is installed; "
        r"install scikit-learn==0\.24\.2 or re-train",
    ):
        load_artifact(vdir, feature_version=FV)


def test_missing_sklearn_version_refused(saved):
    _, vdir = saved
    _edit_metadata(vdir, library_versions={})
    with pytest.raises(ArtifactError, match=r"trained with scikit-learn None but"):
        load_artifact(vdir, feature_version=FV)


def test_feature_version_mismatch_refused(saved):
    _, vdir = saved
    with pytest.raises(
        ArtifactError,
        match=r"trained on feature version 'fv-test-1' but the running code builds feature version 'fv-test-2'",
    ):
        load_artifact(vdir, feature_version="fv-test-2")


def test_unpickle_error_is_wrapped(tmp_path):
    # A file that passes every check but is not a pickle (e.g. written by a buggy tool, checksum recomputed).
    vdir = save_artifact(tmp_path, _fitted(), {}, feature_version=FV)
    path = vdir / "model.joblib"
    path.write_bytes(b"not a pickle at all")
    meta = read_metadata(vdir)
    meta["artifact"].update(sha256=sha256_file(path), bytes=path.stat().st_size)
    (vdir / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match=r"model\.joblib: passed all checks but could not be unpickled"):
        load_artifact(vdir, feature_version=FV)


def test_tampered_artifact_is_never_unpickled(tmp_path):
    marker = tmp_path / "marker"
    vdir = save_artifact(tmp_path / "models", Booby(marker), {}, feature_version=FV)
    assert not marker.exists()
    _edit_metadata(vdir, artifact={**read_metadata(vdir)["artifact"], "sha256": "0" * 64})
    with pytest.raises(ArtifactError, match="does not match"):
        load_artifact(vdir, feature_version=FV)
    assert not marker.exists()
    # Same for the version checks, which also run before joblib.load.
    _edit_metadata(vdir, artifact={**read_metadata(vdir)["artifact"], "sha256": sha256_file(vdir / "model.joblib")})
    with pytest.raises(ArtifactError, match="feature version"):
        load_artifact(vdir, feature_version="other")
    assert not marker.exists()
    # Control: the booby trap is real, so the assertions above are meaningful.
    load_artifact(vdir, feature_version=FV)
    assert marker.read_text() == "unpickled!"


def test_existing_version_is_never_overwritten(tmp_path):
    root = tmp_path / "models"
    vdir = save_artifact(root, _fitted(), {"run": 1}, feature_version=FV, version="v1")
    before = (vdir / "model.joblib").read_bytes(), (vdir / "metadata.json").read_text()
    with pytest.raises(ArtifactError, match=r"v1: version v1 already exists and versions are immutable"):
        save_artifact(root, LogisticRegression(C=0.1), {"run": 2}, feature_version=FV, version="v1")
    assert ((vdir / "model.joblib").read_bytes(), (vdir / "metadata.json").read_text()) == before
    assert [p.name for p in root.iterdir()] == ["v1"]  # the temp folder was cleaned up


def test_existing_empty_folder_is_not_replaced(tmp_path):
    (tmp_path / "v1").mkdir()
    with pytest.raises(ArtifactError, match="already exists"):
        save_artifact(tmp_path, _fitted(), {}, feature_version=FV, version="v1")


@pytest.mark.parametrize("bad", ["../escape", ".hidden", "a/b", ""])
def test_unsafe_version_id_rejected(tmp_path, bad):
    with pytest.raises(ValueError, match="not a valid folder name"):
        save_artifact(tmp_path, _fitted(), {}, feature_version=FV, version=bad)


def test_list_and_resolve_versions(tmp_path):
    root = tmp_path / "models"
    assert list_versions(root) == []
    with pytest.raises(ArtifactError, match=r"models: no trained model versions found; train a model first"):
        resolve_version(root)
    # Custom ids that sort the wrong way alphabetically: order must come from created_at.
    first = save_artifact(root, _fitted(), {}, feature_version=FV, version="zeta")
    second = save_artifact(root, _fitted(), {}, feature_version=FV, version="alpha")
    third = save_artifact(root, _fitted(), {}, feature_version=FV)
    (root / "not-a-version").mkdir()  # no metadata.json: ignored
    (root / "README.md").write_text("models live here")
    assert list_versions(root) == ["zeta", "alpha", third.name]
    assert resolve_version(root) == third
    assert resolve_version(root, "latest") == third
    assert resolve_version(root, "zeta") == first
    assert resolve_version(root, str(second)) == second
    with pytest.raises(ArtifactError, match=r"unknown model version 'v9'; .*available: zeta, alpha, "):
        resolve_version(root, "v9")
    loaded, meta = load_artifact(resolve_version(root), feature_version=FV)
    assert meta["version"] == third.name


def test_broken_newest_version_stays_latest(tmp_path):
    # A corrupt newest metadata.json must not make "latest" fall back silently to an older model.
    root = tmp_path
    save_artifact(root, _fitted(), {}, feature_version=FV, version="old")
    new = save_artifact(root, _fitted(), {}, feature_version=FV, version="new")
    (new / "metadata.json").write_text("{broken")
    assert resolve_version(root) == new
    with pytest.raises(ArtifactError, match="cannot be parsed"):
        load_artifact(resolve_version(root), feature_version=FV)


def test_extra_files_are_checksummed_and_verified_without_unpickling(tmp_path):
    from retention.artifacts import verify_version

    vdir = save_artifact(tmp_path, {"a": 1}, {}, feature_version=FV,
                         extra_files={"tables.npz": lambda p: p.write_bytes(b"compiled arrays")})
    meta = verify_version(vdir, feature_version=FV)
    assert meta["artifact"]["extras"]["tables.npz"]["sha256"] == sha256_file(vdir / "tables.npz")
    (vdir / "tables.npz").write_bytes(b"compiled arrayz")
    with pytest.raises(ArtifactError, match="tables.npz: sha256 .* does not match"):
        verify_version(vdir, feature_version=FV)
    with pytest.raises(ValueError, match="plain, unused file name"):
        save_artifact(tmp_path, {}, {}, feature_version=FV, extra_files={"../x": lambda p: None})
