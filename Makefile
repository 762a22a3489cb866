# Two commands do all the set-up: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-tools clean

install: $(STAMP)

# constraints.txt pins the exact set verified together in a fresh venv (torch's CPU build among them).
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[builtin,test,openvino,browser,postgres,tracking]'
	touch $(STAMP)

demo: install
	$(BIN)/edgepress run recipes/bbc-news.yaml

# The suite runs in TEST_WORKERS pytest-xdist processes (tests of one file stay in one process).
# tests/conftest.py sets OMP_NUM_THREADS=1 for them and every process they start: without it two
# processes' OpenMP pools fought over the cores (a two-worker search test took 82-126 s instead of
# 21 s). Measured on a 2-core VM (2026-12-05): 2 workers with it 795 s, 1 process without it 1507 s.
# TEST_WORKERS=0: one process;
# TEST_WORKERS=auto: one per core.
TEST_WORKERS ?= 2

test: install test-tools
	$(BIN)/python -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadscope)

# What the ssh, emulated-arm64, WordNet, browser and PostgreSQL tests need from Debian (file:package
# pairs; postgresql 15 is Debian 12's).
# Each missing one is installed when this is root on a machine with apt (CI is); elsewhere those
# tests skip and say which package to add. The browser tests then install their npm packages
# themselves (npm ci into .pytest_cache).
TEST_TOOLS := /usr/sbin/sshd:openssh-server /usr/bin/qemu-aarch64-static:qemu-user-static \
	/usr/share/wordnet/data.noun:wordnet-base /usr/bin/chromium:chromium /usr/bin/npm:npm \
	/usr/lib/postgresql/15/bin/initdb:postgresql

test-tools:
	@missing=""; for pair in $(TEST_TOOLS); do [ -e "$${pair%%:*}" ] || missing="$$missing $${pair#*:}"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing$$missing for the ssh, emulated-arm64, WordNet, browser and PostgreSQL tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else \
		echo "note: not root with apt-get: the tests that need$$missing will skip"; \
	fi

clean:
	rm -rf $(VENV) runs .pytest_cache
