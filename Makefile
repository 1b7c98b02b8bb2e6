# apex.ops — one entry point for the lab, the demo and the tests.
PYTHON ?= python3
LAB ?= $(PYTHON) tests/lab/lab.py
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: deps lab-up lab-down lab-status demo test test-unit test-integration sanity lint molecule bench build ee-tarball ee-context clean

deps:            ## install Python and Debian packages the lab and tests need
	bash tests/lab/install-deps.sh

lab-up:          ## start the lab (idempotent); installs what is missing first
	$(LAB) up

lab-down:        ## stop the lab; leaves no process behind
	$(LAB) down

lab-status:
	$(LAB) status

demo: deps lab-up     ## a newcomer's first command: lab up, then the daily health check
	. .lab/env && ansible-playbook playbooks/health_check.yml

test: deps lab-up     ## the whole suite, as CI runs it
	bash tests/run-all.sh

test-unit:
	$(PYTHON) -m pytest -q tests/unit

test-integration: lab-up
	$(PYTHON) -m pytest -q tests/integration

sanity:
	bash tests/sanity.sh

lint:
	ansible-lint --profile production

molecule: lab-up
	bash tests/molecule.sh

bench: lab-up
	bash bench/run-all.sh

build:
	ansible-galaxy collection build --force --output-path .lab/dist

ee-tarball:      ## the collection tarball execution-environment.yml copies into the EE build context
	rm -rf build/ee
	ansible-galaxy collection build --force --output-path build/ee .
	mv build/ee/apex-ops-*.tar.gz build/ee/apex-ops.tar.gz

ee-context: ee-tarball   ## the EE build context in build/ee/context (then: podman build -t apex-ee build/ee/context)
	ansible-builder create -f execution-environment.yml -c build/ee/context
