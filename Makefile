# Two commands on a fresh machine: `make demo` (install + the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HLS4ML := hls4ml==1.3.0

.PHONY: install rtl-tools demo test bench hpp clean

install: $(VENV)/.installed rtl-tools

# yosys and Verilator (Debian packages) for the RTL equivalence and synthesis tests (docs/rtl.md).
RTL_TOOLS := yosys verilator
rtl-tools:
	@missing=""; for t in $(RTL_TOOLS); do command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	sudo=""; [ "$$(id -u)" = 0 ] || { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null && sudo="sudo -n"; }; \
	if { [ "$$(id -u)" = 0 ] || [ -n "$$sudo" ]; } && command -v apt-get >/dev/null 2>&1; then \
		echo "installing$$missing (apt-get)"; \
		$$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends$$missing >/dev/null; \
	else \
		echo "warning:$$missing not found: the RTL tests need them; install with: sudo apt-get install$$missing"; \
	fi

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(BIN)/pip install -q -c constraints.txt -e '.[test,board,remote,plot]'
	# Only for Xilinx's Apache-2.0 ap_int headers (C-simulation); none of its dependencies.
	$(BIN)/pip install -q --no-deps $(HLS4ML)
	touch $@

demo: install
	$(BIN)/lowbit demo

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/lowbit bench

hpp: install
	$(BIN)/lowbit wire --emit-hpp
	$(BIN)/lowbit boards --emit-hpp

clean:
	rm -rf $(VENV) build *.egg-info
