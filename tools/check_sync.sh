#!/usr/bin/env bash
# Fails when notebooks are not clean (nbdev_clean would change them) or the library is out of
# sync with the notebooks (nbdev_export would change it). Compares content hashes, so it works on
# a dirty work tree as well as on a fresh clone.
set -euo pipefail
snap() { find nbs llava_lora_nb -type f \( -name '*.ipynb' -o -name '*.py' \) -not -path '*/.ipynb_checkpoints/*' -print0 | sort -z | xargs -0 sha256sum; }
before=$(snap)
nbdev_clean
nbdev_export
after=$(snap)
if [ "$before" != "$after" ]; then
  echo "FAIL: nbdev_clean / nbdev_export changed these files; run them and commit the result:" >&2
  diff <(echo "$before") <(echo "$after") | grep '^>' | awk '{print "  " $3}' >&2
  exit 1
fi
echo "notebooks clean, library in sync"
