"""Public names that moved keep working for one release, with a DeprecationWarning (CHANGELOG.md)."""

import importlib
import subprocess
import sys

import pytest


@pytest.mark.parametrize("old_module, name, new_module", [
    ("imgclf.callbacks", "ModelCheckpoint", "imgclf.training"),
    ("imgclf.datasets", "create_train_val_datasets", "imgclf.data"),
    ("imgclf.datasets", "create_test_dataset", "imgclf.data"),
    ("imgclf.datasets", "list_image_files", "imgclf.data"),
    ("imgclf.sample_data", "write_sample_dataset", "imgclf.data.sample_data"),
])
def test_an_old_import_works_and_warns(old_module, name, new_module):
    # pytest's configuration ignores DeprecationWarning; pytest.warns records it anyway.
    module = importlib.import_module(old_module)
    with pytest.warns(DeprecationWarning) as warned:
        imported = getattr(module, name)  # what `from old_module import name` does
    assert imported is getattr(importlib.import_module(new_module), name)
    assert str(warned[0].message) == (
        f"{old_module}.{name} moved to {new_module}.{name}; import it from there "
        f"({old_module} goes in imgclf 0.3.0)"
    )
    assert warned[0].filename == __file__  # it points at the importing line


def test_the_old_readme_import_works_and_warns():
    with pytest.warns(DeprecationWarning, match="imgclf.callbacks.ModelCheckpoint moved to "
                                                "imgclf.training.ModelCheckpoint"):
        from imgclf.callbacks import ModelCheckpoint
    from imgclf.training import ModelCheckpoint as new

    assert ModelCheckpoint is new


def test_an_unknown_old_name_is_an_import_error():
    with pytest.raises(ImportError, match="cannot import name 'Nothing' from 'imgclf.callbacks'"):
        from imgclf.callbacks import Nothing  # noqa: F401


def test_the_old_sample_data_command_works_and_warns(tmp_path):
    result = subprocess.run(
        [sys.executable, "-W", "default", "-m", "imgclf.sample_data", str(tmp_path / "data"),
         "--num_classes", "2", "--image_size", "16", "--train_per_class", "1", "--test_per_class", "1"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "DeprecationWarning: python -m imgclf.sample_data moved to python -m " \
        "imgclf.data.sample_data" in result.stderr
    assert sorted(p.name for p in (tmp_path / "data" / "train").iterdir()) == ["circle", "square"]
