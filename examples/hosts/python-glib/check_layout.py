#!/usr/bin/env python3
"""Checks that the ctypes structs of hostloop.py match the C headers, field for field.

Generates a C program printing `sizeof` and every field's `offsetof` for each struct the
binding declares, compiles it against `include/hostloop.h` with the system C compiler (`cc`, or
`$CC`), runs it and compares with ctypes' sizes and offsets. Prints `layout_structs=N` and
`layout=OK`, or every mismatch and exits 1.
"""

import ctypes
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
INCLUDE = os.path.join(HERE, "..", "..", "..", "include")
sys.path.insert(0, HERE)
import hostloop  # noqa: E402

STRUCTS = {
    "hl_runtime_options_t": hostloop.RuntimeOptions,
    "hl_shutdown_report_t": hostloop.ShutdownReport,
    "hl_pump_report_t": hostloop.PumpReport,
    "hl_run_report_t": hostloop.RunReport,
    "hl_stats_t": hostloop.Stats,
    "hl_array_view_t": hostloop.ArrayView,
    "hl_message_t": hostloop.MessageC,
    "hl_event_t": hostloop.Event,
    "hl_unload_report_t": hostloop.UnloadReport,
}


def expected():
    lines = {}
    for cname, cls in STRUCTS.items():
        lines[f"{cname}.sizeof"] = ctypes.sizeof(cls)
        for field, _ in cls._fields_:
            lines[f"{cname}.{field}"] = getattr(cls, field).offset
    return lines


def main():
    exp = expected()
    src = ["#include <hostloop.h>", "#include <stddef.h>", "#include <stdio.h>", "int main(void) {"]
    for key in exp:
        cname, field = key.split(".")
        what = f"sizeof({cname})" if field == "sizeof" else f"offsetof({cname}, {field})"
        src.append(f'    printf("{key}=%zu\\n", (size_t){what});')
    src += ["    return 0;", "}"]
    with tempfile.TemporaryDirectory() as tmp:
        c_file = os.path.join(tmp, "layout.c")
        exe = os.path.join(tmp, "layout")
        with open(c_file, "w") as f:
            f.write("\n".join(src) + "\n")
        cc = os.environ.get("CC", "cc")
        subprocess.run([cc, "-std=c11", "-Wall", "-Werror", "-I", INCLUDE, c_file, "-o", exe],
                       check=True)
        out = subprocess.run([exe], check=True, capture_output=True, text=True).stdout
    got = dict(line.split("=", 1) for line in out.splitlines())
    bad = [f"{k}: C {got.get(k)} ctypes {v}" for k, v in exp.items() if got.get(k) != str(v)]
    for b in bad:
        print(f"layout mismatch {b}", file=sys.stderr)
    print(f"layout_structs={len(STRUCTS)}")
    print(f"layout_fields={len(exp) - len(STRUCTS)}")
    print(f"layout={'OK' if not bad else 'MISMATCH'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
