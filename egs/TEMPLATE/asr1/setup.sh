#!/usr/bin/env bash
# Make an egs/<corpus>/asr1 recipe of hybrid-encoders runnable with ESPnet's asr.sh.
#
# ESPnet's recipe machinery (asr.sh, scripts/, pyscripts/, db.sh, cmd.sh) lives in an ESPnet git checkout under
# egs2/TEMPLATE/asr1, and Kaldi's utils/ and steps/ under tools/kaldi/egs/wsj/s5; the pip package has neither. This
# script links them into the recipe directory (as ESPnet's own egs2/TEMPLATE/asr1/setup.sh does for a new recipe),
# copies cmd.sh with the local backend, and records the checkout in .espnet_root for path.sh.
#
# Usage: ./setup.sh [/path/to/espnet]      (default: $ESPNET_ROOT)
set -euo pipefail

die() { echo "setup.sh: ERROR: $*" >&2; exit 1; }

recipe_dir="$(cd "$(dirname "$0")" && pwd)"
espnet_root="${1:-${ESPNET_ROOT:-}}"
[ -n "${espnet_root}" ] || die "no ESPnet checkout given. Usage: ./setup.sh /path/to/espnet (or export ESPNET_ROOT).
  Get one with: git clone https://github.com/espnet/espnet (the pip package lacks egs2/ and Kaldi's scripts)."
[ -d "${espnet_root}" ] || die "ESPnet checkout ${espnet_root} does not exist"
espnet_root="$(cd "${espnet_root}" && pwd)"
template="${espnet_root}/egs2/TEMPLATE/asr1"
for name in asr.sh db.sh cmd.sh scripts pyscripts; do
    [ -e "${template}/${name}" ] || die "${espnet_root} does not have the layout of an ESPnet checkout:
  ${template}/${name} is missing (expected egs2/TEMPLATE/asr1/{asr.sh,db.sh,cmd.sh,scripts,pyscripts})"
done
kaldi="${espnet_root}/tools/kaldi/egs/wsj/s5"
for name in utils steps; do
    [ -d "${kaldi}/${name}" ] || die "Kaldi's scripts are missing: ${kaldi}/${name} does not exist.
  Install them (scripts only, no compilation needed for feats_type=raw) with:
    git clone --depth 1 https://github.com/kaldi-asr/kaldi ${espnet_root}/tools/kaldi"
done

for name in asr.sh db.sh scripts pyscripts; do
    ln -sfn "${template}/${name}" "${recipe_dir}/${name}"
done
for name in utils steps; do
    ln -sfn "${kaldi}/${name}" "${recipe_dir}/${name}"
done
# cmd.sh is a copy, to be edited: the template's default backend is a cluster scheduler, here the local machine.
if [ ! -e "${recipe_dir}/cmd.sh" ]; then
    sed 's/^cmd_backend=.*/cmd_backend='"'"'local'"'"'/' "${template}/cmd.sh" > "${recipe_dir}/cmd.sh"
fi
echo "${espnet_root}" > "${recipe_dir}/.espnet_root"
echo "setup.sh: linked asr.sh db.sh scripts pyscripts utils steps from ${espnet_root}; cmd.sh (backend local) copied."
echo "setup.sh: now set the corpus directory in db.sh, then run ./run.sh"
