"""Trimming the harness's own frames from tracebacks, and log tails."""

from __future__ import annotations

from harmonycell.sandbox.outputs import tail, trim_frames

HARNESS = "/inputs/harness/harness.py"
TRACE = f'''[harness] device cpu
Traceback (most recent call last):
  File "{HARNESS}", line 275, in <module>
    sys.exit(main())
             ^^^^^^
  File "{HARNESS}", line 246, in main
    module = load_model_module(args.model)
             ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "<frozen importlib._bootstrap_external>", line 940, in exec_module
  File "<frozen importlib._bootstrap>", line 241, in _call_with_frames_removed
  File "/work/model.py", line 7, in <module>
    helper()
  File "/work/model.py", line 3, in helper
    raise ValueError("broken")
ValueError: broken
'''


def test_harness_and_import_frames_are_hidden_model_frames_kept():
    out = trim_frames(TRACE, [HARNESS])
    assert HARNESS not in out and "frozen importlib" not in out and "sys.exit(main())" not in out
    assert "  (4 sandbox harness frames hidden)\n  File \"/work/model.py\", line 7" in out
    assert out.endswith('    raise ValueError("broken")\nValueError: broken\n')
    assert out.startswith("[harness] device cpu\nTraceback (most recent call last):\n")


def test_error_inside_the_harness_keeps_the_exception_line():
    text = f'Traceback (most recent call last):\n  File "{HARNESS}", line 9, in main\n    x()\nKeyError: 3\n'
    assert trim_frames(text, [HARNESS]) == ("Traceback (most recent call last):\n"
                                            "  (1 sandbox harness frame hidden)\nKeyError: 3\n")


def test_nothing_trimmed_without_own_files():
    assert trim_frames(TRACE, []) == TRACE


def test_tail_reads_only_the_end(tmp_path):
    p = tmp_path / "log"
    p.write_text("a" * 100_000 + "THE END")
    assert tail(p, 50).endswith("THE END") and len(tail(p, 50)) == 50
    assert tail(tmp_path / "missing") == ""
