"""nbgrader configuration of the nas-lab course (used by `make release`, the tests and autograding).

The course root is the folder holding this file, wherever it is copied to, so the same file works in
the repository and in a throw-away grading folder. Layout (one folder per lab, the nbgrader
"assignment" is the folder name):

    <repo>/solutions/<lab>/<lab>.ipynb   instructor version (source), with solutions and hidden tests
    <repo>/labs/<lab>/<lab>.ipynb        student version (release), generated, never edited by hand
    <root>/submitted/<student>/<lab>/    submissions to grade; autograded/ and feedback/ beside it
"""

from pathlib import Path

c = get_config()  # noqa: F821 - injected by traitlets when it loads this file

_here = Path(__file__).resolve().parent
# In the repository the notebooks live one level up (<repo>/autograder/this file); a copy of this file
# in a folder that has its own solutions/ (a temporary grading course) uses that folder instead.
_repo = _here if (_here / "solutions").is_dir() else _here.parent

c.CourseDirectory.root = str(_here)
c.CourseDirectory.source_directory = str(_repo / "solutions")
c.CourseDirectory.release_directory = str(_repo / "labs")
c.CourseDirectory.course_id = "nas-lab"
c.CourseDirectory.db_url = f"sqlite:///{_here / 'gradebook.db'}"

# Generous per-cell limit: the labs run on laptops' CPUs, and some cells train small networks.
c.Execute.timeout = 300
c.Execute.interrupt_on_timeout = True

# A test cell a student deleted is put back before grading (instead of silently scoring nothing).
c.OverwriteCells.add_missing_cells = True

c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
c.ClearSolutions.begin_solution_delimeter = "BEGIN SOLUTION"
c.ClearSolutions.end_solution_delimeter = "END SOLUTION"

# Released notebooks carry no outputs; hidden tests are stripped from the release.
c.ClearOutput.enabled = True
c.ClearHiddenTests.enabled = True
c.ClearHiddenTests.begin_test_delimeter = "BEGIN HIDDEN TESTS"
c.ClearHiddenTests.end_test_delimeter = "END HIDDEN TESTS"
