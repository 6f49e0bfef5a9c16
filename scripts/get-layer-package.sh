#!/usr/bin/env bash
# Build a Lambda dependency layer's python/ directory: the steps that need the target's pip,
# interpreter or platform.
#
# `mlayer build-deps` runs this very script: on the host for --method pip, inside the Lambda
# build image for --method docker, and does the safe slimming (with a per-rule report) and the
# deterministic zip itself. On its own, inside a build image, it gives a usable, unslimmed layer:
#
#   docker run --rm -v "$PWD":/var/task public.ecr.aws/sam/build-python3.13:latest-x86_64 \
#     bash /var/task/scripts/get-layer-package.sh -r /var/task/requirements.txt -o /var/task/out
#   -> out/python/ (wheels as sourceless bytecode, imports verified) and out/layer.zip
#
# Usage: get-layer-package.sh [options] [STEP...]
#   STEP: install | verify | compile | zip | platforms   (default: install compile verify zip)
#   -r, --requirements FILE   pins to install (default: requirements.txt)
#   -o, --out DIR             output folder; the layer goes to DIR/python (default: layer)
#   --runtime python3.X       Lambda runtime (default: the interpreter's version)
#   --arch x86_64|arm64       architecture (default: this machine's)
#   --glibc 2.NN              newest glibc of the runtime's OS (default: 2.26 for python3.10 and
#                             python3.11 on Amazon Linux 2, 2.34 for Amazon Linux 2023)
#   --python PATH             the interpreter that runs pip (install) and, of the target
#                             version, compiles and imports (compile, verify) (default:
#                             python3, else python)
#   --pip DIR                 install: run the pip unpacked in DIR (DIR/pip/, as mlayer
#                             provisions it in ~/.cache/mlayer/pip-<version>) with --python,
#                             instead of that interpreter's own pip (python -m pip)
#   --bytecode sourceless|all sourceless (default): each module's .pyc replaces its .py
#                             (pkg/mod.pyc, loaded without source); all: .pyc in __pycache__
#                             beside the kept sources
#   --keep-source GLOB        sourceless: keep the .py (and a __pycache__ .pyc) of paths
#                             matching GLOB (relative to python/; a folder covers its files);
#                             repeatable
#   --compile-list FILE       compile only these .py files (paths relative to python/), into
#                             __pycache__ (--bytecode all)
#   --trace FILE              verify: write the layer files the imports loaded (JSON) to FILE
#
# install: pip install --target with --only-binary=:all: and the manylinux tags the runtime
#   accepts (manylinux2014 / manylinux_2_17 up to the runtime's glibc), so a wheel built for a
#   newer glibc, another CPU or another Python is never picked. It prints the pip it runs
#   (`pip X from ...`). For a Python other than the interpreter's, pip must be 24.2 or newer:
#   older pips check Requires-Python against their own interpreter, not --python-version, and
#   refuse e.g. numpy 2.3+ for python3.12+ from a Python 3.11 (the script says so and stops).
# verify:  imports every top-level package of python/ in a fresh `python -I -S -B` whose
#   sys.path is only the layer and the standard library (as Lambda's /opt/python is).
# compile: unchecked-hash .pyc for the interpreter's version (Lambda's /opt is read-only, and
#   unchecked-hash pycs stay valid whatever timestamps extraction gives). sourceless: written
#   as pkg/mod.pyc and the .py removed, so imports skip the source and __pycache__ lookups and
#   the layer is ~24 MB smaller; tracebacks then show file and line but no source text, and
#   inspect.getsource fails for those modules. The dist-info RECORDs are updated to match.
set -euo pipefail

REQUIREMENTS=requirements.txt
OUT=layer
RUNTIME=""
ARCH=""
GLIBC=""
PYTHON_BIN=""
PIP_DIR=""
COMPILE_LIST=""
TRACE=""
BYTECODE=sourceless
KEEP_SOURCE=()
STEPS=()

