#!/usr/bin/env python3
"""Every C code block of the given Markdown files compiles as C and as C++
and runs clean under AddressSanitizer + UBSan (leak checking on).

usage: check-snippets.py --cc CMD [--cxx CMD] --include DIR --lib FILE
                         [--harness-dir DIR] FILE.md...

The blocks are taken from the Markdown as they are, so the check cannot
drift from what readers copy. A block (```c ... ```) is one of:

- a complete program (it defines main): compiled, linked and run as it is;
- a fragment, preceded by the line
      <!-- snippet: harness NAME -->
  NAME.c in the harness directory (tests/standing/snippets/) declares what
  the fragment uses and has a line /* @SNIPPET@ */ where the fragment
  goes; the whole is compiled, linked and run (the harness checks the
  results);
- a block that cannot run here, preceded by
      <!-- snippet: compile-only (why) -->
  compiled to an object file only.
A fragment with neither comment fails the check. Compiler messages point
at the Markdown file's own lines (#line). Prints one line per block and
language; exits 1 if any failed.
"""
import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile

FENCE = re.compile(r"^```c\s*$")
MARK = re.compile(r"^<!--\s*snippet:\s*(harness\s+([\w.-]+)|compile-only\b.*?)\s*-->\s*$")


def blocks(path):
    """Yields (first line number of the code, code, marker or None)."""
    lines = open(path, encoding="utf-8").read().split("\n")
    i = 0
    while i < len(lines):
        if FENCE.match(lines[i]):
            j = i - 1
            while j >= 0 and not lines[j].strip():
                j -= 1
            mark = MARK.match(lines[j]) if j >= 0 else None
            k = i + 1
            while k < len(lines) and lines[k].strip() != "```":
                k += 1
            yield i + 2, "\n".join(lines[i + 1:k]), mark
            i = k
        i += 1


def source(md, line, code, mark, harness_dir):
    """The translation unit for a block, and whether it is to be run."""
    text = f'#line {line} "{md}"\n{code}\n'
    if mark and mark.group(2):
        hpath = os.path.join(harness_dir, mark.group(2) + ".c")
        harness = open(hpath, encoding="utf-8").read().split("\n")
        out = []
        for n, h in enumerate(harness, 1):
            if h.strip() == "/* @SNIPPET@ */":
                out.append(text + f'#line {n + 1} "{hpath}"')
            else:
                out.append(h)
        return "\n".join(out) + "\n", True
    if mark:
        return text, False
    if re.search(r"\bint\s+main\s*\(", code):
        return text, True
    return None, False


def run(cmd, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace", **kw)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cc", required=True)
    ap.add_argument("--cxx", default="")
    ap.add_argument("--include", required=True)
    ap.add_argument("--lib", required=True, help="the library to link (.so or .a)")
    ap.add_argument("--harness-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "snippets"))
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()

    san = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g"]
    warn = ["-Wall", "-Wextra", "-Wno-unused-parameter", "-Werror"]
    langs = [("C", shlex.split(a.cc) + ["-std=c11"], "c")]
    if a.cxx:
        # C++20: the README uses designated initializers.
        langs.append(("C++", shlex.split(a.cxx) + ["-std=c++20"], "c++"))
    else:
        print("note: no C++ compiler, the blocks are checked as C only")
    libdir = os.path.dirname(os.path.abspath(a.lib))
    link = [os.path.abspath(a.lib), "-pthread", "-Wl,-rpath," + libdir]
    env = dict(os.environ,
               ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=23",
               UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1")
    failed = total = 0
    with tempfile.TemporaryDirectory() as tmp:
        for md in a.files:
            mdname = os.path.relpath(md)
            for line, code, mark in blocks(md):
                where = f"{mdname}:{line}"
                src, runnable = source(md, line, code, mark, a.harness_dir)
                if src is None:
                    print(f"FAIL {where}: a fragment with no '<!-- snippet: harness NAME -->' "
                          f"or '<!-- snippet: compile-only (why) -->' line before it")
                    failed += 1
                    total += 1
                    continue
                cfile = os.path.join(tmp, "snippet.src")
                with open(cfile, "w", encoding="utf-8") as f:
                    f.write(src)
                for lang, cmd, x in langs:
                    total += 1
                    exe = os.path.join(tmp, "snippet")
                    full = cmd + warn + san + ["-I", a.include, "-x", x, cfile, "-x", "none"]
                    full += ["-c", "-o", exe + ".o"] if not runnable else ["-o", exe] + link
                    r = run(full)
                    if r.returncode != 0:
                        print(f"FAIL {where} ({lang}): does not compile\n{r.stdout}")
                        failed += 1
                        continue
                    if not runnable:
                        print(f"ok {where} ({lang}): compiles (compile-only)")
                        continue
                    try:
                        r = run([exe], env=env, timeout=60)
                    except subprocess.TimeoutExpired:
                        print(f"FAIL {where} ({lang}): still running after 60 s")
                        failed += 1
                        continue
                    if r.returncode != 0:
                        print(f"FAIL {where} ({lang}): exit status {r.returncode} under ASan+UBSan\n{r.stdout}")
                        failed += 1
                        continue
                    print(f"ok {where} ({lang}): compiles, runs clean under ASan+UBSan")
    print(f"{total - failed} of {total} snippet checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
