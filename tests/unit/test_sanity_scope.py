"""`make sanity` keeps running ansible-test's checks on the shipped content (scripts/sanity.sh --list).

The list comes from ansible-test itself, on the layout sanity.sh builds from the tarball: if the layout
broke (no collection found, no files) or a test were dropped from the run, these names would go missing.
"""
import os
import subprocess

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The tests that caught real problems in shipped code (module docs, style, the role's script, the
# checkout's own symlink) and the cheap ones every collection should keep.
MUST_RUN = {"validate-modules", "ansible-doc", "pylint", "pep8", "compile", "import", "shebang", "symlinks",
            "yamllint", "shellcheck", "runtime-metadata", "action-plugin-docs", "no-smart-quotes"}


def test_sanity_list_names_the_tests_that_run_and_those_that_cannot():
    result = subprocess.run([os.path.join(REPO_ROOT, "scripts", "sanity.sh"), "--list"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    runs = [line for line in lines if line.startswith("sanity runs ")]
    assert len(runs) == 1, result.stdout
    running = set(runs[0].split(":", 1)[1].split())
    assert MUST_RUN <= running, "not run: %s" % sorted(MUST_RUN - running)
    # each test that is left out says why
    cannot = [line for line in lines if line.startswith("sanity cannot run here: ")]
    assert any(line.startswith("sanity cannot run here: pslint: ") for line in cannot), result.stdout
    assert "pslint" not in running
