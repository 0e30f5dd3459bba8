#!/usr/bin/env bash
# Install (or upgrade, or remove) face-agent as a systemd service on a Debian/Ubuntu/JetPack machine.
# GPU (TensorRT) support: JetPack 6 only (Python 3.10, TensorRT 8.6 or 10.x); JetPack 5 (Python 3.8) cannot
# run face-agent (Python >= 3.10). On aarch64 the script builds dlib from source and, on a Jetson, makes
# the venv use JetPack's OpenCV (with GStreamer, for csi:// cameras) instead of pip's.
#
#   sudo deploy/install.sh                       install or upgrade from this checkout, enable and start
#   sudo deploy/install.sh --build-engines       ... and build the TensorRT engines now (Jetson)
#   sudo deploy/install.sh --uninstall           remove code and unit, keep config, data and user
#   sudo deploy/install.sh --uninstall --purge   ... and delete config, data and the user too
#   deploy/install.sh --root /tmp/img --no-venv  install into a folder (image building, tests)
#
# Idempotent: running it again with the same source changes nothing. The config
# /etc/face-agent/agent.toml is never overwritten: when the shipped default changed, the new default is
# written beside it as agent.toml.new. Run with --help for all options.
set -euo pipefail

ROOT=/
PREFIX=/opt/face-agent
SOURCE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON=python3
VENV=yes
WHEEL_DIR=
SYSTEM_SITE=auto
BUILD_ENGINES=no
CUDA_ROOT="${CUDA_ROOT:-/usr/local/cuda}"  # JetPack's CUDA toolkit (nvcc): pycuda is built against it
PYCUDA_SPEC="pycuda>=2022.1"
DLIB_SPEC="dlib>=19.24"
START=yes
UNINSTALL=no
PURGE=no

NAME=face-agent
CONF_DIR=/etc/face-agent
DATA_DIR=/var/lib/face-agent
UNIT_DIR=/etc/systemd/system
SYSUSERS_DIR=/usr/lib/sysusers.d
TMPFILES_DIR=/usr/lib/tmpfiles.d
DATA_SUBDIRS="storage engines svm faces"

usage() {
  cat <<EOF
usage: $0 [options]
  --root DIR             install into DIR instead of / (no user creation, no systemctl; for images/tests)
  --prefix DIR           code and virtual environment (default $PREFIX)
  --source DIR           checkout to install from (default: the one holding this script, $SOURCE)
  --python PATH          interpreter for the virtual environment (default $PYTHON)
  --no-venv              do not create/update the virtual environment (it is managed elsewhere)
  --wheel-dir DIR        pip install from the wheels in DIR only (offline; must hold face-agent's wheel)
  --system-site-packages let the venv see apt-installed packages (default: yes on Jetson, for TensorRT)
  --build-engines        build the TensorRT engines now (face-agent engines build), as the service user
  --no-start             enable the service but do not start or restart it
  --uninstall            remove code, unit and sysusers entry; keep $CONF_DIR, $DATA_DIR and the user
  --purge                with --uninstall: also delete $CONF_DIR, $DATA_DIR and the user
EOF
}

die() { echo "install.sh: error: $*" >&2; exit 2; }
say() { echo "install.sh: $*"; }
warn() { echo "install.sh: warning: $*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT="${2:?--root needs a folder}"; shift 2 ;;
    --root=*) ROOT="${1#*=}"; shift ;;
    --prefix) PREFIX="${2:?--prefix needs a folder}"; shift 2 ;;
    --prefix=*) PREFIX="${1#*=}"; shift ;;
    --source) SOURCE="${2:?--source needs a folder}"; shift 2 ;;
    --source=*) SOURCE="${1#*=}"; shift ;;
    --python) PYTHON="${2:?--python needs a path}"; shift 2 ;;
    --python=*) PYTHON="${1#*=}"; shift ;;
    --no-venv) VENV=no; shift ;;
    --wheel-dir) WHEEL_DIR="${2:?--wheel-dir needs a folder}"; shift 2 ;;
    --wheel-dir=*) WHEEL_DIR="${1#*=}"; shift ;;
    --system-site-packages) SYSTEM_SITE=yes; shift ;;
    --build-engines) BUILD_ENGINES=yes; shift ;;
    --no-start) START=no; shift ;;
    --uninstall) UNINSTALL=yes; shift ;;
    --purge) PURGE=yes; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option $1" ;;
  esac