die() { echo "get-layer-package.sh: $*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    -r|--requirements) REQUIREMENTS="$2"; shift 2 ;;
    -o|--out) OUT="$2"; shift 2 ;;
    --runtime) RUNTIME="$2"; shift 2 ;;
    --arch) ARCH="$2"; shift 2 ;;
    --glibc) GLIBC="$2"; shift 2 ;;
    --python) PYTHON_BIN="$2"; shift 2 ;;
    --pip) PIP_DIR="$2"; shift 2 ;;
    --compile-list) COMPILE_LIST="$2"; shift 2 ;;
    --bytecode) BYTECODE="$2"; shift 2 ;;
    --keep-source) KEEP_SOURCE+=("$2"); shift 2 ;;
    --trace) TRACE="$2"; shift 2 ;;
    -h|--help) sed -n '2,49p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    install|verify|compile|zip|platforms) STEPS+=("$1"); shift ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[[ ${#STEPS[@]} -gt 0 ]] || STEPS=(install compile verify zip)
case "$BYTECODE" in
  sourceless|all) ;;
  *) die "--bytecode must be sourceless or all, got $BYTECODE" ;;
esac
[[ -z "$COMPILE_LIST" || "$BYTECODE" == all ]] || die "--compile-list needs --bytecode all"
[[ ${#KEEP_SOURCE[@]} -eq 0 || "$BYTECODE" == sourceless ]] \
  || die "--keep-source only applies to --bytecode sourceless"

if [[ -z "$PYTHON_BIN" ]]; then
  PYTHON_BIN=$(command -v python3 || command -v python || true)
  [[ -n "$PYTHON_BIN" ]] || die "no python3 on PATH; pass --python"
fi
if [[ -z "$RUNTIME" ]]; then
  RUNTIME=$("$PYTHON_BIN" -c 'import sys; print("python%d.%d" % sys.version_info[:2])')
fi
[[ "$RUNTIME" =~ ^python3\.([0-9]+)$ ]] || die "runtime must look like python3.13, got $RUNTIME"
MINOR="${BASH_REMATCH[1]}"
if [[ -z "$ARCH" ]]; then
  case "$(uname -m)" in aarch64|arm64) ARCH=arm64 ;; *) ARCH=x86_64 ;; esac
fi
case "$ARCH" in
  x86_64) MACHINE=x86_64 ;;
  arm64|aarch64) MACHINE=aarch64 ;;
  *) die "arch must be x86_64 or arm64, got $ARCH" ;;
esac
if [[ -z "$GLIBC" ]]; then
  # Amazon Linux 2 (glibc 2.26) serves python3.10 and older; Amazon Linux 2023 (2.34) the rest.
  if (( MINOR <= 11 )); then GLIBC=2.26; else GLIBC=2.34; fi
fi
GLIBC_MINOR="${GLIBC#2.}"

platforms() {
  # Oldest first, as pip's own tag order; the legacy aliases name the same glibc levels.
  local first=17 i
  if [[ "$MACHINE" == x86_64 ]]; then
    echo "manylinux1_x86_64"; echo "manylinux2010_x86_64"; first=5
  fi
  echo "manylinux2014_${MACHINE}"
  for (( i = first; i <= GLIBC_MINOR; i++ )); do echo "manylinux_2_${i}_${MACHINE}"; done
}

