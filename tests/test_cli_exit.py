"""`peftbench` exits without the interpreter's teardown (cli.exit_without_teardown): the exit status, the exit
handlers and the buffered output must be what an ordinary sys.exit gives."""

import subprocess
import sys

import pytest
from waiting import SAFETY_NET_S

PROGRAM = """
import atexit, sys
from peftbench.cli import exit_without_teardown
atexit.register(lambda: print("exit handler ran"))
sys.stdout.write("buffered, not flushed")
exit_without_teardown({code})
"""


@pytest.mark.parametrize("code, status", [("0", 0), ("3", 3), ("None", 0), ("'bad input'", 1)])
def test_exit_status_handlers_and_output_survive(code, status):
    done = subprocess.run([sys.executable, "-c", PROGRAM.format(code=code)], capture_output=True, text=True,
                          timeout=SAFETY_NET_S)
    assert done.returncode == status
    assert done.stdout == "buffered, not flushedexit handler ran\n"
    assert ("bad input" in done.stderr) == (status == 1)


def test_a_running_non_daemon_thread_is_waited_for():
    """os._exit would kill it mid-work: with one still running, the ordinary exit, which waits for it."""
    thread = (  # works until the interpreter's exit has begun (the main thread is then no longer alive)
        "import threading, time\n"
        "def work():\n"
        "    while threading.main_thread().is_alive():\n"
        "        time.sleep(0.01)\n"
        "    print('thread finished', flush=True)\n"
        "threading.Thread(target=work).start()\n"
    )
    done = subprocess.run([sys.executable, "-c", thread + PROGRAM.format(code=5)], capture_output=True, text=True,
                          timeout=SAFETY_NET_S)
    assert done.returncode == 5
    assert "thread finished" in done.stdout