done

[ "$PURGE" = yes ] && [ "$UNINSTALL" = no ] && die "--purge only goes with --uninstall"
case "$PREFIX" in /?*) ;; *) die "--prefix must be an absolute path other than /" ;; esac
PREFIX="${PREFIX%/}"
# the prefix goes into the unit's ExecStart= (split at spaces, % starts a specifier) and a sed expression
[[ "$PREFIX" =~ ^/[A-Za-z0-9._+/-]+$ ]] \
  || die "--prefix '$PREFIX': use only letters, digits and . _ + - / (no spaces or other characters)"
mkdir -p "$ROOT" 2>/dev/null || die "cannot create root folder $ROOT"
ROOT="$(cd "$ROOT" && pwd -P)"
LIVE=no  # installing into the running system (not an image folder)
[ "$ROOT" = / ] && LIVE=yes
SYSTEMD=no
[ "$LIVE" = yes ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1 && SYSTEMD=yes
if [ "$LIVE" = yes ] && [ "$(id -u)" != 0 ]; then
  die "installing into / needs root: sudo $0 $*"
fi

# r PATH: PATH inside the target root
r() { if [ "$ROOT" = / ]; then printf '%s' "$1"; else printf '%s%s' "$ROOT" "$1"; fi; }

CHANGED=no  # anything installed or updated in this run (decides about a restart)
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# put_file SRC DEST MODE: copy when the content differs; fix the mode when it differs
put_file() {
  local src="$1" dest="$2" mode="$3"
  if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
    [ "$(stat -c %a "$dest")" = "$mode" ] || chmod "$mode" "$dest"
    return 1
  fi
  mkdir -p "$(dirname "$dest")"
  install -m "$mode" "$src" "$dest"
  say "wrote ${dest#"${ROOT%/}"}"
  CHANGED=yes
  return 0
}

# put_dir DIR MODE [OWNER:GROUP]
put_dir() {
  local dir="$1" mode="$2" owner="${3:-}"
  if [ ! -d "$dir" ]; then
    mkdir -p "$dir"
    say "created ${dir#"${ROOT%/}"}"
  fi
  [ "$(stat -c %a "$dir")" = "$mode" ] || chmod "$mode" "$dir"
  if [ -n "$owner" ] && [ "$LIVE" = yes ] && [ "$(stat -c %U:%G "$dir")" != "$owner" ]; then
    chown "$owner" "$dir"
  fi
}

# safe_rm PATH: rm -rf, refusing anything that is not a specific folder inside the root
safe_rm() {
  local p="$1" inner="${1#"${ROOT%/}"}"
  case "$inner" in /|/etc|/usr|/var|/var/lib|/opt|/usr/lib|"") die "refusing to delete $p" ;; esac
  if [ -e "$p" ] || [ -L "$p" ]; then
    rm -rf -- "$p"
    say "removed $inner"
  fi
}

