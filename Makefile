# Convenience targets; ./run is the entry point (it needs only bash on a fresh Debian 12).
.PHONY: demo test bench setup
demo: ; ./run demo
test: ; ./run test
bench: ; ./run bench
setup: ; ./run setup
