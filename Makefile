# Self-installing entry points: `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_ARGS ?=

.PHONY: demo test lint bench venv clean

$(STAMP): requirements.txt requirements-dev.txt setup.py Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip >/dev/null
	$(PY) -m pip install -r requirements-dev.txt
	# gym-hil only for its Franka Panda MJCF (sim/panda_env.py); --no-deps keeps gymnasium,
	# pygame and friends out (a requirements file cannot say --no-deps for one line).
	$(PY) -m pip install --no-deps gym-hil==0.1.14
	$(PY) -m pip install --no-deps -e .
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m sparse_policy_ros.ros.demo $(DEMO_ARGS)

test: $(STAMP)
	$(PY) -m pytest -q test

lint: $(STAMP)
	$(PY) -m pytest -q test/test_flake8.py test/test_pep257.py

bench: $(STAMP)
	$(PY) -m sparse_policy_ros.bench

clean:
	rm -rf $(VENV) build install log *.egg-info
