"""The `vm` gdb commands (tools/gdb/vm.py loads them)."""