# render_config: the repo's agent.toml with [paths] pointing into $DATA_DIR
render_config() {
  awk -v data="$DATA_DIR" '
    /^[[:space:]]*\[/ { in_paths = ($0 ~ /^[[:space:]]*\[paths\]/) }
    in_paths && match($0, /^(storage|engines|svm|faces)[[:space:]]*=[[:space:]]*"[^"]*"/) {
      head = substr($0, 1, RLENGTH); rest = substr($0, RLENGTH + 1)
      val = head; sub(/^[^"]*"/, "", val); sub(/"$/, "", val)
      eq = head; sub(/"[^"]*"$/, "", eq)
      if (val !~ /^\//) val = data "/" val
      $0 = eq "\"" val "\"" rest
    }
    { print }' "$SOURCE/agent.toml"
}

render_unit() {
  sed -e "s#/opt/face-agent#$PREFIX#g" "$SOURCE/deploy/face-agent.service"
}

# package_files: what pip needs from the checkout
package_files() {
  local f
  for f in pyproject.toml README.md LICENSE agent; do
    [ -e "$SOURCE/$f" ] && printf '%s\n' "$f"
  done
  return 0
}

# source_digest: changes whenever the code to install changes (decides about pip install)
source_digest() {
  {
    # shellcheck disable=SC2046
    (cd "$SOURCE" && find $(package_files) -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 \
       | LC_ALL=C sort -z | xargs -0 sha256sum)
    if [ -n "$WHEEL_DIR" ]; then (cd "$WHEEL_DIR" && sha256sum ./*.whl 2>/dev/null || true); fi
  } | sha256sum | cut -d' ' -f1
}

unit_path="$(r "$UNIT_DIR/$NAME.service")"
wants_link="$(r "$UNIT_DIR/multi-user.target.wants/$NAME.service")"

# ---------------------------------------------------------------------------------------------- uninstall
if [ "$UNINSTALL" = yes ]; then
  if [ "$SYSTEMD" = yes ]; then
    systemctl disable --now "$NAME.service" 2>/dev/null || true
  fi
  safe_rm "$wants_link"
  safe_rm "$unit_path"
  [ "$SYSTEMD" = yes ] && systemctl daemon-reload
  safe_rm "$(r "$PREFIX")"
  safe_rm "$(r "$SYSUSERS_DIR/$NAME.conf")"
  safe_rm "$(r "$TMPFILES_DIR/$NAME.conf")"
  if [ "$PURGE" = yes ]; then
    safe_rm "$(r "$DATA_DIR")"
    safe_rm "$(r "$CONF_DIR")"
    if [ "$LIVE" = yes ] && getent passwd "$NAME" >/dev/null; then
      userdel "$NAME" && say "removed user $NAME"
    fi
    say "purged: code, config, data and user are gone"
  else
    say "uninstalled; kept $CONF_DIR (config), $DATA_DIR (data) and the $NAME user (--purge removes them)"
  fi
  exit 0
fi

# ------------------------------------------------------------------------------------------------ install
for f in pyproject.toml agent.toml deploy/face-agent.service deploy/sysusers.d/face-agent.conf \
         deploy/tmpfiles.d/face-agent.conf; do
  [ -f "$SOURCE/$f" ] || die "$SOURCE does not look like a face-agent checkout (no $f)"
done
if [ "$SYSTEM_SITE" = auto ]; then
  SYSTEM_SITE=no
  [ -e "$(r /etc/nv_tegra_release)" ] && SYSTEM_SITE=yes  # JetPack: TensorRT's Python bindings come from apt
fi

# 1. the service user
cp "$SOURCE/deploy/sysusers.d/face-agent.conf" "$TMP/sysusers.conf"
put_file "$TMP/sysusers.conf" "$(r "$SYSUSERS_DIR/$NAME.conf")" 644 || true
cp "$SOURCE/deploy/tmpfiles.d/face-agent.conf" "$TMP/tmpfiles.conf"
put_file "$TMP/tmpfiles.conf" "$(r "$TMPFILES_DIR/$NAME.conf")" 644 || true
if [ "$LIVE" = yes ]; then
  if ! getent passwd "$NAME" >/dev/null; then
    useradd --system --user-group --home-dir "$DATA_DIR" --no-create-home --shell /usr/sbin/nologin \
      --comment "face-agent service" "$NAME"
    say "created system user $NAME"
  fi
  if getent group video >/dev/null && ! id -nG "$NAME" | tr ' ' '\n' | grep -qx video; then
    usermod -a -G video "$NAME"  # cameras and Jetson GPU nodes belong to group video
  fi
  OWNER="$NAME:$NAME"
else
  warn "not creating user $NAME under --root $ROOT: systemd-sysusers creates it from $SYSUSERS_DIR/$NAME.conf" \
       "on the target's next boot; systemd-tmpfiles then gives $CONF_DIR to group $NAME ($TMPFILES_DIR/$NAME.conf)" \
       "and StateDirectory= fixes ownership of $DATA_DIR"
  OWNER=
fi

# 2. data folders (kept across upgrades and --uninstall)
put_dir "$(r "$DATA_DIR")" 750 "$OWNER"
for d in $DATA_SUBDIRS; do
  put_dir "$(r "$DATA_DIR/$d")" 750 "$OWNER"
done

# 3. code: a virtual environment under the prefix
put_dir "$(r "$PREFIX")" 755
mkdir -p "$TMP/share"
cp "$SOURCE/deploy/README.md" "$TMP/share/README.md"
put_file "$TMP/share/README.md" "$(r "$PREFIX/share/README.md")" 644 || true
if [ "$VENV" = yes ]; then
  venv="$(r "$PREFIX/venv")"
  [ "$LIVE" = yes ] || warn "the venv under --root refers to $venv; use it for tests, or build it on the target"
  if [ ! -x "$venv/bin/python" ]; then
    opts=()
    [ "$SYSTEM_SITE" = yes ] && opts+=(--system-site-packages)
    "$PYTHON" -m venv "${opts[@]}" "$venv" || die "cannot create a venv with $PYTHON (apt-get install python3-venv)"
    say "created virtual environment $PREFIX/venv"
  fi
  digest="$(source_digest)"
  stamp="$venv/.face-agent-source"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
    if [ -n "$WHEEL_DIR" ]; then
      "$venv/bin/python" -m pip install -q --no-index --find-links "$WHEEL_DIR" --upgrade face-agent
    else
      # build from a clean copy so the checkout gets no build/ or *.egg-info folders
      mkdir -p "$TMP/src"
      # shellcheck disable=SC2046
      (cd "$SOURCE" && tar --exclude='__pycache__' --exclude='*.pyc' -cf - $(package_files)) \
        | tar -C "$TMP/src" -xf -
      "$venv/bin/python" -m pip install -q "$TMP/src"  # a local folder is always (re)installed
    fi
    echo "$digest" > "$stamp"
    say "installed face-agent into $PREFIX/venv"
    CHANGED=yes
  fi
else
  say "--no-venv: expecting $PREFIX/venv/bin/face-agent to be provided separately"
fi

# 3b. aarch64 (Jetson, JetPack 6): dlib-bin has x86-64 wheels only, and pip's OpenCV has no GStreamer
#     (csi:// and gst: sources need it). Idempotent: does nothing when the venv already has both.
# has_gstreamer PY: the cv2 that PY imports was built with GStreamer
has_gstreamer() {
  "$1" - <<'PYEOF' 2>/dev/null
import re, sys
import cv2
m = re.search(r"GStreamer:\s*(\w+)", cv2.getBuildInformation())
sys.exit(0 if m and m.group(1).upper() == "YES" else 1)
PYEOF
}
# system_cv2_in_venv PY: the system's cv2 (JetPack's, as $PYTHON imports it), imported by PY with PY's own
# numpy and everything else, works and has GStreamer. Nothing is changed: the cv2 alone is put first on
# PYTHONPATH through a symlink in a temporary folder.
system_cv2_in_venv() {
  local cv2_path only="$TMP/system-cv2"
  cv2_path="$("$PYTHON" -c 'import cv2, os
f = cv2.__file__
print(os.path.dirname(f) if os.path.basename(f) == "__init__.py" else f)' 2>/dev/null)" || return 1
  rm -rf "$only" && mkdir -p "$only" && ln -s "$cv2_path" "$only/$(basename "$cv2_path")"
  PYTHONPATH="$only" has_gstreamer "$1"
}
if [ "$VENV" = yes ] && [ "$(uname -m)" = aarch64 ]; then
  py="$venv/bin/python"
  if ! "$py" -c 'import dlib' 2>/dev/null; then
    if [ -n "$WHEEL_DIR" ]; then
      # a dlib wheel built once on a Jetson (pip wheel dlib -w DIR) serves every other one
      "$py" -m pip install -q --no-index --find-links "$WHEEL_DIR" dlib \
        || die "no dlib wheel for aarch64 in $WHEEL_DIR (make one on a Jetson: pip wheel dlib -w $WHEEL_DIR)"
    else
      if [ "$LIVE" = yes ] && command -v apt-get >/dev/null 2>&1; then
        say "installing dlib's build dependencies (build-essential cmake python3-dev libopenblas-dev liblapack-dev)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q build-essential cmake python3-dev libopenblas-dev \
          liblapack-dev >/dev/null || die "apt-get could not install dlib's build dependencies"
      fi
      # CPU-only, decided here rather than by whether CMake happens to find CUDA and cuDNN (it does on a
      # JetPack image): dlib only runs the 5-point shape predictor here (CPU code either way), and a CUDA
      # dlib with [embedding] backend = "dlib" would run the ResNet on the GPU outside the watchdog. The GPU
      # path for the ResNet is backend = "tensorrt". dlib's setup.py takes `--no DLIB_USE_CUDA` only on its
      # own command line, so the wheel is built from the source distribution here.
      say "building dlib (CPU only) from source for aarch64 (dlib-bin has x86-64 wheels only): an estimated" \
          "10-30 minutes on an Orin Nano; a 4 GB module may need swap"
      mkdir -p "$TMP/dlib" "$TMP/dlib-wheel"
      "$py" -m pip download -q --no-deps --no-binary :all: -d "$TMP/dlib" "$DLIB_SPEC" \
        || die "cannot download dlib's source distribution"
      tar -C "$TMP/dlib" -xf "$TMP/dlib"/dlib-*.tar.gz
      "$py" -m pip install -q cmake wheel setuptools >/dev/null 2>&1 || true
      (cd "$TMP"/dlib/dlib-*/ && "$py" setup.py -q bdist_wheel -d "$TMP/dlib-wheel" --no DLIB_USE_CUDA >/dev/null) \
        || die "building dlib failed (needs cmake, a C++ compiler, python3-dev, libopenblas-dev)"
      "$py" -m pip install -q "$TMP"/dlib-wheel/dlib-*.whl || die "installing the dlib wheel failed"
    fi
    if [ "$("$py" -c 'import dlib; print(bool(dlib.DLIB_USE_CUDA))')" = True ]; then
      warn "this dlib was built with CUDA: [embedding] backend = \"dlib\" would run on the GPU without the" \
           "watchdog; use backend = \"tensorrt\" for the GPU (face-agent warns at start)"
    fi
    say "installed dlib $("$py" -c 'import dlib; print(dlib.__version__)') into $PREFIX/venv"
    CHANGED=yes
  fi
  # pycuda: TensorRT's device buffers and streams. Without it `auto` stays on the CPU. It is built from
  # source against the CUDA toolkit: CUDA_ROOT and PATH name JetPack's /usr/local/cuda explicitly (sudo
  # resets PATH, so a plain `sudo pip install pycuda` finds no nvcc and fails)
  if ! "$py" -c 'import pycuda.driver' 2>/dev/null; then
    if [ -n "$WHEEL_DIR" ] && "$py" -m pip install -q --no-index --find-links "$WHEEL_DIR" "$PYCUDA_SPEC" 2>/dev/null; then
      say "installed pycuda from $WHEEL_DIR"
      CHANGED=yes
    elif [ -z "$WHEEL_DIR" ] && [ -x "$CUDA_ROOT/bin/nvcc" ]; then
      say "building pycuda against $CUDA_ROOT (a few minutes)"
      if CUDA_ROOT="$CUDA_ROOT" CUDA_HOME="$CUDA_ROOT" PATH="$CUDA_ROOT/bin:$PATH" \
          "$py" -m pip install -q "$PYCUDA_SPEC"; then
        say "installed pycuda $("$py" -c 'import pycuda; print(pycuda.VERSION_TEXT)' 2>/dev/null) into $PREFIX/venv"
        CHANGED=yes
      else
        warn "building pycuda failed (needs python3-dev and a C++ compiler): TensorRT stays unused, the agent" \
             "runs on the CPU; \`face-agent doctor\` says why"
      fi
    else
      warn "pycuda not installed (no $CUDA_ROOT/bin/nvcc${WHEEL_DIR:+, no pycuda wheel in $WHEEL_DIR}): TensorRT" \
           "stays unused and the agent runs on the CPU. JetPack's CUDA toolkit: sudo apt-get install nvidia-jetpack;" \
           "then run this script again (CUDA_ROOT=... names another toolkit)"
    fi
  fi
  if has_gstreamer "$py"; then
    :  # the venv already sees an OpenCV with GStreamer (JetPack's)
  elif [ "$SYSTEM_SITE" = yes ] && has_gstreamer "$PYTHON"; then
    # pip's opencv-python-headless (a dependency of face-agent) shadows JetPack's cv2: it goes, but only
    # once JetPack's cv2 is known to import in the venv. JetPack's OpenCV 4.8 is built against numpy 1.x and
    # fails with numpy 2 ("_ARRAY_API not found"), which pip puts in a fresh venv: pin numpy<2 first.
    if ! system_cv2_in_venv "$py"; then
      say "JetPack's OpenCV does not import with the venv's numpy $("$py" -c 'import numpy; print(numpy.__version__)' \
          2>/dev/null || echo '?'): installing numpy<2 into the venv (JetPack's OpenCV is built against numpy 1.x)"
      "$py" -m pip install -q "numpy<2" || die "cannot install numpy<2 into the venv (pip's OpenCV is kept)"
      CHANGED=yes
    fi
    system_cv2_in_venv "$py" \
      || die "JetPack's OpenCV does not import in the venv even with numpy<2 (pip's OpenCV is kept; nothing removed):" \
             "check: $py -c 'import cv2'"
    "$py" -m pip uninstall -q -y opencv-python-headless opencv-python opencv-contrib-python \
      opencv-contrib-python-headless >/dev/null 2>&1 || true
    has_gstreamer "$py" || die "removed pip's OpenCV, but the venv still sees no OpenCV with GStreamer"
    say "the venv uses JetPack's OpenCV (with GStreamer) instead of pip's opencv-python-headless"
    CHANGED=yes
  elif [ "$SYSTEM_SITE" = yes ]; then
    warn "no OpenCV with GStreamer on this system: csi:// and gst: sources will not open." \
         "Install JetPack's OpenCV (sudo apt-get install nvidia-opencv), then run this script again"
  else
    warn "the venv does not see the system's packages (--system-site-packages): pip's OpenCV has no GStreamer," \
         "so csi:// and gst: sources will not open"
  fi
fi

# 4. configuration: never overwrite the operator's file
put_dir "$(r "$CONF_DIR")" 750 "${OWNER:+root:$NAME}"
render_config > "$TMP/agent.toml"
conf="$(r "$CONF_DIR/agent.toml")"
dist="$(r "$CONF_DIR/agent.toml.dist")"  # the default shipped by the last install
if [ ! -f "$conf" ]; then
  put_file "$TMP/agent.toml" "$conf" 640 || true
  put_file "$TMP/agent.toml" "$dist" 640 || true
elif cmp -s "$TMP/agent.toml" "$conf"; then
  put_file "$TMP/agent.toml" "$dist" 640 || true
elif [ -f "$dist" ] && cmp -s "$TMP/agent.toml" "$dist"; then
  : # the operator changed the config, the shipped default did not change: nothing to say
else
  if put_file "$TMP/agent.toml" "$conf.new" 640; then
    say "kept your $CONF_DIR/agent.toml; the new default is in agent.toml.new: merge what you need, then delete it"
  fi
  put_file "$TMP/agent.toml" "$dist" 640 || true
fi
if [ -n "$OWNER" ]; then
  for f in "$conf" "$conf.new" "$dist"; do
    [ -f "$f" ] && [ "$(stat -c %U:%G "$f")" != "root:$NAME" ] && chown "root:$NAME" "$f"
  done
elif [ "$(id -u)" = 0 ] && gid="$(awk -F: -v n="$NAME" '$1 == n { print $3 }' "$(r /etc/group)" 2>/dev/null)" \
     && [ -n "$gid" ]; then
  # an image that already has the group (sysusers ran in it): give it the config now, by number
  for f in "$(r "$CONF_DIR")" "$conf" "$conf.new" "$dist"; do
    if [ -e "$f" ] && [ "$(stat -c %u:%g "$f")" != "0:$gid" ]; then chown "0:$gid" "$f"; fi
  done
fi
env_file="$(r "$CONF_DIR/env")"
if [ ! -f "$env_file" ]; then
  cat > "$TMP/env" <<'EOF'
# Secrets for face-agent, read by systemd (EnvironmentFile=) and never put in agent.toml.
# One VARIABLE=value a line; this file stays readable by root only.
#FACE_AGENT_MQTT_USERNAME=agent-1
#FACE_AGENT_MQTT_PASSWORD=change-me
EOF
  put_file "$TMP/env" "$env_file" 600 || true
fi

# 5. the systemd unit (installed and enabled here; started in step 7, after the engines are built)
render_unit > "$TMP/unit"
UNIT_CHANGED=no
put_file "$TMP/unit" "$unit_path" 644 && UNIT_CHANGED=yes
if [ "$SYSTEMD" = yes ]; then
  [ "$UNIT_CHANGED" = yes ] && systemctl daemon-reload
  systemctl is-enabled --quiet "$NAME.service" 2>/dev/null || systemctl enable "$NAME.service"
else
  if [ "$(readlink "$wants_link" 2>/dev/null)" != "$UNIT_DIR/$NAME.service" ]; then
    mkdir -p "$(dirname "$wants_link")"
    ln -sfn "$UNIT_DIR/$NAME.service" "$wants_link"
    say "enabled $NAME.service offline (multi-user.target.wants symlink)"
  fi
  say "systemd is not running for $ROOT: on the target run  systemctl daemon-reload && systemctl start $NAME"
fi

# 6. optional: TensorRT engines now rather than at the first start. BEFORE the service starts (or restarts
#    after an upgrade): two processes building at once would need twice the memory of a 4 GB board. A
#    failed build is reported, not fatal: the service then starts on the CPU and says why.
if [ "$BUILD_ENGINES" = yes ]; then
  if [ "$LIVE" = yes ] && [ -x "$PREFIX/venv/bin/face-agent" ]; then
    if [ "$SYSTEMD" = yes ] && systemctl is-active --quiet "$NAME.service"; then
      systemctl stop "$NAME.service" && say "stopped $NAME while the engines are built"
      CHANGED=yes  # started again below
    fi
    say "building TensorRT engines (several minutes on a Jetson)"
    runuser -u "$NAME" -- "$PREFIX/venv/bin/face-agent" --config "$CONF_DIR/agent.toml" engines build \
      || warn "building the TensorRT engines failed (see above): the service starts on the CPU;" \
              "\`face-agent doctor --gpu\` checks the GPU path"
  else
    warn "--build-engines skipped: needs the live system (not --root) and $PREFIX/venv/bin/face-agent"
  fi
fi

# 7. start (or restart after an upgrade)
if [ "$SYSTEMD" = yes ] && [ "$START" = yes ]; then
  if systemctl is-active --quiet "$NAME.service"; then
    [ "$CHANGED" = yes ] && systemctl restart --no-block "$NAME.service" && say "restarting $NAME (upgraded)"
  else
    systemctl start --no-block "$NAME.service" && say "starting $NAME: watch it with journalctl -fu $NAME"
  fi
fi

# 8. check the installed configuration with the installed code
if [ "$LIVE" = yes ] && [ -x "$PREFIX/venv/bin/face-agent" ]; then
  runuser -u "$NAME" -- "$PREFIX/venv/bin/face-agent" --config "$CONF_DIR/agent.toml" config check \
    || warn "fix $CONF_DIR/agent.toml (see above), then: systemctl restart $NAME"
fi
say "done"
