"""What `pip install clinical-ner` gets: the wheel built from the repository's files.

A data file missing from pyproject.toml's package-data works in an editable
install (the tests' own) and fails only for users of the wheel, so the wheel
is built here and read.
"""
import configparser
import shutil
import subprocess
import sys
import zipfile

import pytest

from helpers import REPO_ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    # The files a clone has (tracked, or new and not ignored): no build/ or egg-info
    # of the working tree, which setuptools would otherwise reuse.
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    source = tmp_path_factory.mktemp("source")
    for name in listed.splitlines():
        if (REPO_ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, source / name)
    dist = tmp_path_factory.mktemp("dist")
    # Built as pip builds it for users: in an isolated environment with
    # pyproject.toml's build requirements.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--wheel-dir", str(dist), str(source)],
                   check=True, capture_output=True, timeout=600)
    (built,) = dist.glob("clinical_ner-*.whl")
    with zipfile.ZipFile(built) as archive:
        yield {name: archive.read(name) for name in archive.namelist()}, listed.splitlines()


def test_the_wheel_holds_every_file_of_the_package_not_only_its_python(wheel):
    contents, listed = wheel
    package_files = {name for name in listed
                     if name.startswith("clinical_ner/") and (REPO_ROOT / name).is_file()}
    assert package_files - set(contents) == set()
    # The bundled model, its licences and the type hints' marker among them.
    assert {"clinical_ner/pretrained/clinical/model.keras",
            "clinical_ner/pretrained/clinical/LICENSE-MACCROBAT-CC-BY-4.0.md",
            "clinical_ner/py.typed"} <= set(contents)


def test_the_wheel_carries_the_licence_and_the_entry_points(wheel):
    contents, _ = wheel
    licences = [name for name in contents
                if ".dist-info/" in name and name.rsplit("/", 1)[1].startswith("LICENSE")]
    assert [contents[name] for name in licences] == [(REPO_ROOT / "LICENSE").read_bytes()]
    (entry_points,) = [name for name in contents if name.endswith(".dist-info/entry_points.txt")]
    parsed = configparser.ConfigParser()
    parsed.read_string(contents[entry_points].decode("utf-8"))
    assert parsed["console_scripts"]["clinical-ner"] == "clinical_ner.cli:main"
    assert parsed["spacy_factories"]["clinical_ner"] == (
        "clinical_ner.integrations.spacy_component:make_clinical_ner")