step_install() {
  [[ -f "$REQUIREMENTS" ]] || die "no requirements file at $REQUIREMENTS"
  local args=() tag
  while read -r tag; do args+=(--platform "$tag"); done < <(platforms)
  local pip=("$PYTHON_BIN" -m pip) version have
  if [[ -n "$PIP_DIR" ]]; then
    [[ -f "$PIP_DIR/pip/__main__.py" ]] || die "--pip $PIP_DIR holds no pip/ package"
    # pip's __main__ puts its parent folder first on sys.path: the interpreter's pip is unused.
    pip=("$PYTHON_BIN" "$PIP_DIR/pip")
  fi
  version=$("${pip[@]}" --version) || die "no pip runs with $PYTHON_BIN (pass --pip DIR)"
  echo "$version"
  have=$("$PYTHON_BIN" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  if [[ "$have" != "3.$MINOR" && "$version" =~ ^pip\ ([0-9]+)\.([0-9]+) ]] \
      && (( BASH_REMATCH[1] < 24 || (BASH_REMATCH[1] == 24 && BASH_REMATCH[2] < 2) )); then
    die "${version%% from*} checks Requires-Python against Python $have, not the target 3.$MINOR;" \
      "use pip 24.2 or newer (--pip DIR, or $PYTHON_BIN -m pip install 'pip>=24.2')," \
      "or a Python 3.$MINOR (--python)"
  fi
  mkdir -p "$OUT"
  rm -rf "$OUT/python"
  # --no-compile: pip would write bytecode for *its own* interpreter; `compile` writes the
  # target's. --only-binary=:all: never builds an sdist for the wrong platform.
  "${pip[@]}" install --disable-pip-version-check --no-input --no-compile \
    --target "$OUT/python" --only-binary=:all: --implementation cp \
    --python-version "3.$MINOR" --abi "cp3$MINOR" "${args[@]}" -r "$REQUIREMENTS"
}

check_interpreter() {
  local have
  have=$("$PYTHON_BIN" -c 'import sys; print("python%d.%d" % sys.version_info[:2])')
  [[ "$have" == "$RUNTIME" ]] || die "$1 needs a $RUNTIME interpreter, $PYTHON_BIN is $have"
}

step_verify() {
  check_interpreter verify
  local layer
  layer=$(cd "$OUT/python" && pwd)
  # -I -S: no user site, no site-packages, no PYTHON* variables; the layer goes first on
  # sys.path, as /opt/python does on Lambda. -B: never write bytecode into the layer.
  (cd / && "$PYTHON_BIN" -I -S -B - "$layer" "$TRACE" <<'PY'
import importlib, json, os, re, sys, traceback, warnings
layer, trace = sys.argv[1], sys.argv[2]
sys.path.insert(0, layer)
ident = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
names = set()
for entry in sorted(os.listdir(layer)):
    path = os.path.join(layer, entry)
    if os.path.isdir(path):
        if ident.match(entry) and entry not in ("bin", "__pycache__"):
            names.add(entry)
    elif entry.endswith((".py", ".pyc")) and ident.match(entry.rsplit(".", 1)[0]):
        names.add(entry.rsplit(".", 1)[0])  # a one-module distribution, source or sourceless
    elif entry.endswith(".so") and ident.match(entry.split(".")[0]):
        names.add(entry.split(".")[0])
failed, caught = {}, []
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    for name in sorted(names):
        try:
            importlib.import_module(name)
        except BaseException as exc:  # a broken layer may raise anything, SystemExit included
            failed[name] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    caught = sorted({f"{w.category.__name__}: {w.message}" for w in seen
                     if os.path.realpath(w.filename).startswith(os.path.realpath(layer))})
loaded = sorted(
    os.path.relpath(os.path.realpath(m.__file__), os.path.realpath(layer))
    for m in list(sys.modules.values())
    if getattr(m, "__file__", None)
    and os.path.realpath(m.__file__).startswith(os.path.realpath(layer) + os.sep)
)
report = {"imported": sorted(names - set(failed)), "failed": failed, "warnings": caught,
          "loaded": loaded, "python": sys.version.split()[0]}
if trace:
    with open(trace, "w") as handle:
        json.dump(report, handle, indent=1)
for name, error in failed.items():
    print(f"import {name} failed: {error}", file=sys.stderr)
print(f"verify: imported {len(names) - len(failed)} of {len(names)} top-level packages")
sys.exit(1 if failed else 0)
PY
  )
}

step_compile() {
  check_interpreter compile
  local layer
  layer=$(cd "$OUT/python" && pwd)
  # One process, sorted order, fixed hash seed, fixed recorded path: marshal output then
  # depends on nothing of the build, so two builds give identical pycs.
  (cd / && PYTHONHASHSEED=0 "$PYTHON_BIN" -I -S - "$layer" "$BYTECODE" "$COMPILE_LIST" \
      ${KEEP_SOURCE[@]+"${KEEP_SOURCE[@]}"} <<'PY'
import csv, fnmatch, io, os, py_compile, sys
layer, mode, listing, keep = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]

def kept(rel):
    # As mlayer's --keep: a glob matches the path or one of the folders it is in.
    parts = rel.split("/")
    return any(fnmatch.fnmatchcase("/".join(parts[: i + 1]), glob)
               for glob in keep for i in range(len(parts)))

if listing:
    with open(listing) as handle:
        files = sorted({line.strip() for line in handle if line.strip().endswith(".py")})
else:
    files = sorted(
        os.path.relpath(os.path.join(d, f), layer).replace(os.sep, "/")
        for d, _, fs in os.walk(layer) for f in fs if f.endswith(".py")
    )
compiled = failed = 0
replaced, sources_kept = set(), 0
for rel in files:
    top = rel.split("/")[0]
    if top.endswith((".dist-info", ".libs")) or top == "bin":
        continue  # not importable modules
    source = os.path.join(layer, rel)
    legacy = mode == "sourceless" and not kept(rel)
    sources_kept += mode == "sourceless" and not legacy
    try:
        # dfile: the path recorded in the pyc is where Lambda puts the file, not this
        # build's temporary folder, so builds are identical; a sourceless module's
        # tracebacks name it (import only fixes the path up for modules with a source).
        py_compile.compile(source, cfile=source + "c" if legacy else None,
                           dfile="/opt/python/" + rel, doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        compiled += 1
    except py_compile.PyCompileError:
        failed += 1  # sources that do not compile for this version (e.g. py2 leftovers) stay
        continue
    if legacy:
        os.remove(source)
        replaced.add(rel)
# Keep each RECORD true to the layer: a replaced source's row names its .pyc (no hash, as
# RECORD rows of generated bytecode have).
for info in sorted(os.listdir(layer)):
    record = os.path.join(layer, info, "RECORD")
    if not (info.endswith(".dist-info") and os.path.isfile(record) and replaced):
        continue
    with open(record, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for row in rows:
        if row and os.path.normpath(row[0]).replace(os.sep, "/") in replaced:
            row = [row[0] + "c", "", ""]
        writer.writerow(row)
    with open(record, "w", newline="", encoding="utf-8") as handle:
        handle.write(out.getvalue())
where = "as sourceless pkg/mod.pyc" if mode == "sourceless" else "in __pycache__"
print(f"compile: {compiled} modules for {sys.implementation.cache_tag} {where}, "
      f"{len(replaced)} sources removed, {sources_kept} kept (--keep-source), "
      f"{failed} not compilable (left as source)")
PY
  )
}

step_zip() {
  # Same rules as mlayer's archive.py: sorted entries, 1980-01-01 times, modes 0644 / 0755.
  (cd "$OUT" && "$PYTHON_BIN" -I -S - <<'PY'
import os, stat, zipfile
paths = sorted(os.path.join(d, f) for d, _, fs in os.walk("python") for f in fs)
with zipfile.ZipFile("layer.zip", "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
    for path in paths:
        info = zipfile.ZipInfo(path.replace(os.sep, "/"), date_time=(1980, 1, 1, 0, 0, 0))
        info.create_system = 3
        mode = 0o755 if os.stat(path).st_mode & stat.S_IXUSR else 0o644
        info.external_attr = (stat.S_IFREG | mode) << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        with open(path, "rb") as src:
            zf.writestr(info, src.read())
print(f"zip: {len(paths)} files -> layer.zip")
PY
  )
}

for step in "${STEPS[@]}"; do
  case "$step" in
    platforms) platforms ;;
    install) step_install ;;
    verify) step_verify ;;
    compile) step_compile ;;
    zip) step_zip ;;
  esac
done
