"""A process that shows another argv and sleeps: `python pose.py ARGV...` makes /proc/<pid>/cmdline
read ARGV (exactly: written over the interpreter's argv memory, as the stand-in shims do), for a
daemon or shim that recover must tell apart by what it works on, not by what it is called.  It
prints "posing" once it shows ARGV and sleeps until killed."""

import os
import sys
import time

import recover  # noqa: E402  (the installed package: its stand-in shims' helpers)

sys.path.insert(0, os.path.join(os.path.dirname(recover.__file__), "shim"))
from standin import set_comm, show_argv  # noqa: E402

show_argv(sys.argv[1:])
set_comm(sys.argv[1])
print("posing", flush=True)
time.sleep(3600)
