#!/usr/bin/env bash
# CI only, as root: run the sandbox's tests again as an unprivileged user, the way people run
# codeinterp on their laptops (user namespaces, no cgroups). `make test` calls this when CI=true.
set -euo pipefail
user=codeinterp-ci
id "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$user"
# The user must reach the interpreter and the checkout: grant traverse (x) on their ancestors.
for path in "$(readlink -f .venv/bin/python)" "$PWD"; do
  dir=$(dirname "$path")
  while [ "$dir" != / ]; do chmod o+x "$dir"; dir=$(dirname "$dir"); done
done
echo "== sandbox tests again as the unprivileged user $user"
su "$user" -s /bin/bash -c "cd '$PWD' && .venv/bin/pytest -p no:cacheprovider -q tests/sandbox tests/conformance -k sandbox"
