"""A plain (non-editable) install ships every package, template and data file under harmonycell.*."""

import subprocess
import sys
import zipfile


def test_wheel_contents(tmp_path):
    repo = __import__("pathlib").Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                    "-w", str(tmp_path), str(repo)], check=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("harmonycell-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    # every source file of the four package folders ships, whatever room it lives in
    for folder in ("agents", "tools", "sandbox", "prompts"):
        for f in (repo / folder).rglob("*"):
            if f.is_file() and f.suffix in {".py", ".md", ".json"} or f.parent.name == "image":
                rel = f.relative_to(repo).as_posix()
                if "__pycache__" in rel:
                    continue
                # agents/api is the package `harmonycell` itself (import harmonycell as hc)
                shipped = rel.replace("agents/api/", "", 1) if rel.startswith("agents/api/") else rel
                assert f"harmonycell/{shipped}" in names, f"{rel} missing from the wheel"
    for required in ["harmonycell/agents/cli/main.py", "harmonycell/tools/data/unify.py",
                     "harmonycell/tools/data/mapping_spec.schema.json",
                     "harmonycell/tools/search/model_templates/resnet.py"]:
        assert required in names, f"{required} missing from the wheel"
    assert any(n.startswith("harmonycell/prompts/") and n.endswith(".md") for n in names)
    # no generic top-level names squatted in a user's environment
    tops = {n.split("/")[0] for n in names if not n.startswith("harmonycell-")}
    assert tops == {"harmonycell"}
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "harmonycell = harmonycell.agents.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_installed_package_imports_outside_the_repo(tmp_path):
    code = ("import harmonycell, harmonycell.agents.cli, harmonycell.tools.data.unify, harmonycell.sandbox.harness; "
            "assert callable(harmonycell.predict) and callable(harmonycell.load_run); print('ok')")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
