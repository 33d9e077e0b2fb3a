# triggerd — build, install, run, test.
PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
UNITDIR ?= /etc/systemd/system
DOCDIR  ?= $(PREFIX)/share/doc/triggerd
CARGO   ?= cargo
BINS     = triggerd triggerctl triggerd-broker

.PHONY: deps build install uninstall run test lint deb bench

MANDIR  ?= $(PREFIX)/share/man
BASHDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHDIR  ?= $(PREFIX)/share/zsh/vendor-completions
FISHDIR ?= $(PREFIX)/share/fish/vendor_completions.d

# The Debian packages building and testing need (only the missing ones; needs root then).
deps:
	scripts/deps

build: deps
	$(CARGO) build --release --locked -p triggerd -p triggerd-broker

# Binaries and the unit always; the config only when there is none (it is the admin's).
install: build
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DOCDIR)
	for b in $(BINS); do install -m 0755 target/release/$$b $(DESTDIR)$(BINDIR)/$$b; done
	install -m 0644 systemd/triggerd.service systemd/triggerd-broker.service $(DESTDIR)$(UNITDIR)/
	install -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md
	test -e $(DESTDIR)/etc/triggerd.conf || install -D -m 0644 etc/triggerd.conf $(DESTDIR)/etc/triggerd.conf
	test -e $(DESTDIR)/etc/triggerd/broker.toml || install -D -m 0644 etc/broker.toml $(DESTDIR)/etc/triggerd/broker.toml
	install -d $(DESTDIR)$(PREFIX)/lib/triggerd/plugins
	install -m 0755 etc/plugins/* $(DESTDIR)$(PREFIX)/lib/triggerd/plugins/
	install -d $(DESTDIR)$(PREFIX)/lib/triggerd/providers
	install -m 0755 etc/providers/* $(DESTDIR)$(PREFIX)/lib/triggerd/providers/
	install -d $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(BASHDIR) $(DESTDIR)$(ZSHDIR) $(DESTDIR)$(FISHDIR)
	for b in $(BINS); do \
	  target/release/$$b --generate man | gzip -9n > $(DESTDIR)$(MANDIR)/man8/$$b.8.gz; \
	  target/release/$$b --generate bash > $(DESTDIR)$(BASHDIR)/$$b; \
	  target/release/$$b --generate zsh > $(DESTDIR)$(ZSHDIR)/_$$b; \
	  target/release/$$b --generate fish > $(DESTDIR)$(FISHDIR)/$$b.fish; \
	done
	target/release/triggerd --generate conf-man | gzip -9n > $(DESTDIR)$(MANDIR)/man5/triggerd.conf.5.gz
	install -m 0755 scripts/broker-user $(DESTDIR)$(PREFIX)/lib/triggerd/broker-user
	if [ -z "$(DESTDIR)" ]; then scripts/broker-user $(BINDIR)/triggerd-broker; systemctl daemon-reload 2>/dev/null || true; fi

uninstall:
	for b in $(BINS); do rm -f $(DESTDIR)$(BINDIR)/$$b; done
	rm -f $(DESTDIR)$(UNITDIR)/triggerd.service $(DESTDIR)$(UNITDIR)/triggerd-broker.service
	rm -rf $(DESTDIR)$(PREFIX)/lib/triggerd
	rm -rf $(DESTDIR)$(DOCDIR)
	for b in $(BINS); do rm -f $(DESTDIR)$(MANDIR)/man8/$$b.8.gz $(DESTDIR)$(BASHDIR)/$$b $(DESTDIR)$(ZSHDIR)/_$$b $(DESTDIR)$(FISHDIR)/$$b.fish; done
	rm -f $(DESTDIR)$(MANDIR)/man5/triggerd.conf.5.gz

# Foreground, on the shipped default config (needs root: fanotify).
run: deps
	$(CARGO) run --release --locked -p triggerd --bin triggerd -- --config etc/triggerd.conf

test: deps
	$(CARGO) test --workspace --locked

# Formatting and clippy, warnings as errors (CI runs it after the tests).
lint:
	rustup component add clippy rustfmt 2>/dev/null || true
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# The Debian package (target/debian/triggerd_VERSION_ARCH.deb): see packaging/debian/.
deb: build
	packaging/debian/build

# Every benchmark, each printing its ratio against a baseline measured in the same run.
bench: deps
	benches/run-all
