# triggerd — build, install, run, test.
PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
UNITDIR ?= /etc/systemd/system
DOCDIR  ?= $(PREFIX)/share/doc/triggerd
CARGO   ?= cargo
BINS     = triggerd triggerctl triggerd-broker

.PHONY: build install uninstall run test

build:
	$(CARGO) build --release --locked -p triggerd -p triggerd-remote

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
	-systemctl daemon-reload 2>/dev/null

uninstall:
	for b in $(BINS); do rm -f $(DESTDIR)$(BINDIR)/$$b; done
	rm -f $(DESTDIR)$(UNITDIR)/triggerd.service $(DESTDIR)$(UNITDIR)/triggerd-broker.service
	rm -rf $(DESTDIR)$(PREFIX)/lib/triggerd
	rm -rf $(DESTDIR)$(DOCDIR)

# Foreground, on the shipped default config (needs root: fanotify).
run:
	$(CARGO) run --release --locked -p triggerd --bin triggerd -- --config etc/triggerd.conf

test:
	$(CARGO) test --workspace --locked
