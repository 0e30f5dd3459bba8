# Two commands set everything up on a fresh machine:
#   make run    - install the agent's runtime into .venv (nothing for tests) and run it (face-agent run) with ./agent.toml
#   make test   - add the test extras (pytest, ruff, matplotlib, the web console and Playwright, the mtcnn weights)
#                 to .venv, the Debian packages the tests need if missing (mosquitto, systemd-analyze, chromium,
#                 GStreamer's RTSP server for the system python3), and run the test suite
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
ARGS ?=
# a real RTSP camera for the tests (tests/rtsp_server.py, run with the system python3)
RTSP_PACKAGES := python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-tools gstreamer1.0-plugins-good \
	gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav

.PHONY: run test install install-runtime system-deps lint bench clean

# the runtime: what `face-agent run` needs, and nothing else
$(VENV)/.runtime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -e .
	touch $@

# the development extras on top: tests, lint, plots
$(VENV)/.installed: $(VENV)/.runtime
	$(PY) -m pip install -q -e '.[test]'
	# original MTCNN weights (.npy only) for the ONNX conversion tests; --no-deps: no Keras/TensorFlow
	$(PY) -m pip install -q --no-deps mtcnn==0.1.1
	touch $@

install-runtime: $(VENV)/.runtime

# a development venv (runtime + test extras)
install: $(VENV)/.installed

system-deps:
	@command -v mosquitto >/dev/null 2>&1 || ls /usr/sbin/mosquitto >/dev/null 2>&1 || { \
	  echo "installing mosquitto (Debian package) for the tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; }
	@command -v systemd-analyze >/dev/null 2>&1 || { \
	  echo "installing systemd (Debian package, for systemd-analyze verify) for the tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null; }
	@test -x /usr/bin/chromium || { \
	  echo "installing chromium (Debian package, the web console's browser tests drive it with Playwright)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@/usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer', '1.0')" 2>/dev/null \
	  && gst-inspect-1.0 --exists x264enc && gst-inspect-1.0 --exists avdec_h264 || { \
	  echo "installing GStreamer's RTSP server (Debian packages, tests/test_rtsp.py's camera)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(RTSP_PACKAGES) >/dev/null; }

run: install-runtime
	$(VENV)/bin/face-agent run $(ARGS)

test: install system-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q -p no:cacheprovider $(ARGS)

lint: install
	$(VENV)/bin/ruff check .

bench: install
	# the baseline: face_recognition without its dlib source build (dlib-bin is already installed)
	$(PY) -m pip install -q --no-deps face-recognition==1.3.0
	$(PY) bench/bench_video.py
	$(PY) bench/bench_stages.py
	$(PY) bench/bench_embed.py

clean:
	rm -rf $(VENV) build *.egg-info
