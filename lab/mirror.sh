#!/bin/sh
# Prints the Debian mirror URI this machine's apt is configured with (never hard-coded in the repo).
set -eu
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
{
  # deb822 sources: pair each URIs line with the Suites line of the same stanza.
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v c="$codename" '
      /^URIs:/   { uri=$2 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == c) print uri }
      /^$/       { uri="" }' "$f"
  done
  # one-line sources
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk -v c="$codename" '$1 == "deb" { u=$2; if (u ~ /^\[/) u=$3; for (i = 2; i <= NF; i++) if ($i == c) { print u; break } }' "$f"
  done
} | grep -v -- '-security' | head -n 1
