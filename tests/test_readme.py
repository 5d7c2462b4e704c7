"""The README's Python example runs as written, on the generated sample data."""

import re
from pathlib import Path

import pytest

from imgclf.models import registry
from imgclf.data.sample_data import write_sample_dataset

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    example = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    write_sample_dataset(tmp_path / "data", num_classes=3, image_size=32, train_per_class=10, test_per_class=2)
    monkeypatch.chdir(tmp_path)
    try:
        exec(compile(example, str(README), "exec"), {"__name__": "readme_example"})
    finally:
        registry._MODEL_CLASSES.pop("SmallCnn", None)
    assert (tmp_path / "models" / "SmallCnn" / "1" / "saved_model.pb").exists()
    assert "[[b'" in capsys.readouterr().out


ROOT = README.parent
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _local_links(page):
    """(page, target) for each relative link in `page` to a file of the repository."""
    text = re.sub(r"```.*?```|`[^`]*`", "", page.read_text(), flags=re.S)  # code is not links
    for target in LINK.findall(text):
        if "://" not in target:
            yield page, (page.parent / target).resolve()


def _documentation_links():
    pages = [README, *sorted((ROOT / "docs").glob("*.md"))]
    return [link for page in pages for link in _local_links(page)]


def test_readme_keeps_the_quick_start_commands():
    quick_start = README.read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "make demo" in quick_start and "make test" in quick_start


def test_readme_links_every_docs_page():
    linked = {target for page, target in _local_links(README)}
    for page in (ROOT / "docs").glob("*.md"):
        assert page.resolve() in linked, f"{page.name} is not linked from the README"


@pytest.mark.parametrize(
    "page, target", _documentation_links(),
    ids=lambda x: str(x.relative_to(ROOT)) if isinstance(x, Path) else None,
)
def test_documentation_link_exists(page, target):
    name = target.relative_to(ROOT).as_posix()
    assert target.exists(), f"{page.relative_to(ROOT)} links to {name}, which does not exist"
