# textback — `make demo` shows a missed call texted back on a lab Asterisk;
# `make test` runs the whole suite. Both install what they need themselves:
# a virtualenv in .venv, SIPp (Debian's sip-tester) and the lab Asterisk 22,
# which is cached outside the repo (~/.cache/textback) and fetched once.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
APT    := DEBIAN_FRONTEND=noninteractive apt-get

.PHONY: all venv sipp lab postgres gammu chromium mmdebstrap faketime test test-clock lint demo chaos bench bench-agi bench-burst bench-modem bench-web wheel deb clean

all: test

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || $(MAKE) --no-print-directory _apt PKG=python3-venv
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	@touch $@

venv: $(STAMP)

# install a Debian package as root, or say the exact command to run
_apt:
	@if [ "$$(id -u)" = 0 ]; then \
	  $(APT) update -qq && $(APT) install -y -qq $(PKG) >/dev/null; \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then \
	  sudo $(APT) update -qq && sudo $(APT) install -y -qq $(PKG) >/dev/null; \
	else \
	  echo "missing system package $(PKG): run  sudo apt-get update && sudo apt-get install $(PKG)"; exit 1; \
	fi

sipp:
	@command -v sipp >/dev/null || $(MAKE) --no-print-directory _apt PKG=sip-tester

lab:
	@agent/lab/fetch-asterisk >/dev/null

# a PostgreSQL server for the tests that run on both databases (no service is
# started: the tests run a private cluster of their own)
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || $(MAKE) --no-print-directory _apt PKG=postgresql

# gammu checks that the tests' emulated GSM modem passes for a real one
gammu:
	@command -v gammu >/dev/null || $(MAKE) --no-print-directory _apt PKG=gammu

# Debian's Chromium for the browser tests (Playwright drives it; no browser is downloaded)
chromium:
	@test -x /usr/bin/chromium || $(MAKE) --no-print-directory _apt PKG=chromium

# mmdebstrap makes the throw-away Debian 12 root the package tests install the .deb in
mmdebstrap:
	@command -v mmdebstrap >/dev/null || $(MAKE) --no-print-directory _apt PKG=mmdebstrap

# libfaketime moves the clock for the tests that depend on the date or time of day
faketime:
	@command -v faketime >/dev/null || $(MAKE) --no-print-directory _apt PKG=faketime

lint: venv
	$(BIN)/ruff check agent web tests bench bench/latency bench/agi bench/modem bench/web bench/burst bench/reference_agent.py bench/startup bench/chaos

test: venv sipp lab postgres gammu chromium mmdebstrap faketime lint
	$(BIN)/pytest -q
	@$(MAKE) --no-print-directory test-clock

# The suite passes at any hour: the tests marked `clock` run again with the clock moved
# (it keeps running from there) to 00:30 UTC on a Monday, ten seconds before a new year,
# and the minute Chicago's clocks spring forward (08:00 UTC: 02:00 CST is 03:00 CDT) and
# fall back (07:00 UTC: 01:00 CDT is 01:00 CST again); after the fixed dates the tests
# use as "the past". The machine's own zone is Chicago's too, so its day is not UTC's
# (the instant goes to libfaketime in seconds: a date it would read in that zone).
# SQLite only: no database server runs under the fake clock. FAKETIME_DONT_RESET: a
# process the tests start sees the same clock, not the start again. Not the tests marked
# `realtime`: a wait with a timeout (a condition, a lock) never ends under the moved clock.
CLOCK_AT := "2026-12-14 00:30:00" "2026-12-31 23:59:50" "2027-03-14 08:00:30" \
            "2027-11-07 07:00:30"
# The four instants run side by side (each in its own temporary directory; the output of
# each is shown once it is done): one after the other they took six of the suite's minutes.
test-clock: venv faketime
	@runs=$$(mktemp -d); n=0; \
	for at in $(CLOCK_AT); do \
	  n=$$((n + 1)); \
	  ( TZ=America/Chicago FAKETIME_FMT=%s FAKETIME_DONT_RESET=1 \
	    faketime -m -f "@$$(date -u -d "$$at" +%s)" $(BIN)/pytest -q -p no:cacheprovider \
	    --basetemp="$$runs/tmp$$n" -m "clock and not lab and not browser and not realtime" \
	    -k "not postgresql" > "$$runs/$$n.log" 2>&1; echo $$? > "$$runs/$$n.rc" ) & \
	done; \
	wait; failed=0; n=0; \
	for at in $(CLOCK_AT); do \
	  n=$$((n + 1)); echo "clock tests at $$at UTC"; \
	  if [ "$$(cat "$$runs/$$n.rc")" = 0 ]; then tail -n 2 "$$runs/$$n.log"; \
	  else cat "$$runs/$$n.log"; failed=1; fi; \
	done; \
	rm -rf "$$runs"; exit $$failed

# make demo MODEM=emulated: the text leaves through the GSM modem path (an emulated
# modem on a pseudo-terminal) instead of the SIP trunk
demo: venv sipp lab
	$(BIN)/textback demo $(if $(filter emulated,$(MODEM)),--modem emulated)

bench: venv sipp lab
	$(BIN)/python bench/latency

# the routing AGI: decision time and call set-up with/without it (200 routed calls)
bench-agi: venv sipp lab
	$(BIN)/python bench/agi

# 1,000 missed calls at 17/s and at 50/s: hangup → SIP MESSAGE p50/p99, agent CPU per
# call and RSS, against a minimal reference that stores nothing (bench/reference_agent.py)
bench-burst: venv sipp lab
	$(BIN)/python bench/burst

# the chaos suite: a burst of missed calls with a fault in its middle (agent kill -9,
# Asterisk restarted or frozen 20 s, the database locked 10 s and 45 s, SIGTERM with a
# rate-limited backlog, hostile caller IDs and texts): calls, texted, lost, duplicates,
# recovery time; fails on any lost or duplicated text. `make test` runs reduced versions
chaos: venv sipp lab
	$(BIN)/python bench/chaos $(ARGS)

# the GSM modem path: throughput, rate limit, time in queue, RSS; driver overhead per part
bench-modem: venv
	$(BIN)/python bench/modem

# the dashboard and call log with 1,000,000 calls and 2,000,000 messages in SQLite
bench-web: venv
	$(BIN)/python bench/web

# cold start of `textback settings get/list/set` and the routing AGI (median, p90, ratio
# to the bare interpreter); add ARGS=--importtime to see which imports cost most
.PHONY: bench-startup
bench-startup: venv
	$(BIN)/python bench/startup $(ARGS)

# a wheel of textback in dist/ (the lab and `textback demo` included)
wheel: venv
	rm -rf build dist/textback-*.whl
	$(BIN)/pip wheel -q --no-deps -w dist .

# dist/textback_<version>_<arch>.deb for Debian 12 / Raspberry Pi OS (bookworm):
# make deb ARCH=arm64 for a Raspberry Pi; DEB_VERSION overrides pyproject's version
ARCH        ?= $(shell dpkg --print-architecture)
DEB_VERSION ?=
deb: venv
	deb/build --arch $(ARCH) $(if $(DEB_VERSION),--version $(DEB_VERSION)) --out dist

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
