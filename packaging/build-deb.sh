#!/usr/bin/env bash
# Builds the Debian package target/debian/sluice_VERSION-1_ARCH.deb with
# cargo-deb (metadata: [package.metadata.deb] in Cargo.toml): the release
# binaries, then the files generated from their command lines (man pages,
# completions, the sample /etc/sluice/sluice.toml) into target/package/.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-deb >/dev/null 2>&1; then
    cargo install cargo-deb --locked --quiet
fi
cargo build --release --workspace --locked --quiet

out=target/package
rm -rf "$out"
mkdir -p "$out/man" "$out/completions"
target/release/sluice generate man "$out/man" >/dev/null
target/release/sluice-loadgen --generate-docs "$out/loadgen"
mv "$out"/loadgen/*.1 "$out/man/"
mv "$out"/loadgen/* "$out/completions/"
rmdir "$out/loadgen"
target/release/sluice generate completions "$out/completions" >/dev/null
target/release/sluice generate config --spool /var/spool/sluice >"$out/sluice.toml"
gzip -9n "$out"/man/*

cargo deb --no-build --strip -p sluice --quiet "$@"
ls target/debian/sluice_*.deb
