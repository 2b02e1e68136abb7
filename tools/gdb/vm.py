"""gdb commands that show the kernel's VM state, read from a live or halted
kernel through its debug information: `source tools/gdb/vm.py` (the
command `./run-qemu.sh --gdb` prints does), then `help vm`."""

import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import vmgdb.commands  # noqa: E402

# Sourcing again (after editing the commands) takes the new code: modules
# reloaded in the order they import each other.
for name in ("rust", "kernel", "pages", "objects", "maps", "phys", "check", "failpoint", "steps", "commands"):
    importlib.reload(sys.modules[f"vmgdb.{name}"])
vmgdb.commands.register()
