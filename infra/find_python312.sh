#!/usr/bin/env bash
# Print a command that runs Python 3.12, trying in turn: python3.12 on PATH, the pyenv shim
# with PYENV_VERSION set, and pyenv's own install folder. Exit 1 with a message if none works.
set -u
ok() { "$@" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' >/dev/null 2>&1; }
if ok python3.12; then echo python3.12; exit 0; fi
for v in 3.12.1 $(pyenv versions --bare 2>/dev/null | grep '^3\.12' || true); do
  if PYENV_VERSION=$v ok python3.12; then echo "env PYENV_VERSION=$v python3.12"; exit 0; fi
  p="$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")/versions/$v/bin/python3.12"
  if ok "$p"; then echo "$p"; exit 0; fi
done
echo "error: Python 3.12 not found (tried python3.12, PYENV_VERSION=3.12.x python3.12, \$(pyenv root)/versions/3.12.x)." >&2
echo "Install it (e.g. 'pyenv install 3.12' or your OS package) and run make again." >&2
exit 1
