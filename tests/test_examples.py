"""Every script in examples/ runs and exits cleanly, and leaves nothing in the
repository (each runs in a folder of its own)."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

import chest

EXAMPLES = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir,
                                        "examples"))
REPO = os.path.dirname(EXAMPLES)
SCRIPTS = sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".py"))
NEEDS = {"dask_local.py": "dask", "dask_distributed.py": "distributed"}
# Scripts whose stderr may hold tracebacks that are not chest's: distributed's
# workers can log "Failed to communicate with scheduler during heartbeat." with
# a traceback from distributed/comm/tcp.py when the cluster shuts down
# (dask/distributed#7105). Their tracebacks count only if a frame is chest's
# or the script's.
FOREIGN_TRACEBACKS = {"dask_distributed.py"}
CHEST_DIR = os.path.realpath(os.path.dirname(chest.__file__))
TRACEBACK = "Traceback (most recent call last):"
FRAME = re.compile(r'^[ |+]*File "([^"]+)", line \d+', re.M)


def run(args, cwd, timeout=300):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def chests_in(folder):
    return {name for name in os.listdir(folder) if name.endswith(".chest")}


def tracebacks(stderr):
    """The tracebacks in ``stderr`` (each part of a chain apart), each as the
    file names of its frames."""
    found = []
    for block in stderr.split(TRACEBACK)[1:]:
        frames = []
        for line in block.splitlines()[1:]:
            if line and not line[0].isspace() and not line.startswith(("|", "+")):
                break  # the exception's own line ends the frames
            frames.append(line)
        found.append(FRAME.findall("\n".join(frames)))
    return found


def chests_tracebacks(stderr, script):
    """The tracebacks in ``stderr`` that go through chest's code or the
    script's, or whose frames cannot be read."""
    script = os.path.realpath(script)

    def ours(filename):
        real = os.path.realpath(filename)
        return real == script or real.startswith(CHEST_DIR + os.sep)

    return [files for files in tracebacks(stderr)
            if not files or any(ours(f) for f in files)]


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs(script, tmp_path):
    if script in NEEDS:
        pytest.importorskip(NEEDS[script])
    before = chests_in(REPO), chests_in(EXAMPLES)
    path = os.path.join(EXAMPLES, script)
    result = run([path], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    if script in FOREIGN_TRACEBACKS:
        assert not chests_tracebacks(result.stderr, path), result.stderr
    else:
        assert TRACEBACK not in result.stderr, result.stderr
    assert (chests_in(REPO), chests_in(EXAMPLES)) == before


HEARTBEAT = """\
2026-08-01 12:00:00,000 - distributed.worker - ERROR - Failed to communicate with scheduler during heartbeat.
Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/distributed/comm/tcp.py", line 226, in read
    frames_nosplit_nbytes_bin = await stream.read_bytes(fmt_size)
                                ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
tornado.iostream.StreamClosedError: Stream is closed

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/distributed/worker.py", line 1164, in heartbeat
    response = await retry_operation(
  File "/venv/lib/python3.11/site-packages/distributed/comm/tcp.py", line 237, in read
    convert_stream_closed_error(self, e)
distributed.comm.core.CommClosedError: in <TCP (closed) ConnectionPool.heartbeat_worker local=tcp://127.0.0.1:1 remote=tcp://127.0.0.1:2>: Stream is closed
"""


def test_only_chests_tracebacks_count():
    """distributed's shutdown noise passes; a traceback through chest's code
    (here a worker's failed spill, chained under distributed's frames) or the
    script's does not."""
    script = os.path.join(EXAMPLES, "dask_distributed.py")
    assert len(tracebacks(HEARTBEAT)) == 2
    assert chests_tracebacks(HEARTBEAT, script) == []
    core = os.path.join(CHEST_DIR, "core.py")
    spill = (f'Traceback (most recent call last):\n  File "{core}", line 10, in '
             f'evict\n    self._write(key)\nOSError: [Errno 28] No space left\n\n'
             "During handling of the above exception, another exception "
             "occurred:\n\n" + HEARTBEAT.split("\n", 1)[1])
    assert chests_tracebacks(HEARTBEAT + spill, script) == [[core]]
    main = (f'Traceback (most recent call last):\n  File "{script}", line 31, in '
            '<module>\n    main()\nRuntimeError: boom\n')
    assert chests_tracebacks(main, script) == [[script]]
    assert chests_tracebacks("Traceback (most recent call last):\nBoom\n",
                             script) == [[]]


def test_spill_arrays_leaves_its_chest_for_the_command_line(tmp_path):
    pytest.importorskip("numpy")
    script = os.path.join(EXAMPLES, "spill_arrays.py")
    for _ in range(2):  # the second run replaces the chest the first one left
        result = run([script], cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    path = tmp_path / "demo.chest"
    assert f"The chest stays in {path}" in result.stdout
    assert "keys:          24" in result.stdout  # the demo's own `chest info`
    for command in (["info"], ["ls", "--long"], ["verify", "--deep"]):
        assert f"python -m chest {command[0]} demo.chest" in result.stdout
        checked = run(["-m", "chest", *command, "demo.chest"], cwd=tmp_path)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith("no problems: 24 keys")


def test_spill_arrays_does_not_replace_a_folder_of_another_kind(tmp_path):
    pytest.importorskip("numpy")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    result = run([os.path.join(EXAMPLES, "spill_arrays.py"), "mine"], cwd=tmp_path)
    assert result.returncode == 1
    assert "not a chest folder" in result.stderr
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
